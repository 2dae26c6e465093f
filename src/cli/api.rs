//! What the subcommands that talk to the aggregator's HTTP API share: where
//! the API is and how to print its answers, one request with its error
//! reporting, and clipping of table cells.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

/// The options of every subcommand that talks to the aggregator's API.
#[derive(Args, Debug)]
pub struct ApiArgs {
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Aggregator HTTP API.
    #[arg(
        long,
        env = "MECHA_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
}

impl ApiArgs {
    /// The URL of `path` (`/api/v1/...`) on the server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.trim_end_matches('/'))
    }
}

/// Sends `request` (to `url`) and returns the JSON answer. An answer other
/// than 2xx is printed as `mecha <command>: <status>: <reason>` and becomes
/// exit code 2.
pub fn call(
    command: &str,
    url: &str,
    request: reqwest::RequestBuilder,
) -> anyhow::Result<Result<Value, ExitCode>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, body) = rt.block_on(async {
        let resp = request
            .send()
            .await
            .with_context(|| format!("cannot reach {url} (is mecha running? see --server)"))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .with_context(|| format!("{url}: the answer is not JSON"))?;
        anyhow::Ok((status, body))
    })?;
    if !status.is_success() {
        let reason = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        eprintln!("mecha {command}: {status}: {reason}");
        return Ok(Err(ExitCode::from(2)));
    }
    Ok(Ok(body))
}

/// At most `max` characters, `…` marking a cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
