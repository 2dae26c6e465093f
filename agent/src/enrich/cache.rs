//! The pod cache: this node's pods and every namespace, as the watches last
//! saw them, found by pod uid, runtime container id, namespace and name, or
//! IP.
//!
//! A deleted pod stays for `delay_deletion`, so that the last lines of its
//! files and its last events still find it; but an IP or a name that a newer
//! pod claims belongs to the newer pod at once: a deleted pod never shadows
//! its successor. Readers (the tail's blocking rounds, the Sentry handlers)
//! take a read lock for one lookup; a generation number lets them skip even
//! that while nothing changed. The cache reads no clock: callers pass `now`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use super::meta::{NamespaceMeta, PodMeta, Resolved};
use crate::metrics::AgentMetrics;

/// How a log file names its pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodKey {
    /// Pod uid (`/var/log/pods/<ns>_<pod>_<uid>/...`).
    pub uid: Option<String>,
    /// Runtime container id (`/var/log/containers/..-<id>.log`).
    pub container_id: Option<String>,
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
}

struct PodEntry {
    resolved: Arc<Resolved>,
    deleted_at: Option<Instant>,
}

/// Who holds an IP: the newest pod that claimed it, and since when it is free.
struct Claim {
    uid: String,
    created_s: i64,
    released_at: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    pods: HashMap<String, PodEntry>,
    by_container: HashMap<String, String>,
    by_name: HashMap<(String, String), Claim>,
    by_ip: HashMap<IpAddr, Claim>,
    namespaces: HashMap<String, Arc<NamespaceMeta>>,
}

/// This node's pods and the cluster's namespaces.
pub struct PodCache {
    inner: RwLock<Inner>,
    generation: AtomicU64,
    delay_deletion: Duration,
    metrics: Arc<AgentMetrics>,
}

impl PodCache {
    /// An empty cache keeping deleted pods for `delay_deletion`.
    pub fn new(delay_deletion: Duration, metrics: Arc<AgentMetrics>) -> Self {
        PodCache {
            inner: RwLock::new(Inner::default()),
            generation: AtomicU64::new(0),
            delay_deletion,
            metrics,
        }
    }

    /// Changes with every change of the cache's content.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A writer that panicked left plain maps behind: still usable.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self, inner: &Inner) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.metrics
            .kube_cache_pods
            .set(i64::try_from(inner.pods.len()).unwrap_or(i64::MAX));
        self.metrics
            .kube_cache_namespaces
            .set(i64::try_from(inner.namespaces.len()).unwrap_or(i64::MAX));
    }

    /// Adds or updates a pod.
    pub fn apply_pod(&self, meta: PodMeta, now: Instant) {
        let mut inner = self.write();
        if inner.apply_pod(meta, now) {
            self.changed(&inner);
        }
    }

    /// Marks a pod deleted: it is still found for `delay_deletion`, unless a
    /// newer pod claims its IP or name.
    pub fn delete_pod(&self, uid: &str, now: Instant) {
        let mut inner = self.write();
        if inner.delete_pod(uid, now) {
            self.changed(&inner);
        }
    }

    /// Replaces every pod with those of a fresh list: pods missing from it
    /// were deleted while the watch was away.
    pub fn replace_pods(&self, metas: Vec<PodMeta>, now: Instant) {
        let mut inner = self.write();
        let listed: HashSet<String> = metas.iter().map(|m| m.uid.clone()).collect();
        let mut any = false;
        for m in metas {
            any |= inner.apply_pod(m, now);
        }
        let gone: Vec<String> = inner
            .pods
            .iter()
            .filter(|(uid, e)| e.deleted_at.is_none() && !listed.contains(*uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in gone {
            any |= inner.delete_pod(&uid, now);
        }
        if any {
            self.changed(&inner);
        }
    }

    /// Adds or updates a namespace.
    pub fn apply_namespace(&self, meta: NamespaceMeta) {
        let mut inner = self.write();
        if inner.apply_namespace(Some(meta.name.clone()), Some(meta)) {
            self.changed(&inner);
        }
    }

    /// Forgets a namespace.
    pub fn delete_namespace(&self, name: &str) {
        let mut inner = self.write();
        if inner.apply_namespace(Some(name.to_owned()), None) {
            self.changed(&inner);
        }
    }

    /// Replaces every namespace with those of a fresh list.
    pub fn replace_namespaces(&self, metas: Vec<NamespaceMeta>) {
        let mut inner = self.write();
        let listed: HashSet<String> = metas.iter().map(|m| m.name.clone()).collect();
        let mut any = false;
        for m in metas {
            any |= inner.apply_namespace(Some(m.name.clone()), Some(m));
        }
        let gone: Vec<String> = inner
            .namespaces
            .keys()
            .filter(|n| !listed.contains(*n))
            .cloned()
            .collect();
        for n in gone {
            any |= inner.apply_namespace(Some(n), None);
        }
        if any {
            self.changed(&inner);
        }
    }

    /// Drops pods deleted, and IPs released, longer than `delay_deletion` ago.
    pub fn prune(&self, now: Instant) {
        let delay = self.delay_deletion;
        let expired =
            |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) > delay);
        if !self.read().pods.values().any(|e| expired(e.deleted_at))
            && !self.read().by_ip.values().any(|c| expired(c.released_at))
        {
            return;
        }
        let mut inner = self.write();
        let gone: HashSet<String> = inner
            .pods
            .iter()
            .filter(|(_, e)| expired(e.deleted_at))
            .map(|(uid, _)| uid.clone())
            .collect();
        inner.pods.retain(|uid, _| !gone.contains(uid));
        inner.by_container.retain(|_, uid| !gone.contains(uid));
        inner.by_name.retain(|_, c| !gone.contains(&c.uid));
        inner
            .by_ip
            .retain(|_, c| !expired(c.released_at) && !gone.contains(&c.uid));
        self.changed(&inner);
    }

    /// The pod a log file belongs to: by uid, else by container id, else by
    /// namespace and name.
    pub fn lookup(&self, key: &PodKey) -> Option<Arc<Resolved>> {
        let inner = self.read();
        let by_uid = key.uid.as_ref().and_then(|u| inner.pods.get(u));
        let by_container = || {
            key.container_id
                .as_ref()
                .and_then(|id| inner.by_container.get(id))
                .and_then(|uid| inner.pods.get(uid))
        };
        let by_name = || {
            // A uid in the path is authoritative: a same-named pod with
            // another uid is not this file's pod.
            if key.uid.is_some() {
                return None;
            }
            inner
                .by_name
                .get(&(key.namespace.clone(), key.name.clone()))
                .and_then(|c| inner.pods.get(&c.uid))
        };
        by_uid
            .or_else(by_container)
            .or_else(by_name)
            .map(|e| e.resolved.clone())
    }

    /// The pod that has (or, within `delay_deletion`, last had) `ip`.
    pub fn by_ip(&self, ip: IpAddr, now: Instant) -> Option<Arc<Resolved>> {
        let inner = self.read();
        let claim = inner.by_ip.get(&ip)?;
        if claim
            .released_at
            .is_some_and(|t| now.saturating_duration_since(t) > self.delay_deletion)
        {
            return None;
        }
        inner.pods.get(&claim.uid).map(|e| e.resolved.clone())
    }

    /// Pods in the cache (deleted ones still kept included).
    pub fn pods(&self) -> usize {
        self.read().pods.len()
    }
}

impl Inner {
    /// Whether `created_s`/`uid` may take over a claim.
    fn wins(claim: &Claim, uid: &str, created_s: i64) -> bool {
        claim.uid == uid || claim.released_at.is_some() || claim.created_s <= created_s
    }

    fn apply_pod(&mut self, meta: PodMeta, now: Instant) -> bool {
        let uid = meta.uid.clone();
        if let Some(old) = self.pods.get(&uid)
            && old.deleted_at.is_none()
            && *old.resolved.pod == meta
        {
            return false;
        }
        let previous_ips: Vec<IpAddr> = self
            .pods
            .get(&uid)
            .map(|e| e.resolved.pod.ips.clone())
            .unwrap_or_default();
        for ip in previous_ips.iter().filter(|ip| !meta.ips.contains(ip)) {
            // The pod gave the IP up (it finished): free after the delay.
            if let Some(c) = self.by_ip.get_mut(ip)
                && c.uid == uid
                && c.released_at.is_none()
            {
                c.released_at = Some(now);
            }
        }
        for ip in &meta.ips {
            let take = self
                .by_ip
                .get(ip)
                .is_none_or(|c| Self::wins(c, &uid, meta.created_s));
            if take {
                self.by_ip.insert(*ip, claim(&meta));
            }
        }
        let name = (meta.namespace.clone(), meta.name.clone());
        if self
            .by_name
            .get(&name)
            .is_none_or(|c| Self::wins(c, &uid, meta.created_s))
        {
            self.by_name.insert(name, claim(&meta));
        }
        for id in &meta.container_ids {
            self.by_container.insert(id.clone(), uid.clone());
        }
        let ns = self.namespaces.get(&meta.namespace).cloned();
        let resolved = Arc::new(Resolved::new(Arc::new(meta), ns));
        self.pods.insert(
            uid,
            PodEntry {
                resolved,
                deleted_at: None,
            },
        );
        true
    }

    fn delete_pod(&mut self, uid: &str, now: Instant) -> bool {
        let Some(entry) = self.pods.get_mut(uid) else {
            return false;
        };
        if entry.deleted_at.is_some() {
            return false;
        }
        entry.deleted_at = Some(now);
        let pod = entry.resolved.pod.clone();
        for ip in &pod.ips {
            if let Some(c) = self.by_ip.get_mut(ip)
                && c.uid == uid
                && c.released_at.is_none()
            {
                c.released_at = Some(now);
            }
        }
        if let Some(c) = self
            .by_name
            .get_mut(&(pod.namespace.clone(), pod.name.clone()))
            && c.uid == uid
        {
            c.released_at = Some(now);
        }
        true
    }

    /// Sets (`Some`) or removes (`None`) namespace `name` and joins its
    /// pods anew.
    fn apply_namespace(&mut self, name: Option<String>, meta: Option<NamespaceMeta>) -> bool {
        let Some(name) = name else { return false };
        let old = self.namespaces.get(&name);
        if old.map(|o| &**o) == meta.as_ref() {
            return false;
        }
        let new = meta.map(Arc::new);
        match &new {
            Some(m) => {
                self.namespaces.insert(name.clone(), m.clone());
            }
            None => {
                self.namespaces.remove(&name);
            }
        }
        for e in self.pods.values_mut() {
            if e.resolved.pod.namespace == name {
                e.resolved = Arc::new(Resolved::new(e.resolved.pod.clone(), new.clone()));
            }
        }
        true
    }
}

fn claim(meta: &PodMeta) -> Claim {
    Claim {
        uid: meta.uid.clone(),
        created_s: meta.created_s,
        released_at: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::enrich::meta::Directives;

    fn pod(uid: &str, name: &str, ip: Option<&str>, created_s: i64) -> PodMeta {
        PodMeta {
            uid: uid.into(),
            namespace: "shop".into(),
            name: name.into(),
            created_s,
            ips: ip.map(|i| i.parse().unwrap()).into_iter().collect(),
            container_ids: vec![format!("cid-{uid}")],
            attrs: vec![("k8s.pod.uid".into(), uid.into())],
            images: Default::default(),
            directives: Directives::default(),
        }
    }

    fn cache() -> PodCache {
        PodCache::new(Duration::from_secs(60), Arc::new(AgentMetrics::new()))
    }

    fn uid_at(c: &PodCache, ip: &str, now: Instant) -> Option<String> {
        c.by_ip(ip.parse().unwrap(), now).map(|r| r.pod.uid.clone())
    }

    fn key(uid: Option<&str>, cid: Option<&str>, name: &str) -> PodKey {
        PodKey {
            uid: uid.map(str::to_owned),
            container_id: cid.map(str::to_owned),
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_deleted_pod_is_kept_for_the_delay_then_pruned() {
        let c = cache();
        let t0 = Instant::now();
        c.apply_pod(pod("a", "web-0", Some("10.0.0.1"), 1), t0);
        c.delete_pod("a", t0);
        let later = t0 + Duration::from_secs(59);
        assert_eq!(uid_at(&c, "10.0.0.1", later).as_deref(), Some("a"));
        c.prune(later);
        assert!(c.lookup(&key(Some("a"), None, "web-0")).is_some());
        let after = t0 + Duration::from_secs(61);
        assert_eq!(uid_at(&c, "10.0.0.1", after), None);
        c.prune(after);
        assert!(c.lookup(&key(Some("a"), None, "web-0")).is_none());
        assert_eq!(c.pods(), 0);
    }

    #[test]
    fn a_newer_pod_with_a_reused_ip_is_never_shadowed_by_the_deleted_one() {
        let c = cache();
        let t0 = Instant::now();
        c.apply_pod(pod("old", "web-0", Some("10.0.0.1"), 1), t0);
        c.delete_pod("old", t0);
        c.apply_pod(pod("new", "web-0", Some("10.0.0.1"), 2), t0);
        assert_eq!(uid_at(&c, "10.0.0.1", t0).as_deref(), Some("new"));
        // The old pod's late update or delete does not take the IP back.
        c.apply_pod(pod("old", "web-0", Some("10.0.0.1"), 1), t0);
        c.delete_pod("old", t0);
        assert_eq!(uid_at(&c, "10.0.0.1", t0).as_deref(), Some("new"));
        // Nor does its name: a path without uid finds the new pod.
        let named = c.lookup(&key(None, None, "web-0")).unwrap();
        assert_eq!(named.pod.uid, "new");
        // The old pod's files still find the old pod by uid or container id.
        assert_eq!(
            c.lookup(&key(Some("old"), None, "web-0")).unwrap().pod.uid,
            "old"
        );
        let by_cid = c.lookup(&key(None, Some("cid-old"), "web-0")).unwrap();
        assert_eq!(by_cid.pod.uid, "old");
        // Pruning the old pod leaves the new one's IP alone.
        c.prune(t0 + Duration::from_secs(120));
        assert_eq!(
            uid_at(&c, "10.0.0.1", t0 + Duration::from_secs(120)).as_deref(),
            Some("new")
        );
    }

    #[test]
    fn a_relist_deletes_what_it_no_longer_lists() {
        let c = cache();
        let t0 = Instant::now();
        c.apply_pod(pod("a", "a", Some("10.0.0.1"), 1), t0);
        c.apply_pod(pod("b", "b", Some("10.0.0.2"), 1), t0);
        let g = c.generation();
        c.replace_pods(vec![pod("b", "b", Some("10.0.0.2"), 1)], t0);
        assert_ne!(c.generation(), g);
        c.prune(t0 + Duration::from_secs(61));
        assert!(c.lookup(&key(Some("a"), None, "a")).is_none());
        assert!(c.lookup(&key(Some("b"), None, "b")).is_some());
    }

    #[test]
    fn an_unchanged_pod_does_not_move_the_generation() {
        let c = cache();
        let t0 = Instant::now();
        c.apply_pod(pod("a", "a", None, 1), t0);
        let g = c.generation();
        c.apply_pod(pod("a", "a", None, 1), t0);
        c.replace_pods(vec![pod("a", "a", None, 1)], t0);
        assert_eq!(c.generation(), g);
    }

    #[test]
    fn a_finished_pod_frees_its_ip_after_the_delay() {
        let c = cache();
        let t0 = Instant::now();
        c.apply_pod(pod("job", "job-x", Some("10.0.0.9"), 1), t0);
        c.apply_pod(pod("job", "job-x", None, 1), t0);
        assert_eq!(uid_at(&c, "10.0.0.9", t0).as_deref(), Some("job"));
        assert_eq!(uid_at(&c, "10.0.0.9", t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn namespace_changes_rejoin_its_pods() {
        let c = cache();
        let t0 = Instant::now();
        c.apply_pod(pod("a", "a", None, 1), t0);
        c.apply_namespace(NamespaceMeta {
            name: "shop".into(),
            attrs: vec![("k8s.namespace.label.team".into(), "x".into())],
            exclude: false,
        });
        let r = c.lookup(&key(Some("a"), None, "a")).unwrap();
        assert_eq!(r.resource.get("k8s.namespace.label.team"), Some("x"));
        c.replace_namespaces(Vec::new());
        let r = c.lookup(&key(Some("a"), None, "a")).unwrap();
        assert_eq!(r.resource.get("k8s.namespace.label.team"), None);
    }
}
