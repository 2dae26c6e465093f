//! `mecha issues`: list the aggregator's issues as a table (or the API's
//! JSON), and `mecha issues resolve|ignore|reopen ID` to change one.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::api::{self, ApiArgs, clip};

/// Arguments of `mecha issues`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct IssuesArgs {
    #[command(subcommand)]
    action: Option<Action>,
    /// Only this Sentry project's issues.
    #[arg(long)]
    project: Option<u64>,
    /// unresolved, resolved, ignored or all.
    #[arg(long, default_value = "unresolved")]
    status: String,
    /// Only issues whose title or culprit contains this.
    #[arg(long, short = 'q')]
    query: Option<String>,
    /// Order: last_seen, first_seen, count or users (largest first).
    #[arg(long, default_value = "last_seen")]
    sort: String,
    /// Most issues to print.
    #[arg(long, short = 'n', default_value_t = 50)]
    limit: usize,
    /// Continue after a previous page (its `next`).
    #[arg(long)]
    cursor: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

/// A change to one issue.
#[derive(Subcommand, Debug)]
enum Action {
    /// Mark an issue resolved (a newer event reopens it as a regression).
    Resolve {
        /// The issue id.
        id: u64,
    },
    /// Mute an issue: it stays ignored whatever arrives.
    Ignore {
        /// The issue id.
        id: u64,
    },
    /// Mark an issue unresolved again.
    Reopen {
        /// The issue id.
        id: u64,
    },
}

pub fn run(a: IssuesArgs) -> anyhow::Result<ExitCode> {
    let base = a.api.url("/api/v1/issues");
    let (url, request) = match a.action {
        None => {
            let mut params = vec![
                ("status", a.status.clone()),
                ("sort", a.sort.clone()),
                ("limit", a.limit.to_string()),
            ];
            let optional = [
                ("project", a.project.map(|p| p.to_string())),
                ("q", a.query.clone()),
                ("cursor", a.cursor.clone()),
            ];
            params.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
            let url = base.clone();
            let request = reqwest::Client::new().get(&base).query(&params);
            (url, request)
        }
        Some(action) => {
            let (id, status) = match action {
                Action::Resolve { id } => (id, "resolved"),
                Action::Ignore { id } => (id, "ignored"),
                Action::Reopen { id } => (id, "unresolved"),
            };
            let url = format!("{base}/{id}");
            let request = reqwest::Client::new()
                .put(&url)
                .json(&json!({ "status": status }));
            (url, request)
        }
    };
    let body = match api::call("issues", &url, request)? {
        Ok(body) => body,
        Err(code) => return Ok(code),
    };
    if a.api.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else if body.get("issues").is_some() {
        print_table(&body);
    } else {
        print_changed(&body);
    }
    Ok(ExitCode::SUCCESS)
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// `unresolved`, or `unresolved (regressed)`.
fn status_of(issue: &Value) -> String {
    let regressed = issue.get("regressed").and_then(Value::as_bool) == Some(true);
    let status = text(issue, "status");
    if regressed {
        format!("{status} (regressed)")
    } else {
        status
    }
}

fn print_table(body: &Value) {
    let issues = body.get("issues").and_then(Value::as_array);
    println!(
        "{:>6}  {:<22}  {:<7}  {:>7}  {:>5}  {:<20}  TITLE",
        "ID", "STATUS", "LEVEL", "EVENTS", "USERS", "LAST SEEN"
    );
    for i in issues.into_iter().flatten() {
        let last_seen: String = text(i, "last_seen").chars().take(19).collect();
        let culprit = text(i, "culprit");
        let title = clip(&text(i, "title"), 100);
        let title = if culprit.is_empty() {
            title
        } else {
            format!("{title}  ({})", clip(&culprit, 60))
        };
        println!(
            "{:>6}  {:<22}  {:<7}  {:>7}  {:>5}  {:<20}  {}",
            text(i, "id"),
            status_of(i),
            text(i, "level"),
            text(i, "count"),
            text(i, "users"),
            last_seen.replace('T', " "),
            title
        );
    }
    let shown = issues.map(Vec::len).unwrap_or(0);
    match body.get("next").and_then(Value::as_str) {
        Some(next) => println!("{shown} issue(s) shown; more with --cursor {next}"),
        None => println!("{shown} issue(s)"),
    }
}

fn print_changed(issue: &Value) {
    println!(
        "issue {} is {}: {}",
        text(issue, "id"),
        status_of(issue),
        text(issue, "title")
    );
}
