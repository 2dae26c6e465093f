//! `mecha alert preview --payload FILE [--receiver NAME] --config FILE`:
//! prints the requests the configured receivers would send for an
//! Alertmanager webhook payload (version 4), sending nothing.
//! `mecha alert preview --rule NAME [--value N] --config FILE`: the same for
//! the sample alerts of a rule, routed through the configured routing tree.
//! Secrets (robot keys, signatures, webhook paths) are masked.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

/// `mecha alert ...`
#[derive(Args, Debug)]
pub struct AlertArgs {
    #[command(subcommand)]
    command: AlertCommand,
}

#[derive(Subcommand, Debug)]
enum AlertCommand {
    /// Print what each receiver integration would send for a payload or
    /// for a rule's alerts.
    Preview {
        /// An Alertmanager webhook payload (JSON, version 4).
        #[arg(long, required_unless_present = "rule", conflicts_with = "rule")]
        payload: Option<PathBuf>,
        /// A rule of `aggregator.alerting.rules`: its sample alerts are
        /// routed through `aggregator.alerting.route`.
        #[arg(long)]
        rule: Option<String>,
        /// With `--rule`: the alert's `$value`. Default: the rule's
        /// threshold (1 for new-issue and regression rules).
        #[arg(long, requires = "rule")]
        value: Option<f64>,
        /// Only this receiver. Default: the payload's `receiver` when the
        /// config has it, else every receiver.
        #[arg(long)]
        receiver: Option<String>,
        /// The config file with `aggregator.alerting.receivers`.
        #[arg(long, short)]
        config: PathBuf,
    },
}

pub fn run(args: AlertArgs) -> anyhow::Result<ExitCode> {
    let AlertCommand::Preview {
        payload,
        rule,
        value,
        receiver,
        config,
    } = args.command;
    if let Some(rule) = rule {
        return preview_rule(&config, &rule, value, receiver.as_deref());
    }
    let Some(payload) = payload else {
        anyhow::bail!("expected --payload FILE or --rule NAME");
    };
    let config = match mecha_config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let bytes =
        std::fs::read(&payload).with_context(|| format!("reading {}", payload.display()))?;
    let n = match mecha_aggregator::query::bridge::parse(&bytes) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{}: {e}", payload.display());
            return Ok(ExitCode::from(2));
        }
    };
    let receivers = mecha_aggregator::alert::notify::build(&config.aggregator.alerting.receivers)
        .context("building receivers")?;
    let mut names: Vec<&String> = match &receiver {
        Some(name) => {
            if !receivers.contains_key(name) {
                eprintln!("no receiver {name:?} in aggregator.alerting.receivers");
                return Ok(ExitCode::from(2));
            }
            vec![name]
        }
        None if receivers.contains_key(&n.receiver) => vec![&n.receiver],
        None => receivers.keys().collect(),
    };
    names.sort();
    for name in names {
        let Some(r) = receivers.get(name) else {
            continue;
        };
        println!("# receiver {name}");
        let previews = r.preview(&n, chrono::Utc::now());
        if previews.is_empty() {
            println!("(nothing to send: no alert this receiver sends)");
        }
        for p in previews {
            println!("{} POST {}", p.integration, p.url);
            println!("{}", p.body);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--rule NAME`: the rule's sample alerts, routed, and what each matched
/// receiver would send (only `receiver`'s, when given).
fn preview_rule(
    config: &std::path::Path,
    name: &str,
    value: Option<f64>,
    receiver: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let config = match super::validate::load_checked(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let alerting = &config.aggregator.alerting;
    let external_url = match config.aggregator.http.listen.0 {
        Some(addr) => format!("http://{addr}"),
        None => "http://localhost:8080".to_string(),
    };
    let (alerts, routed) = match mecha_aggregator::alert::preview::rule(
        alerting,
        name,
        value,
        &external_url,
        chrono::Utc::now(),
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    for a in &alerts {
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        println!("# alert {{{}}}", labels.join(", "));
    }
    if alerting.route.is_none() {
        println!("(no aggregator.alerting.route: alerts are listed, not notified)");
    }
    for r in routed {
        if receiver.is_some_and(|want| want != r.receiver) {
            continue;
        }
        println!(
            "# route {} -> receiver {} (group {})",
            r.route, r.receiver, r.notification.group_key
        );
        if r.requests.is_empty() {
            println!("(nothing to send: no integration of this receiver sends these alerts)");
        }
        for p in r.requests {
            println!("{} POST {}", p.integration, p.url);
            println!("{}", p.body);
        }
    }
    Ok(ExitCode::SUCCESS)
}
