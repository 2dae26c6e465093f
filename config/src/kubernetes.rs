//! `agent.kubernetes`: pod metadata enrichment. The agent watches the pods of
//! its own node and every namespace, and adds their metadata to the records
//! of their files (by the kubelet's log path) and of their Sentry events (by
//! the sender's pod IP).
//!
//! ```yaml
//! agent:
//!   kubernetes:
//!     enabled: auto                 # on when KUBERNETES_SERVICE_HOST is set
//!     node_name: ${NODE_NAME}
//!     pod_labels: ["app", "app.kubernetes.io/*"]
//!     pod_annotations: ["prometheus.io/*"]
//!     namespace_labels: ["team"]
//!     delay_deletion: 60s
//!     wait_for_metadata: 2s
//! ```
//!
//! Pods steer their own collection with annotations: `mecha.io/exclude:
//! "true"` (on the pod or its namespace) drops its log lines,
//! `mecha.io/exclude-containers: a,b` those of some containers,
//! `mecha.io/parser: json` (or `mecha.io/parser-<container>: json`) sets the
//! body format and `mecha.io/multiline: java` (or `off`) the multiline rule.
//!
//! This module only describes the settings; the agent's `enrich` room runs them.

use serde::{Deserialize, Deserializer, de};

use crate::error::ConfigError;
use crate::values::{Duration, GlobPattern};

/// Pod labels copied by default: the ones workloads commonly set to say what
/// they are, not the ones controllers add per replica (`pod-template-hash`).
pub const DEFAULT_POD_LABELS: &[&str] = &[
    "app",
    "app.kubernetes.io/*",
    "k8s-app",
    "component",
    "tier",
    "version",
];

/// Whether the agent watches the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KubeEnabled {
    /// On when the agent runs in a pod (`KUBERNETES_SERVICE_HOST` is set) or
    /// `api_server` is given.
    #[default]
    Auto,
    /// Always on.
    On,
    /// Always off: records carry what their file path says.
    Off,
}

impl<'de> Deserialize<'de> for KubeEnabled {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            B(bool),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::B(true) => Ok(KubeEnabled::On),
            Raw::B(false) => Ok(KubeEnabled::Off),
            Raw::S(s) => match s.as_str() {
                "auto" => Ok(KubeEnabled::Auto),
                "true" => Ok(KubeEnabled::On),
                "false" => Ok(KubeEnabled::Off),
                other => Err(de::Error::custom(format!(
                    "expected auto, true or false, found {other:?}"
                ))),
            },
        }
    }
}

/// Pod metadata enrichment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// `auto` (default): on when `KUBERNETES_SERVICE_HOST` is set (the agent
    /// runs in a pod) or `api_server` is given; `true`; `false`.
    #[serde(default)]
    pub enabled: KubeEnabled,
    /// The node whose pods are watched (field selector `spec.nodeName`).
    /// Default: the top-level `node_name`, else the `NODE_NAME` environment
    /// variable (set it from the downward API's `spec.nodeName`). Enrichment
    /// that is on without a node name is refused at start-up.
    #[serde(default)]
    pub node_name: Option<String>,
    /// URL of the API server (`http://127.0.0.1:8001` behind `kubectl proxy`);
    /// no credentials are sent to it. Default: the in-cluster service account
    /// (`KUBERNETES_SERVICE_HOST`, the mounted token and CA), else the
    /// kubeconfig (`KUBECONFIG`, `~/.kube/config`).
    #[serde(default)]
    pub api_server: Option<String>,
    /// Pod label keys copied as `k8s.pod.label.<key>`; globs (`*` spans
    /// `/` too). Default `app`, `app.kubernetes.io/*`, `k8s-app`,
    /// `component`, `tier`, `version`: every key copied is a label of the
    /// index, so keep per-replica labels out.
    #[serde(default = "default_pod_labels")]
    pub pod_labels: Vec<GlobPattern>,
    /// Pod annotation keys copied as `k8s.pod.annotation.<key>`; globs.
    /// Default none.
    #[serde(default)]
    pub pod_annotations: Vec<GlobPattern>,
    /// Namespace label keys copied as `k8s.namespace.label.<key>`; globs.
    /// Default none.
    #[serde(default)]
    pub namespace_labels: Vec<GlobPattern>,
    /// How long a deleted pod's metadata stays, for the last lines of its
    /// files and its last events; a newer pod with the same IP always wins
    /// over it. Default 60s.
    #[serde(default = "default_delay_deletion")]
    pub delay_deletion: Duration,
    /// How long a new log file whose pod is not in the cache yet waits for
    /// its metadata before its lines go out with what the path says (other
    /// files are read meanwhile). `0s` never waits. Default 2s.
    #[serde(default = "default_wait_for_metadata")]
    pub wait_for_metadata: Duration,
    /// How long one watch request stays open before the agent renews it
    /// (the API server's `timeoutSeconds`). Default 5m.
    #[serde(default = "default_watch_timeout")]
    pub watch_timeout: Duration,
    /// First wait after a failed API request; doubled after each failure in
    /// a row. Default 500ms.
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial: Duration,
    /// Longest wait between retries of a failing API server. Default 30s.
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Duration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            enabled: KubeEnabled::Auto,
            node_name: None,
            api_server: None,
            pod_labels: default_pod_labels(),
            pod_annotations: Vec::new(),
            namespace_labels: Vec::new(),
            delay_deletion: default_delay_deletion(),
            wait_for_metadata: default_wait_for_metadata(),
            watch_timeout: default_watch_timeout(),
            backoff_initial: default_backoff_initial(),
            backoff_max: default_backoff_max(),
        }
    }
}

impl KubernetesConfig {
    /// Whether enrichment runs, given whether `KUBERNETES_SERVICE_HOST` is set.
    pub fn is_enabled(&self, in_cluster: bool) -> bool {
        match self.enabled {
            KubeEnabled::On => true,
            KubeEnabled::Off => false,
            KubeEnabled::Auto => in_cluster || self.api_server.is_some(),
        }
    }

    /// The node name to watch: this section's, else the top-level one, else
    /// `env_node` (the `NODE_NAME` variable). Empty names count as unset.
    pub fn effective_node_name<'a>(
        &'a self,
        top_level: Option<&'a str>,
        env_node: Option<&'a str>,
    ) -> Option<&'a str> {
        [self.node_name.as_deref(), top_level, env_node]
            .into_iter()
            .flatten()
            .map(str::trim)
            .find(|n| !n.is_empty())
    }

    /// Checks what one key alone cannot.
    pub(crate) fn check(
        &self,
        fail: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if let Some(url) = &self.api_server
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(fail(
                "agent.kubernetes.api_server".into(),
                format!("expected a URL such as https://10.0.0.1:443, found {url:?}"),
            ));
        }
        if self.watch_timeout.0 < std::time::Duration::from_secs(1) {
            return Err(fail(
                "agent.kubernetes.watch_timeout".into(),
                format!(
                    "expected at least 1s, found {}ms",
                    self.watch_timeout.0.as_millis()
                ),
            ));
        }
        if self.backoff_initial.0.is_zero() || self.backoff_initial.0 > self.backoff_max.0 {
            return Err(fail(
                "agent.kubernetes.backoff_initial".into(),
                format!(
                    "expected more than 0s and at most backoff_max ({}ms), found {}ms",
                    self.backoff_max.0.as_millis(),
                    self.backoff_initial.0.as_millis()
                ),
            ));
        }
        Ok(())
    }
}

fn default_pod_labels() -> Vec<GlobPattern> {
    DEFAULT_POD_LABELS
        .iter()
        .map(|s| GlobPattern((*s).to_string()))
        .collect()
}
fn default_delay_deletion() -> Duration {
    Duration(std::time::Duration::from_secs(60))
}
fn default_wait_for_metadata() -> Duration {
    Duration(std::time::Duration::from_secs(2))
}
fn default_watch_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(300))
}
fn default_backoff_initial() -> Duration {
    Duration(std::time::Duration::from_millis(500))
}
fn default_backoff_max() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConfigError;

    fn parse(text: &str) -> Result<crate::Config, ConfigError> {
        crate::parse("mecha.yaml", text, &|_| None)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let k = KubernetesConfig::default();
        assert_eq!(k.enabled, KubeEnabled::Auto);
        assert!(!k.is_enabled(false));
        assert!(k.is_enabled(true));
        let labels: Vec<&str> = k.pod_labels.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(labels, DEFAULT_POD_LABELS);
        assert!(k.pod_annotations.is_empty() && k.namespace_labels.is_empty());
        assert_eq!(k.delay_deletion.0.as_secs(), 60);
        assert_eq!(k.wait_for_metadata.0.as_secs(), 2);
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(
            "agent:\n  kubernetes:\n    enabled: true\n    node_name: node-1\n    api_server: http://127.0.0.1:8001\n    pod_labels: [\"team\"]\n    pod_annotations: [\"prometheus.io/*\"]\n    namespace_labels: [\"*\"]\n    delay_deletion: 5s\n    wait_for_metadata: 0s\n    watch_timeout: 30s\n    backoff_initial: 100ms\n    backoff_max: 1s\n",
        );
        let k = match c {
            Ok(c) => c.agent.kubernetes,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(k.enabled, KubeEnabled::On);
        assert_eq!(k.node_name.as_deref(), Some("node-1"));
        assert_eq!(k.api_server.as_deref(), Some("http://127.0.0.1:8001"));
        assert_eq!(k.pod_labels, [GlobPattern("team".into())]);
        assert_eq!(k.pod_annotations, [GlobPattern("prometheus.io/*".into())]);
        assert_eq!(k.delay_deletion.0.as_secs(), 5);
        assert!(k.wait_for_metadata.0.is_zero());
        assert_eq!(k.backoff_max.0.as_secs(), 1);
    }

    #[test]
    fn enabled_takes_auto_and_booleans_as_words_or_yaml() {
        for (text, want) in [
            ("auto", KubeEnabled::Auto),
            ("true", KubeEnabled::On),
            ("\"true\"", KubeEnabled::On),
            ("false", KubeEnabled::Off),
            ("\"false\"", KubeEnabled::Off),
        ] {
            let c = parse(&format!("agent:\n  kubernetes:\n    enabled: {text}\n"));
            assert_eq!(c.map(|c| c.agent.kubernetes.enabled), Ok(want), "{text}");
        }
        let e = parse("agent:\n  kubernetes:\n    enabled: sometimes\n");
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("mecha.yaml:3: agent.kubernetes.enabled: expected auto, true or false"),
            "{msg}"
        );
    }

    #[test]
    fn node_name_falls_back_to_the_top_level_then_the_environment() {
        let mut k = KubernetesConfig::default();
        assert_eq!(k.effective_node_name(None, Some("env")), Some("env"));
        assert_eq!(k.effective_node_name(Some(""), Some("env")), Some("env"));
        assert_eq!(k.effective_node_name(Some("top"), Some("env")), Some("top"));
        k.node_name = Some("own".into());
        assert_eq!(k.effective_node_name(Some("top"), Some("env")), Some("own"));
        k.node_name = Some(" ".into());
        assert_eq!(k.effective_node_name(None, None), None);
    }

    #[test]
    fn mistakes_name_line_and_key() {
        for (text, line, key) in [
            (
                "agent:\n  kubernetes:\n    api_server: apiserver:6443\n",
                3,
                "agent.kubernetes.api_server",
            ),
            (
                "agent:\n  kubernetes:\n    pod_labels: [\"[\"]\n",
                3,
                "agent.kubernetes.pod_labels[0]",
            ),
            (
                "agent:\n  kubernetes:\n    backoff_initial: 1m\n",
                3,
                "agent.kubernetes.backoff_initial",
            ),
            (
                "agent:\n  kubernetes:\n    watch_timeout: 10ms\n",
                3,
                "agent.kubernetes.watch_timeout",
            ),
            (
                "agent:\n  kubernetes:\n    labels: []\n",
                3,
                "agent.kubernetes.labels",
            ),
        ] {
            match parse(text) {
                Err(ConfigError::Invalid {
                    line: l, key: k, ..
                }) => {
                    assert_eq!((l, k.as_str()), (line, key), "{text}")
                }
                other => panic!("expected an error for {text:?}, got {other:?}"),
            }
        }
    }
}
