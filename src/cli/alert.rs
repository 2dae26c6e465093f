//! `mecha alert preview --payload FILE [--receiver NAME] --config FILE`:
//! prints the requests the configured receivers would send for an
//! Alertmanager webhook payload (version 4), sending nothing. Secrets (robot
//! keys, signatures, webhook paths) are masked.

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
    /// Print what each receiver integration would send for a payload.
    Preview {
        /// An Alertmanager webhook payload (JSON, version 4).
        #[arg(long)]
        payload: PathBuf,
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
        receiver,
        config,
    } = args.command;
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
        let previews = r.preview(&n);
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
