//! Starts and stops the whole agent from a config: the sources, the pipeline,
//! the forwarder and the admin listener, and shuts them down in the order that
//! loses nothing (sources stop reading, the forwarder drains, checkpoints are
//! written last).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mecha_config::{BufferKind, Compression, Config, SourceKind};

use crate::admin::{self, Readiness};
use crate::buffer::{BufferOptions, WhenFull};
use crate::enrich::{self, KubeHandle, KubeMeta};
use crate::forward::grpc::{GrpcDownstream, WireCompression};
use crate::forward::{self, Downstream, ForwarderOptions};
use crate::metrics::AgentMetrics;
use crate::pipeline::{self, ChunkCodec};
use crate::sources::sentry::{self, SentryHandle};
use crate::sources::tail::{ReadFrom, TailHandle, TailOptions, TailSource};
use crate::spool::DiskSpool;
use crate::{AgentError, Shutdown};

/// zstd level of chunks sealed by the sources. Level 1 costs about half the
/// CPU of the default level 3 for a few percent more bytes on log records,
/// and CPU per GiB is the agent's budget.
const ZSTD_LEVEL: i32 = 1;

/// A running agent.
pub struct Agent {
    shutdown: Shutdown,
    admin_addr: Option<SocketAddr>,
    admin_task: Option<tokio::task::JoinHandle<()>>,
    tails: Vec<(String, TailHandle)>,
    sentry: Option<SentryHandle>,
    kube: Option<KubeHandle>,
    forwarder: tokio::task::JoinHandle<()>,
    spool: Option<DiskSpool>,
    metrics: Arc<AgentMetrics>,
    readiness: Arc<Readiness>,
}

impl Agent {
    /// Starts every component of `config`. Records go to `downstream` when given
    /// (standalone mode), else to `config.agent.forward.endpoint` over OTLP/gRPC.
    /// The buffer is on disk unless configured otherwise, or unless the
    /// downstream is in-process (where the store's commit is the safe point).
    pub async fn start(
        config: &Config,
        data_dir: &Path,
        downstream: Option<Arc<dyn Downstream>>,
    ) -> Result<Agent, AgentError> {
        std::fs::create_dir_all(data_dir).map_err(|e| AgentError::DataDir {
            path: data_dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let metrics = Arc::new(AgentMetrics::new());
        let readiness = Arc::new(Readiness::default());
        let shutdown = Shutdown::new();
        let fwd = &config.agent.forward;
        let in_process = downstream.is_some();
        let downstream: Arc<dyn Downstream> = match downstream {
            Some(d) => d,
            None => Arc::new(
                GrpcDownstream::new(
                    &fwd.endpoint,
                    match fwd.compression {
                        Compression::Zstd => WireCompression::Zstd(ZSTD_LEVEL),
                        Compression::Gzip => WireCompression::Gzip,
                        Compression::None => WireCompression::None,
                    },
                    fwd.request_timeout.0,
                    metrics.clone(),
                )
                .map_err(AgentError::Forward)?,
            ),
        };
        let queue = config.agent.queue_chunks;
        // Sources compress what the wire would compress with zstd anyway; an
        // in-process downstream decodes, so it gets raw bytes.
        let codec = match fwd.compression {
            Compression::Zstd if !in_process => ChunkCodec::Zstd(ZSTD_LEVEL),
            _ => ChunkCodec::Raw,
        };
        let (output, input) = pipeline::channel(queue, metrics.clone(), codec);
        let buffer = &config.agent.buffer;
        let disk = match buffer.kind {
            Some(kind) => kind == BufferKind::Disk,
            None => !in_process,
        };
        let (input, spool) = if disk {
            let options = BufferOptions {
                dir: data_dir.join("buffer"),
                max_size: buffer.max_size.0,
                segment_bytes: buffer.segment_size.0,
                fsync_interval: buffer.fsync_interval.0,
                when_full: match buffer.when_full {
                    mecha_config::WhenFull::Block => WhenFull::Block,
                    mecha_config::WhenFull::DropNewest => WhenFull::DropNewest,
                },
            };
            let (spool, input) = DiskSpool::start(
                options,
                input,
                queue,
                metrics.clone(),
                readiness.clone(),
                shutdown.clone(),
            )
            .await?;
            (input, Some(spool))
        } else {
            (input, None)
        };
        let forwarder = tokio::spawn(forward::run(
            input,
            downstream,
            ForwarderOptions {
                batch_max_bytes: fwd.batch_max_bytes.as_usize(),
                batch_timeout: fwd.batch_timeout.0,
                max_in_flight: fwd.in_flight,
                ..ForwarderOptions::default()
            },
            metrics.clone(),
            shutdown.clone(),
        ));

        let (admin_addr, admin_task) = match config.agent.admin.listen.0 {
            Some(addr) => {
                let (a, t) =
                    admin::serve(addr, metrics.clone(), readiness.clone(), shutdown.clone())
                        .await
                        .map_err(|e| AgentError::Bind {
                            what: "admin",
                            addr,
                            reason: e.to_string(),
                        })?;
                (Some(a), Some(t))
            }
            None => (None, None),
        };

        let (kube_meta, kube) = match start_kube(config, &metrics, &shutdown).await? {
            Some((m, h)) => (Some(m), Some(h)),
            None => (None, None),
        };
        let mut tails = Vec::new();
        for (name, src) in &config.agent.sources {
            match src.kind {
                SourceKind::Tail => {
                    let mut opts = tail_options(name, src, data_dir, config.node_name.clone());
                    opts.kube = kube_meta.clone();
                    let handle =
                        TailSource::start(opts, output.clone(), metrics.clone(), shutdown.clone())
                            .await
                            .map_err(AgentError::Tail)?;
                    tails.push((name.clone(), handle));
                }
            }
        }
        let sentry = match config.agent.sentry.listen.0 {
            Some(addr) => Some(
                sentry::start(
                    &config.agent.sentry,
                    addr,
                    config.node_name.as_deref(),
                    kube_meta.clone(),
                    output.clone(),
                    metrics.clone(),
                    shutdown.clone(),
                )
                .await?,
            ),
            None => None,
        };
        drop(output);
        readiness.set_started();
        Ok(Agent {
            shutdown,
            admin_addr,
            admin_task,
            tails,
            sentry,
            kube,
            forwarder,
            spool,
            metrics,
            readiness,
        })
    }

    /// The bound admin address, if the admin listener is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The bound address of the Sentry endpoint, if it is on.
    pub fn sentry_addr(&self) -> Option<SocketAddr> {
        self.sentry.as_ref().map(SentryHandle::addr)
    }

    /// Files currently watched by each tail source, by source name.
    pub fn watched_files(&self) -> Vec<(String, Vec<PathBuf>)> {
        self.tails
            .iter()
            .map(|(n, h)| (n.clone(), h.watched_files()))
            .collect()
    }

    /// The agent's metrics.
    pub fn metrics(&self) -> &Arc<AgentMetrics> {
        &self.metrics
    }

    /// Readiness, for components outside the agent to report problems.
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// Stops reading, makes what was read safe (in the disk buffer, or
    /// delivered within the forwarder's drain deadline) and writes checkpoints.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(spool) = &mut self.spool {
            spool.writer_done().await;
        }
        if let Err(e) = self.forwarder.await {
            tracing::error!(error = %e, "forwarder task failed");
        }
        if let Some(spool) = self.spool {
            spool.close().await;
        }
        for (_, t) in self.tails {
            t.join().await;
        }
        if let Some(s) = self.sentry {
            s.join().await;
        }
        if let Some(k) = self.kube {
            k.join().await;
        }
        if let Some(t) = self.admin_task
            && let Err(e) = t.await
        {
            tracing::error!(error = %e, "admin task failed");
        }
    }
}

/// Starts pod metadata enrichment when `agent.kubernetes` says so (by
/// default: when running in a pod).
async fn start_kube(
    config: &Config,
    metrics: &Arc<AgentMetrics>,
    shutdown: &Shutdown,
) -> Result<Option<(Arc<KubeMeta>, KubeHandle)>, AgentError> {
    let k = &config.agent.kubernetes;
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty());
    if !k.is_enabled(in_cluster) {
        return Ok(None);
    }
    let env_node = std::env::var("NODE_NAME").ok();
    let Some(node) = k.effective_node_name(config.node_name.as_deref(), env_node.as_deref()) else {
        return Err(AgentError::Kubernetes {
            reason: "node_name: expected the node's name (set NODE_NAME from the downward API's spec.nodeName), found none".into(),
        });
    };
    enrich::start(k, node, metrics.clone(), shutdown.clone())
        .await
        .map(Some)
}

/// Maps a tail source's config to its options. The default excludes always apply.
fn tail_options(
    name: &str,
    src: &mecha_config::SourceConfig,
    data_dir: &Path,
    node_name: Option<String>,
) -> TailOptions {
    let mut exclude: Vec<String> = mecha_config::DEFAULT_EXCLUDE
        .iter()
        .map(|s| (*s).to_string())
        .collect();
    exclude.extend(src.exclude.iter().map(|g| g.0.clone()));
    let defaults = TailOptions::default();
    TailOptions {
        include: src.include.iter().map(|g| g.0.clone()).collect(),
        exclude,
        read_from: match src.read_from {
            mecha_config::ReadFrom::Beginning => ReadFrom::Beginning,
            mecha_config::ReadFrom::End => ReadFrom::End,
        },
        container_format: src.container_format.fixed(),
        body_format: src.format.0,
        keep_original_body: src.keep_original_body,
        multiline: src.multiline.as_ref().map(|m| m.effective_rule()),
        multiline_flush: src
            .multiline
            .as_ref()
            .map(|m| m.flush_timeout.0)
            .unwrap_or(defaults.multiline_flush),
        multiline_max_lines: src
            .multiline
            .as_ref()
            .map(|m| m.max_lines)
            .unwrap_or(defaults.multiline_max_lines),
        max_line_bytes: src.max_line_bytes.as_usize(),
        max_merged_line_bytes: src.max_merged_line_bytes.as_usize(),
        rescan_interval: src.rescan_interval.0,
        checkpoint_path: data_dir.join(format!("checkpoints-{name}.json")),
        max_open_files: src.max_open_files,
        node_name,
        ..defaults
    }
}
