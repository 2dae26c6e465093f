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
        if self.resolved.is_none() {
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
