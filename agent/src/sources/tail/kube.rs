//! The tail's side of pod metadata: which pod a file belongs to (by the
//! kubelet path), the resource its records carry, and whether its pod's
//! annotations exclude it or choose its parser.
//!
//! A file's pod is looked up when its decoder is made and again whenever the
//! cache changes (a generation number makes the check free otherwise), so a
//! file read while the API server was away gets its metadata once the cache
//! catches up, and label changes reach the following records. Nothing here
//! waits: the tailer decides how long a new file may wait for its pod.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mecha_parsers::Resource;
use mecha_parsers::kubepath::KubePath;

use crate::enrich::{FileSettings, KubeMeta, Resolved};

/// One file's pod, as the cache last said.
pub(super) struct FileKube {
    kube: Arc<KubeMeta>,
    path: KubePath,
    /// What the path says (namespace, pod, container, ids, node).
    base: Resource,
    generation: u64,
    resolved: Option<Arc<Resolved>>,
}

impl FileKube {
    /// Looks up the pod of the file at `path`, whose path-derived resource is
    /// `base`.
    pub fn new(kube: Arc<KubeMeta>, path: KubePath, base: Resource) -> Self {
        let generation = kube.generation();
        let resolved = kube.for_file(&path);
        FileKube {
            kube,
            path,
            base,
            generation,
            resolved,
        }
    }

    /// The resource of the file's records.
    pub fn resource(&self) -> Resource {
        match &self.resolved {
            Some(r) => r.file_resource(&self.base, &self.path.container),
            None => self.base.clone(),
        }
    }

    /// How the pod's annotations want the file collected.
    pub fn settings(&self) -> FileSettings {
        self.resolved
            .as_ref()
            .map(|r| r.settings(&self.path.container))
            .unwrap_or_default()
    }

    /// Whether the pod was found.
    pub fn found(&self) -> bool {
        self.resolved.is_some()
    }

    /// Looks again if the cache changed; `true` when the file's pod did.
    pub fn refresh(&mut self) -> bool {
        let generation = self.kube.generation();
        if generation == self.generation {
            return false;
        }
        self.generation = generation;
        let now = self.kube.for_file(&self.path);
        let same = match (&now, &self.resolved) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        // A pod pruned from the cache keeps its last metadata: the file's
        // last lines still belong to it.
        if same || now.is_none() {
            return false;
        }
        self.resolved = now;
        true
    }

    /// Counts `n` records sent without metadata, if the pod is unknown.
    pub fn count_without(&self, n: u64) {
        if !self.found() {
            self.kube.without_metadata(super::COMPONENT, n);
        }
    }
}

/// Whether a file opened at `opened` (named `path`) should wait for its pod
/// to appear in the cache before it is read.
pub(super) fn should_wait(
    kube: &KubeMeta,
    path: Option<&KubePath>,
    opened: Instant,
    now: Instant,
) -> bool {
    let wait = kube.wait_for_metadata();
    if wait == Duration::ZERO {
        return false;
    }
    let Some(path) = path else { return false };
    now.saturating_duration_since(opened) < wait && kube.for_file(path).is_none()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) mod tests {
    use super::*;
    use crate::enrich::{PodCache, Selectors, meta};
    use crate::metrics::AgentMetrics;
    use mecha_parsers::kubepath::parse_kube_path;
    use mecha_parsers::model::keys;

    pub(in crate::sources::tail) const CID: &str =
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// Pod `shop/web-0` (uid `u-1`) with one container `app`.
    pub(in crate::sources::tail) fn pod(
        labels: serde_json::Value,
        annotations: serde_json::Value,
    ) -> meta::PodMeta {
        let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "u-1",
                         "labels": labels, "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "web:2"}]},
            "status": {"containerStatuses": [{"name": "app", "image": "web:2", "imageID": "",
                        "ready": true, "restartCount": 0, "containerID": format!("containerd://{CID}")}]}
        }))
        .unwrap();
        let sel = Selectors::new(&["app".into()], &[], &[]).unwrap();
        meta::pod_meta(&p, &sel).unwrap()
    }

    /// An empty cache, its `KubeMeta`, and the kubelet path of `web-0`'s `app`.
    pub(in crate::sources::tail) fn setup(
        wait: Duration,
    ) -> (Arc<PodCache>, Arc<KubeMeta>, KubePath, Resource) {
        let metrics = Arc::new(AgentMetrics::new());
        let cache = Arc::new(PodCache::new(Duration::from_secs(60), metrics.clone()));
        let kube = Arc::new(KubeMeta::new(cache.clone(), wait, metrics));
        let path =
            parse_kube_path(&format!("/var/log/containers/web-0_shop_app-{CID}.log")).unwrap();
        let mut base = Resource::default();
        path.apply(&mut base);
        (cache, kube, path, base)
    }

    #[test]
    fn a_file_gets_its_pod_once_the_cache_has_it_and_follows_its_changes() {
        let (cache, kube, path, base) = setup(Duration::from_secs(2));
        let mut f = FileKube::new(kube.clone(), path, base);
        assert!(!f.found());
        assert_eq!(f.resource().get(keys::POD), Some("web-0"));
        assert_eq!(f.resource().get("k8s.pod.label.app"), None);
        assert!(!f.refresh(), "nothing changed");
        let t0 = Instant::now();
        cache.apply_pod(
            pod(serde_json::json!({"app": "v1"}), serde_json::json!({})),
            t0,
        );
        assert!(f.refresh());
        assert_eq!(f.resource().get("k8s.pod.label.app"), Some("v1"));
        assert_eq!(f.resource().get("container.image.name"), Some("web"));
        assert_eq!(f.resource().get(keys::CONTAINER), Some("app"));
        assert!(!f.settings().excluded);
        cache.apply_pod(
            pod(
                serde_json::json!({"app": "v2"}),
                serde_json::json!({"mecha.io/exclude": "true"}),
            ),
            t0,
        );
        assert!(f.refresh());
        assert_eq!(f.resource().get("k8s.pod.label.app"), Some("v2"));
        assert!(f.settings().excluded);
        // Deleted and pruned: the file keeps what it last knew.
        cache.delete_pod("u-1", t0);
        cache.prune(t0 + Duration::from_secs(61));
        assert!(!f.refresh());
        assert_eq!(f.resource().get("k8s.pod.label.app"), Some("v2"));
    }

    #[test]
    fn a_new_file_waits_for_its_pod_for_a_bounded_time_only() {
        let (cache, kube, path, _) = setup(Duration::from_secs(2));
        let t0 = Instant::now();
        assert!(should_wait(
            &kube,
            Some(&path),
            t0,
            t0 + Duration::from_secs(1)
        ));
        assert!(!should_wait(
            &kube,
            Some(&path),
            t0,
            t0 + Duration::from_secs(2)
        ));
        assert!(!should_wait(&kube, None, t0, t0), "not a kubelet path");
        cache.apply_pod(pod(serde_json::json!({}), serde_json::json!({})), t0);
        assert!(!should_wait(&kube, Some(&path), t0, t0));
        let (_, never, path, _) = setup(Duration::ZERO);
        assert!(!should_wait(&never, Some(&path), t0, t0));
    }
}
