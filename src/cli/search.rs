//! `mecha search QUERY`: query the aggregator's search API and print the hits
//! newest first, as a table or as the API's JSON.

use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::api::{self, ApiArgs, clip};

/// Arguments of `mecha search`.
#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Query: words, `field:value`, `AND`/`OR`/`NOT`, `"phrases"`; empty for all.
    #[arg(default_value = "")]
    query: String,
    /// How far back: `15m`, `1h`, `7d`. Default 1h.
    #[arg(long, default_value = "1h")]
    since: String,
    /// Start of the range (RFC 3339 or epoch millis); overrides --since.
    #[arg(long)]
    from: Option<String>,
    /// End of the range (RFC 3339 or epoch millis). Default now.
    #[arg(long)]
    to: Option<String>,
    /// Most hits to print.
    #[arg(long, short = 'n', default_value_t = 50)]
    limit: usize,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(a: SearchArgs) -> anyhow::Result<ExitCode> {
    mecha_config::Duration::parse(&a.since).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let from = a.from.clone().unwrap_or_else(|| format!("now-{}", a.since));
    let mut params = vec![
        ("q", a.query.clone()),
        ("from", from),
        ("limit", a.limit.to_string()),
    ];
    if let Some(to) = &a.to {
        params.push(("to", to.clone()));
    }
    let url = a.api.url("/api/v1/logs/search");
    let request = reqwest::Client::new().get(&url).query(&params);
    let body = match api::call("search", &url, request)? {
        Ok(body) => body,
        Err(code) => return Ok(code),
    };
    if a.api.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&body);
    Ok(ExitCode::SUCCESS)
}

fn print_table(body: &Value) {
    let hits = body.get("hits").and_then(Value::as_array);
    let total = body.get("total").and_then(Value::as_u64).unwrap_or(0);
    println!("{:<30}  {:<5}  {:<32}  MESSAGE", "TIME", "LEVEL", "SOURCE");
    for h in hits.into_iter().flatten() {
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
        let res = h.get("resource");
        let source = match (
            s(res.and_then(|r| r.get("k8s.namespace.name"))),
            s(res.and_then(|r| r.get("k8s.pod.name"))),
        ) {
            (ns, pod) if !ns.is_empty() => format!("{ns}/{pod}"),
            _ => s(h.get("attributes").and_then(|a| a.get("log.file.path"))),
        };
        let body = s(h.get("body"));
        let first_line = body.lines().next().unwrap_or("");
        let more = if body.contains('\n') { " …" } else { "" };
        let level = match s(h.get("severity")).as_str() {
            "" | "unspecified" => "-".to_string(),
            l => l.to_string(),
        };
        println!(
            "{:<30}  {:<5}  {:<32}  {}{}",
            s(h.get("timestamp")),
            level,
            clip(&source, 32),
            clip(first_line, 160),
            more
        );
    }
    let shown = hits.map(Vec::len).unwrap_or(0);
    println!("{shown} of {total} match(es), newest first");
}
