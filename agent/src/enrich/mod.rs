//! Kubernetes pod metadata for the agent's records.
//!
//! [`start`] watches this node's pods (field selector `spec.nodeName`) and
//! every namespace, keeps them in a [`PodCache`], and hands out a
//! [`KubeMeta`]: the tail asks it for the pod of a file (by the kubelet path),
//! push sources for the pod of a sender (by peer IP, through
//! [`KubeMeta::enrich_pushed`] only). The API server being
//! slow or away never stops a record: records then carry what their path
//! says, and the cache catches up when the server is back.
//!
//! What this room must not do: block a source (lookups take a read lock for
//! one map access), keep a deleted pod's IP from a newer pod, or send
//! credentials anywhere but the API server.
//!
//! - [`meta`]: what is kept of a pod or namespace (attributes, directives);
//! - [`cache`]: the maps by uid, container id, name and IP;
//! - [`watch`]: the list+watch loop with resourceVersion, bookmarks, 410.

pub mod cache;
pub mod meta;
pub mod watch;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use mecha_config::KubernetesConfig;
use mecha_parsers::LogRecord;
use mecha_parsers::kubepath::KubePath;
use tokio::task::JoinHandle;

use crate::metrics::AgentMetrics;
use crate::{AgentError, Shutdown};
pub use cache::{PodCache, PodKey};
pub use meta::{FileSettings, Resolved, Selectors};
use watch::{Backoff, Change, WatchOptions};

/// Deleted pods and released IPs are looked at for pruning this often.
const PRUNE_INTERVAL: Duration = Duration::from_secs(5);

/// What sources ask of the pod cache.
pub struct KubeMeta {
    cache: Arc<PodCache>,
    wait_for_metadata: Duration,
    metrics: Arc<AgentMetrics>,
}

impl std::fmt::Debug for KubeMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeMeta")
            .field("pods", &self.cache.pods())
            .field("wait_for_metadata", &self.wait_for_metadata)
            .finish()
    }
}

impl KubeMeta {
    /// A handle on `cache`; files wait up to `wait_for_metadata` for their pod.
    pub fn new(
        cache: Arc<PodCache>,
        wait_for_metadata: Duration,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        KubeMeta {
            cache,
            wait_for_metadata,
            metrics,
        }
    }

    /// How long a new file whose pod is unknown waits before it is read
    /// without metadata.
    pub fn wait_for_metadata(&self) -> Duration {
        self.wait_for_metadata
    }

    /// Changes whenever the cache does: callers re-resolve only then.
    pub fn generation(&self) -> u64 {
        self.cache.generation()
    }

    /// The pod of a file, by what its path says.
    pub fn for_file(&self, path: &KubePath) -> Option<Arc<Resolved>> {
        self.cache.lookup(&PodKey {
            uid: path.pod_uid.clone(),
            container_id: path.container_id.clone(),
            namespace: path.namespace.clone(),
            name: path.pod.clone(),
        })
    }

    /// The pod that has `ip` (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn for_ip(&self, ip: IpAddr) -> Option<Arc<Resolved>> {
        self.cache
            .by_ip(ip.to_canonical(), tokio::time::Instant::now().into_std())
    }

    /// Counts `n` records of `component` sent without their pod's metadata.
    pub fn without_metadata(&self, component: &str, n: u64) {
        if n > 0 {
            self.metrics
                .kube_records_without_metadata
                .with_label_values(&[component])
                .inc_by(n);
        }
    }

    /// Adds the attributes of the pod with IP `peer` to the resources of
    /// `records` (pushed by that pod); counts them when no pod has the IP.
    ///
    /// The one entry point of push sources: every receiver of records that
    /// a pod sends over the network (Sentry today; OTLP and Zipkin when
    /// they are built) calls this once per request with the connection's
    /// peer address (the TCP peer, not a forwarded header: a proxy's
    /// client is not a pod) and its own component name, before the records
    /// are queued. Going through here is what keeps them safe against IP
    /// reuse (a deleted pod never shadows its successor, see [`PodCache`]),
    /// keeps what a sender says of itself, and counts records without
    /// metadata under `component`.
    pub fn enrich_pushed(&self, peer: IpAddr, records: &mut [LogRecord], component: &str) {
        let Some(pod) = self.for_ip(peer) else {
            self.without_metadata(component, records.len() as u64);
            return;
        };
        for r in records {
            let attrs = std::sync::Arc::make_mut(&mut r.resource.attributes);
            for (k, v) in pod.resource.attributes.iter() {
                // What the sender said of itself is kept.
                attrs.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
}

/// The running watches.
pub struct KubeHandle {
    tasks: Vec<JoinHandle<()>>,
}

impl KubeHandle {
    /// Waits for the watches to stop after shutdown.
    pub async fn join(self) {
        for t in self.tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "kubernetes watch task failed");
            }
        }
    }
}

fn start_error(reason: impl std::fmt::Display) -> AgentError {
    AgentError::Kubernetes {
        reason: reason.to_string(),
    }
}

/// The client for `config`: its `api_server` without credentials, else the
/// in-cluster service account, else the kubeconfig.
async fn client(config: &KubernetesConfig) -> Result<kube::Client, AgentError> {
    let cfg = match &config.api_server {
        Some(url) => {
            // The argument's type (`http::Uri`) picks the parser.
            kube::Config::new(url.parse().map_err(|e| {
                start_error(format!("api_server: expected a URL, found {url:?}: {e}"))
            })?)
        }
        None => kube::Config::infer().await.map_err(|e| {
            start_error(format!(
                "no API server: not in a pod and no usable kubeconfig ({e}); set agent.kubernetes.api_server or enabled: false"
            ))
        })?,
    };
    kube::Client::try_from(cfg).map_err(start_error)
}

/// Starts watching the pods of `node` and every namespace. Returns at once:
/// the cache fills in the background.
pub async fn start(
    config: &KubernetesConfig,
    node: &str,
    metrics: Arc<AgentMetrics>,
    shutdown: Shutdown,
) -> Result<(Arc<KubeMeta>, KubeHandle), AgentError> {
    let globs = |v: &[mecha_config::GlobPattern]| v.iter().map(|g| g.0.clone()).collect::<Vec<_>>();
    let selectors = Selectors::new(
        &globs(&config.pod_labels),
        &globs(&config.pod_annotations),
        &globs(&config.namespace_labels),
    )
    .map_err(|(p, e)| start_error(format!("label or annotation glob {p:?}: {e}")))?;
    let client = client(config).await?;
    let cache = Arc::new(PodCache::new(config.delay_deletion.0, metrics.clone()));
    let meta = Arc::new(KubeMeta::new(
        cache.clone(),
        config.wait_for_metadata.0,
        metrics.clone(),
    ));
    let seed = u64::from(std::process::id()) ^ xxhash_rust::xxh3::xxh3_64(node.as_bytes());
    let backoff =
        |salt: u64| Backoff::new(config.backoff_initial.0, config.backoff_max.0, seed ^ salt);

    let pods = {
        let cache = cache.clone();
        let sel = selectors.clone();
        let m = metrics.clone();
        // Annotations whose value is not understood are ignored and counted
        // (again on every update of the pod: the count says "still wrong").
        let read = move |p: &Pod| {
            let meta = meta::pod_meta(p, &sel)?;
            for (key, why) in &meta.directives.invalid {
                m.errors
                    .with_label_values(&["kubernetes", "annotation"])
                    .inc();
                tracing::debug!(pod = %meta.name, namespace = %meta.namespace, key, why, "kubernetes: annotation ignored");
            }
            Some(meta)
        };
        let opts = WatchOptions {
            resource: "pods",
            field_selector: Some(format!("spec.nodeName={node}")),
            timeout: config.watch_timeout.0,
            backoff: backoff(1),
        };
        let api: kube::Api<Pod> = kube::Api::all(client.clone());
        tokio::spawn(watch::run(
            api,
            opts,
            metrics.clone(),
            shutdown.clone(),
            move |c| {
                let now = tokio::time::Instant::now().into_std();
                match c {
                    Change::Replace(list) => {
                        cache.replace_pods(list.iter().filter_map(&read).collect(), now)
                    }
                    Change::Apply(p) => {
                        if let Some(m) = read(&p) {
                            cache.apply_pod(m, now);
                        }
                    }
                    Change::Delete(p) => {
                        if let Some(uid) = p.metadata.uid.as_deref() {
                            cache.delete_pod(uid, now);
                        }
                    }
                }
            },
        ))
    };
    let namespaces = {
        let cache = cache.clone();
        let sel = selectors;
        let opts = WatchOptions {
            resource: "namespaces",
            field_selector: None,
            timeout: config.watch_timeout.0,
            backoff: backoff(2),
        };
        let api: kube::Api<Namespace> = kube::Api::all(client);
        tokio::spawn(watch::run(
            api,
            opts,
            metrics.clone(),
            shutdown.clone(),
            move |c| match c {
                Change::Replace(list) => cache.replace_namespaces(
                    list.iter()
                        .filter_map(|n| meta::namespace_meta(n, &sel))
                        .collect(),
                ),
                Change::Apply(n) => {
                    if let Some(m) = meta::namespace_meta(&n, &sel) {
                        cache.apply_namespace(m);
                    }
                }
                Change::Delete(n) => {
                    if let Some(name) = n.metadata.name.as_deref() {
                        cache.delete_namespace(name);
                    }
                }
            },
        ))
    };
    let prune = tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => cache.prune(tokio::time::Instant::now().into_std()),
            }
        }
    });
    tracing::info!(
        node,
        "kubernetes: watching this node's pods and every namespace"
    );
    Ok((
        meta,
        KubeHandle {
            tasks: vec![pods, namespaces, prune],
        },
    ))
}
