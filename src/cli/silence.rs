//! `mecha silence add|list|expire` and `mecha alerts`: silences and active
//! alerts through the aggregator's HTTP API, as `amtool silence` and
//! `amtool alert` do for Alertmanager.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::api::{self, ApiArgs, clip};

/// Arguments of `mecha silence`.
#[derive(Args, Debug)]
pub struct SilenceArgs {
    #[command(subcommand)]
    action: SilenceAction,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Subcommand, Debug)]
enum SilenceAction {
    /// Silence alerts matching every matcher:
    /// `mecha silence add 'alertname=X' 'namespace=~"shop.*"' --duration 2h --comment deploy`.
    Add {
        /// Matchers: `name=value`, `name!=value`, `name=~regex`, `name!~regex`
        /// (values may be double-quoted).
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long the silence lasts from now.
        #[arg(long, short, default_value = "1h")]
        duration: String,
        /// Why (shown in lists).
        #[arg(long, short)]
        comment: String,
        /// Who; default `$USER`.
        #[arg(long, short)]
        author: Option<String>,
    },
    /// List pending and active silences (`--all`: expired ones too).
    List {
        /// Include expired silences.
        #[arg(long)]
        all: bool,
    },
    /// Expire silences now: their alerts are notified at the next flush.
    Expire {
        /// Silence ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// Arguments of `mecha alerts`.
#[derive(Args, Debug)]
pub struct AlertsArgs {
    /// Only alerts matching every matcher (`alertname=X`, `severity=~"crit|page"`).
    matchers: Vec<String>,
    /// Leave out silenced and inhibited alerts.
    #[arg(long)]
    active: bool,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(a: SilenceArgs) -> anyhow::Result<ExitCode> {
    let base = a.api.url("/api/v1/silences");
    let client = reqwest::Client::new();
    match a.action {
        SilenceAction::Add {
            matchers,
            duration,
            comment,
            author,
        } => {
            let mut parsed = Vec::new();
            for m in &matchers {
                let m = mecha_config::Matcher::parse(m)
                    .map_err(|e| anyhow::anyhow!("matcher {m:?}: {e}"))?;
                parsed.push(json!({
                    "name": m.name,
                    "value": m.value,
                    "isRegex": m.is_regex(),
                    "isEqual": m.is_equal(),
                }));
            }
            let d = mecha_config::Duration::parse(&duration)
                .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
            let d = chrono::TimeDelta::from_std(d.0)
                .map_err(|_| anyhow::anyhow!("--duration: {duration:?} is too long"))?;
            let now = chrono::Utc::now();
            let author = author
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "mecha".to_string());
            let body = json!({
                "matchers": parsed,
                "startsAt": now.to_rfc3339(),
                "endsAt": (now + d).to_rfc3339(),
                "createdBy": author,
                "comment": comment,
            });
            let request = client.post(&base).json(&body);
            let v = match api::call("silence", &base, request)? {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            if a.api.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{}", text(&v, "silenceID"));
            }
        }
        SilenceAction::List { all } => {
            let v = match api::call("silence", &base, client.get(&base))? {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            let shown: Vec<&Value> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| all || s["status"]["state"] != "expired")
                .collect();
            if a.api.json {
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else {
                print_silences(&shown);
            }
        }
        SilenceAction::Expire { ids } => {
            for id in ids {
                let url = format!("{base}/{id}");
                let v = match api::call("silence", &url, client.delete(&url))? {
                    Ok(v) => v,
                    Err(code) => return Ok(code),
                };
                if a.api.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!("silence {} expired", text(&v, "id"));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_alerts(a: AlertsArgs) -> anyhow::Result<ExitCode> {
    let url = a.api.url("/api/v1/alerts");
    let mut params: Vec<(&str, String)> = Vec::new();
    for m in &a.matchers {
        mecha_config::Matcher::parse(m).map_err(|e| anyhow::anyhow!("matcher {m:?}: {e}"))?;
        params.push(("filter", m.clone()));
    }
    if a.active {
        params.push(("silenced", "false".into()));
        params.push(("inhibited", "false".into()));
    }
    let request = reqwest::Client::new().get(&url).query(&params);
    let v = match api::call("alerts", &url, request)? {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    if a.api.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let alerts = v.as_array().cloned().unwrap_or_default();
    println!(
        "{:<24}  {:<10}  {:<20}  {:<40}  SUMMARY",
        "ALERTNAME", "STATE", "STARTS", "LABELS"
    );
    for al in &alerts {
        let labels = al["labels"].as_object();
        let name = labels
            .and_then(|l| l.get("alertname"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let others: Vec<String> = labels
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "alertname")
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        let starts: String = text(al, "startsAt").chars().take(19).collect();
        println!(
            "{:<24}  {:<10}  {:<20}  {:<40}  {}",
            clip(name, 24),
            text(&al["status"], "state"),
            starts.replace('T', " "),
            clip(&others.join(" "), 40),
            clip(&text(&al["annotations"], "summary"), 80)
        );
    }
    println!("{} alert(s)", alerts.len());
    Ok(ExitCode::SUCCESS)
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn print_silences(silences: &[&Value]) {
    println!(
        "{:<36}  {:<8}  {:<20}  {:<12}  {:<40}  COMMENT",
        "ID", "STATE", "ENDS", "CREATED BY", "MATCHERS"
    );
    for s in silences {
        let matchers: Vec<String> = s["matchers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let op = match (m["isRegex"].as_bool(), m["isEqual"].as_bool()) {
                    (Some(true), Some(false)) => "!~",
                    (Some(true), _) => "=~",
                    (_, Some(false)) => "!=",
                    _ => "=",
                };
                format!("{}{op}{:?}", text(m, "name"), text(m, "value"))
            })
            .collect();
        let ends: String = text(s, "endsAt").chars().take(19).collect();
        println!(
            "{:<36}  {:<8}  {:<20}  {:<12}  {:<40}  {}",
            text(s, "id"),
            text(&s["status"], "state"),
            ends.replace('T', " "),
            clip(&text(s, "createdBy"), 12),
            clip(&matchers.join(" "), 40),
            clip(&text(s, "comment"), 60)
        );
    }
    println!("{} silence(s)", silences.len());
}
