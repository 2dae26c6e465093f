//! `mecha standalone|agent|aggregator`: load the config, apply the flags, start
//! the roles, print what is running, reload the config on SIGHUP (aggregator
//! roles), and stop cleanly on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use mecha_agent::Agent;
use mecha_agent::forward::{Batch, Downstream, ForwardError};
use mecha_aggregator::{Aggregator, AggregatorOptions, Ingest};
use mecha_config::{Config, GlobPattern, Listen, SourceConfig};
use mecha_parsers::otlp::decode_logs_request;

/// Which roles run in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Both, joined in-process.
    Standalone,
    /// The node agent.
    Agent,
    /// The central service.
    Aggregator,
}

/// Flags that override the config.
#[derive(Debug, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub http: Option<String>,
    pub grpc: Option<String>,
    pub admin: Option<String>,
    pub forward: Option<String>,
    pub sentry: Option<String>,
}

/// How long a graceful shutdown may take (Kubernetes' default grace period is 30 s;
/// ours fits well inside it).
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(10);

pub fn run(role: Role, ov: Overrides) -> anyhow::Result<ExitCode> {
    init_logging();
    let config_path = ov.config.clone();
    let (config, data_dir) = build_config(role, ov)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mecha")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(role, config, data_dir, config_path))
}

/// Reads the alerting section of `path` again, with the checks of start-up.
fn config_source(path: PathBuf) -> mecha_aggregator::alert::reload::ConfigSource {
    mecha_aggregator::alert::reload::ConfigSource::new(move || {
        super::validate::load_checked(&path)
            .map(|c| c.aggregator.alerting)
            .map_err(|e| e.to_string())
    })
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MECHA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn build_config(role: Role, ov: Overrides) -> anyhow::Result<(Config, PathBuf)> {
    let from_file = ov.config.is_some();
    let mut config = match &ov.config {
        Some(p) => super::validate::load_checked(p)?,
        None => Config::default(),
    };
    if role == Role::Standalone && !from_file {
        // On a laptop nothing should listen beyond loopback unless asked to.
        config.agent.admin.listen = Listen(Some(([127, 0, 0, 1], 9600).into()));
        config.aggregator.grpc.listen = Listen(Some(([127, 0, 0, 1], 4317).into()));
        config.agent.sentry.listen = Listen(Some(([127, 0, 0, 1], 9000).into()));
    }
    let flag = |name: &str, v: &str| -> anyhow::Result<Listen> {
        Listen::parse(v).map_err(|e| anyhow::anyhow!("--{name}: {e}"))
    };
    if let Some(v) = &ov.http {
        config.aggregator.http.listen = flag("http", v)?;
    }
    if let Some(v) = &ov.grpc {
        config.aggregator.grpc.listen = flag("grpc", v)?;
    }
    if let Some(v) = &ov.admin {
        config.agent.admin.listen = flag("admin", v)?;
    }
    if let Some(v) = &ov.sentry {
        config.agent.sentry.listen = flag("sentry", v)?;
    }
    if let Some(v) = &ov.forward {
        config.agent.forward.endpoint = v.clone();
    }
    let globs = |list: &[String], name: &str| -> anyhow::Result<Vec<GlobPattern>> {
        list.iter()
            .map(|g| GlobPattern::parse(g).map_err(|e| anyhow::anyhow!("--{name}: {e}")))
            .collect()
    };
    let include = globs(&ov.include, "include")?;
    let exclude = globs(&ov.exclude, "exclude")?;
    if !include.is_empty() && config.agent.sources.is_empty() {
        config
            .agent
            .sources
            .insert("containers".into(), SourceConfig::default_tail());
    }
    for src in config.agent.sources.values_mut() {
        if !include.is_empty() {
            src.include = include.clone();
        }
        src.exclude.extend(exclude.iter().cloned());
    }
    let data_dir = ov
        .data_dir
        .or_else(|| config.data_dir.clone())
        .unwrap_or_else(|| match role {
            Role::Standalone => PathBuf::from("./mecha-data"),
            _ => PathBuf::from("/var/lib/mecha"),
        });
    Ok((config, data_dir))
}

/// The aggregator, in-process, as the agent's downstream (standalone mode).
struct InProcess(Ingest);

impl Downstream for InProcess {
    fn name(&self) -> &str {
        "in_process"
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), ForwardError>> {
        Box::pin(async move {
            // Chunks arrive encoded, as they would over the wire; decoding is
            // cheap next to indexing.
            let rejected = |reason: String| ForwardError::Rejected {
                sink: "in_process".into(),
                reason,
            };
            let request = batch.raw().map_err(|e| rejected(e.to_string()))?;
            let records = decode_logs_request(&request).map_err(|e| rejected(e.to_string()))?;
            self.0
                .push(records)
                .await
                .map(|_| ())
                .map_err(|e| ForwardError::Unavailable {
                    sink: "in_process".into(),
                    reason: e.to_string(),
                })
        })
    }
}

async fn run_async(
    role: Role,
    config: Config,
    data_dir: PathBuf,
    config_path: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    println!("mecha {} {}", env!("CARGO_PKG_VERSION"), role_name(role));
    println!("  data dir   {}", data_dir.display());

    let aggregator = if role != Role::Agent {
        let agg = &config.aggregator;
        let a = Aggregator::start(AggregatorOptions {
            data_dir: data_dir.clone(),
            grpc_listen: agg.grpc.listen.0,
            http_listen: agg.http.listen.0,
            retention_days: agg.retention_days,
            commit_interval: agg.commit_interval.0,
            max_events_per_issue: u64::from(agg.issues.max_events_per_issue),
            alerting: agg.alerting.clone(),
            config_source: config_path.map(config_source),
            ..AggregatorOptions::default()
        })
        .await
        .context("starting the aggregator")?;
        Some(a)
    } else {
        None
    };

    let agent = if role != Role::Aggregator {
        let downstream: Option<Arc<dyn Downstream>> = aggregator
            .as_ref()
            .map(|a| Arc::new(InProcess(a.ingest())) as Arc<dyn Downstream>);
        Some(
            Agent::start(&config, &data_dir, downstream)
                .await
                .context("starting the agent")?,
        )
    } else {
        None
    };

    let mut listeners: Vec<(&str, SocketAddr, &str)> = Vec::new();
    if let Some(a) = &aggregator {
        if let Some(addr) = a.http_addr() {
            listeners.push((
                "http",
                addr,
                "search API /api/v1/logs/search, issues /api/v1/issues, /metrics, /health",
            ));
        }
        if let Some(addr) = a.grpc_addr() {
            listeners.push(("grpc", addr, "OTLP/gRPC logs in"));
        }
    }
    if let Some(a) = &agent
        && let Some(addr) = a.admin_addr()
    {
        listeners.push(("admin", addr, "agent /metrics, /health, /ready"));
    }
    if let Some(a) = &agent
        && let Some(addr) = a.sentry_addr()
    {
        listeners.push((
            "sentry",
            addr,
            "Sentry DSN http://<key>@<host>:<port>/<project>",
        ));
    }
    for (name, addr, what) in &listeners {
        println!("  listening  {name:<6} {addr:<21} {what}");
    }
    if listeners.is_empty() {
        println!("  listening  nothing (every listener is off)");
    }
    // Before the listeners file announces the process ready: a SIGHUP
    // before the handler exists would end the process.
    let reloads = aggregator.as_ref().map(|a| reload_on_sighup(a.reloader()));
    write_listeners(&data_dir, &listeners);
    if let Some(a) = &agent {
        for (name, files) in a.watched_files() {
            println!("  source     {name}: watching {} file(s)", files.len());
            for f in files.iter().take(20) {
                println!("               {}", f.display());
            }
            if files.len() > 20 {
                println!("               ... and {} more", files.len() - 20);
            }
        }
        if role == Role::Agent {
            println!("  forward    {}", config.agent.forward.endpoint);
        }
    }
    if let Some(addr) = aggregator.as_ref().and_then(|a| a.http_addr()) {
        println!(
            "  search     mecha search 'level:error' --since 1h --server http://{addr}\n             curl 'http://{addr}/api/v1/logs/search?q=level:error'"
        );
    }

    wait_for_signal().await;
    println!("mecha: shutting down");
    if let Some(task) = reloads {
        task.abort();
    }
    let stop = async {
        if let Some(a) = agent {
            a.shutdown().await;
        }
        if let Some(a) = aggregator
            && let Err(e) = a.shutdown().await
        {
            tracing::error!(error = %e, "aggregator shutdown failed");
        }
    };
    if tokio::time::timeout(SHUTDOWN_BUDGET, stop).await.is_err() {
        tracing::warn!("shutdown took longer than {SHUTDOWN_BUDGET:?}; exiting");
    }
    Ok(ExitCode::SUCCESS)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Standalone => "standalone",
        Role::Agent => "agent",
        Role::Aggregator => "aggregator",
    }
}

/// Records the bound addresses in `<data_dir>/listeners.json`, so that scripts and
/// tests that asked for port 0 can find them without reading logs.
fn write_listeners(data_dir: &std::path::Path, listeners: &[(&str, SocketAddr, &str)]) {
    let map: serde_json::Map<String, serde_json::Value> = listeners
        .iter()
        .map(|(n, a, _)| ((*n).to_string(), serde_json::Value::String(a.to_string())))
        .collect();
    let path = data_dir.join("listeners.json");
    let tmp = data_dir.join("listeners.json.tmp");
    let written = std::fs::write(&tmp, serde_json::Value::Object(map).to_string())
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the listeners file");
    }
}

/// Reloads the config on each SIGHUP (the reloader logs and counts each).
fn reload_on_sighup(
    reloader: mecha_aggregator::alert::reload::Reloader,
) -> tokio::task::JoinHandle<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let _ = reloader.reload().await;
                }
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: reload with POST /-/reload");
                tokio::spawn(async {})
            }
        }
    }
    #[cfg(not(unix))]
    {
        drop(reloader);
        tokio::spawn(async {})
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
