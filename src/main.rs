//! `mecha`: the one binary. Parses arguments, loads the config and starts the
//! roles from the library crates; nothing else lives here.

mod cli;

/// mimalloc rather than the system allocator: the agent's hot path allocates
/// and frees many small strings per line, and in the end-to-end bench glibc's
/// `malloc`/`malloc_consolidate` took about a fifth of the agent's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// One node runtime for Kubernetes observability.
#[derive(Parser, Debug)]
#[command(name = "mecha", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Agent and aggregator in one process, with an embedded store.
    Standalone(RunArgs),
    /// The node agent (a DaemonSet): collect, enrich, buffer, forward.
    Agent(RunArgs),
    /// The central service: receive, index, search.
    Aggregator(RunArgs),
    /// Search logs: `mecha search 'level:error AND namespace:shop' --since 1h`.
    Search(cli::search::SearchArgs),
    /// List Sentry issues (`mecha issues --project 1`), or change one
    /// (`mecha issues resolve 12`).
    Issues(cli::issues::IssuesArgs),
    /// Silence alerts (`mecha silence add 'alertname=X' --duration 2h -c why`),
    /// list silences, or expire one (`mecha silence expire ID`).
    Silence(cli::silence::SilenceArgs),
    /// List active alerts with their state (active, suppressed).
    Alerts(cli::silence::AlertsArgs),
    /// Alert receivers: `mecha alert preview --payload FILE --config FILE`
    /// prints what each would send.
    Alert(cli::alert::AlertArgs),
    /// Parse lines with a format and print one JSON event per record.
    Parse(cli::parse::ParseArgs),
    /// Check a config file without starting anything.
    Validate {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Overrides shared by the roles.
#[derive(Args, Debug, Default)]
struct RunArgs {
    /// Config file (YAML). Without one, every default applies.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Where checkpoints and indexes live.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Glob of files to tail (repeatable); replaces the configured includes.
    #[arg(long = "include", value_name = "GLOB")]
    include: Vec<String>,
    /// Glob of files to skip (repeatable); added to the configured excludes.
    #[arg(long = "exclude", value_name = "GLOB")]
    exclude: Vec<String>,
    /// HTTP API listen address, or `off`.
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// OTLP/gRPC listen address of the aggregator, or `off`.
    #[arg(long, value_name = "ADDR")]
    grpc: Option<String>,
    /// Agent admin listen address (`/metrics`, `/health`, `/ready`), or `off`.
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// Sentry ingestion listen address (`/api/{project}/envelope/`), or `off`.
    #[arg(long, value_name = "ADDR")]
    sentry: Option<String>,
    /// Aggregator endpoint the agent forwards to (agent role).
    #[arg(long, value_name = "URL")]
    forward: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Standalone(a) => cli::run::run(cli::run::Role::Standalone, to_overrides(a)),
        Command::Agent(a) => cli::run::run(cli::run::Role::Agent, to_overrides(a)),
        Command::Aggregator(a) => cli::run::run(cli::run::Role::Aggregator, to_overrides(a)),
        Command::Search(a) => cli::search::run(a),
        Command::Issues(a) => cli::issues::run(a),
        Command::Silence(a) => cli::silence::run(a),
        Command::Alerts(a) => cli::silence::run_alerts(a),
        Command::Alert(a) => cli::alert::run(a),
        Command::Parse(a) => cli::parse::run(a),
        Command::Validate { config } => cli::validate::run(&config),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mecha: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn to_overrides(a: RunArgs) -> cli::run::Overrides {
    cli::run::Overrides {
        config: a.config,
        data_dir: a.data_dir,
        include: a.include,
        exclude: a.exclude,
        http: a.http,
        grpc: a.grpc,
        admin: a.admin,
        forward: a.forward,
        sentry: a.sentry,
    }
}
