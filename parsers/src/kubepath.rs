//! Kubernetes identity from a log file's path: the kubelet's
//! `/var/log/containers/<pod>_<namespace>_<container>-<id>.log` symlinks and
//! the `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<N>.log` files they
//! point to.
//!
//! Hand-written on purpose, matching only the last path components so that any
//! mount prefix (and test temp dirs) work. This module reads names; it must not
//! touch the filesystem or decide which files are tailed.

use crate::model::{Resource, keys};

/// What a log file's path says about its container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubePath {
    /// Namespace of the pod.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// Runtime container id (64 hex digits), from `/var/log/containers` names.
    pub container_id: Option<String>,
    /// Pod uid, from `/var/log/pods` directories.
    pub pod_uid: Option<String>,
    /// Restart count (the `N` of `N.log`), from `/var/log/pods` files.
    pub restart_count: Option<u32>,
}

impl KubePath {
    /// Sets the namespace, pod, container and, when known, container id, pod
    /// uid and restart count on `resource`.
    pub fn apply(&self, resource: &mut Resource) {
        resource.set(keys::NAMESPACE, self.namespace.clone());
        resource.set(keys::POD, self.pod.clone());
        resource.set(keys::CONTAINER, self.container.clone());
        if let Some(id) = &self.container_id {
            resource.set(keys::CONTAINER_ID, id.clone());
        }
        if let Some(uid) = &self.pod_uid {
            resource.set(keys::POD_UID, uid.clone());
        }
        if let Some(n) = self.restart_count {
            resource.set(keys::CONTAINER_RESTART, n.to_string());
        }
    }
}

/// Reads the pod identity from a kubelet log path; `None` when the path has
/// neither layout.
///
/// ```
/// use mecha_parsers::kubepath::parse_kube_path;
///
/// let p = parse_kube_path("/var/log/pods/shop_web-0_1b2c3d4e-0000-4000-8000-000000000000/nginx/2.log");
/// let p = p.ok_or("not a kubelet path")?;
/// assert_eq!((p.namespace.as_str(), p.pod.as_str(), p.container.as_str()), ("shop", "web-0", "nginx"));
/// assert_eq!(p.restart_count, Some(2));
/// # Ok::<(), &str>(())
/// ```
pub fn parse_kube_path(path: &str) -> Option<KubePath> {
    let mut parts = path.rsplit('/');
    let file = parts.next()?;
    let parent = parts.next();
    let grandparent = parts.next();
    from_containers_name(file).or_else(|| from_pods_layout(grandparent?, parent?, file))
}

/// `<pod>_<namespace>_<container>-<64 hex>.log`. Container names contain `-`,
/// so the id is split off the end.
fn from_containers_name(file: &str) -> Option<KubePath> {
    let stem = file.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    if id.len() != 64 || !id.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut it = rest.split('_');
    let (pod, namespace, container) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || [pod, namespace, container].iter().any(|s| s.is_empty()) {
        return None;
    }
    Some(KubePath {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        container: container.to_string(),
        container_id: Some(id.to_string()),
        pod_uid: None,
        restart_count: None,
    })
}

/// `<namespace>_<pod>_<uid>/<container>/<N>.log[.<rotation suffix>]`.
fn from_pods_layout(pod_dir: &str, container: &str, file: &str) -> Option<KubePath> {
    let (n, suffix) = file.split_once(".log")?;
    if !suffix.is_empty() && !suffix.starts_with('.') {
        return None;
    }
    if n.is_empty() || n.len() > 10 || !n.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let restart_count: u32 = n.parse().ok()?;
    let mut it = pod_dir.split('_');
    let (namespace, pod, uid) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some()
        || [namespace, pod, uid, container]
            .iter()
            .any(|s| s.is_empty())
    {
        return None;
    }
    Some(KubePath {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        container: container.to_string(),
        container_id: None,
        pod_uid: Some(uid.to_string()),
        restart_count: Some(restart_count),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "9f2c5d1e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e";

    #[test]
    fn var_log_containers_symlink_name() {
        let p = parse_kube_path(&format!(
            "/var/log/containers/web-7d9f8c6b5-x2kqp_shop-prod_nginx-proxy-{ID}.log"
        ))
        .unwrap();
        assert_eq!(
            p,
            KubePath {
                namespace: "shop-prod".into(),
                pod: "web-7d9f8c6b5-x2kqp".into(),
                container: "nginx-proxy".into(),
                container_id: Some(ID.into()),
                pod_uid: None,
                restart_count: None,
            }
        );
    }

    #[test]
    fn pod_names_with_dots_and_any_prefix() {
        let p = parse_kube_path(&format!(
            "/tmp/.tmpA1b2/etcd-node1.example.com_kube-system_etcd-{ID}.log"
        ))
        .unwrap();
        assert_eq!(
            (p.pod.as_str(), p.namespace.as_str(), p.container.as_str()),
            ("etcd-node1.example.com", "kube-system", "etcd")
        );
    }

    #[test]
    fn var_log_pods_file_and_rotated_file() {
        let dir = "/var/log/pods/shop-prod_web-7d9f8c6b5-x2kqp_0b8e4c1a-3f2d-4e5b-9a7c-1d2e3f4a5b6c/nginx-proxy";
        let p = parse_kube_path(&format!("{dir}/3.log")).unwrap();
        assert_eq!(p.namespace, "shop-prod");
        assert_eq!(p.pod, "web-7d9f8c6b5-x2kqp");
        assert_eq!(p.container, "nginx-proxy");
        assert_eq!(
            p.pod_uid.as_deref(),
            Some("0b8e4c1a-3f2d-4e5b-9a7c-1d2e3f4a5b6c")
        );
        assert_eq!(p.restart_count, Some(3));
        assert_eq!(p.container_id, None);
        let rotated = parse_kube_path(&format!("{dir}/0.log.20240115-102030")).unwrap();
        assert_eq!(rotated.restart_count, Some(0));
    }

    #[test]
    fn apply_sets_resource_keys() {
        let mut r = Resource::default();
        parse_kube_path(&format!("/var/log/containers/a_b_c-{ID}.log"))
            .unwrap()
            .apply(&mut r);
        assert_eq!(r.get(keys::NAMESPACE), Some("b"));
        assert_eq!(r.get(keys::POD), Some("a"));
        assert_eq!(r.get(keys::CONTAINER), Some("c"));
        assert_eq!(r.get(keys::CONTAINER_ID), Some(ID));
        assert_eq!(r.get(keys::POD_UID), None);
        let mut r = Resource::default();
        parse_kube_path("/var/log/pods/ns_pod_uid/ctr/12.log")
            .unwrap()
            .apply(&mut r);
        assert_eq!(r.get(keys::CONTAINER_RESTART), Some("12"));
        assert_eq!(r.get(keys::POD_UID), Some("uid"));
    }

    #[test]
    fn other_paths_are_not_kubernetes() {
        for path in [
            "",
            "/",
            "/var/log/syslog",
            "/var/log/containers/no-id.log",
            &format!("/var/log/containers/a_b-{ID}.log"),
            &format!("/var/log/containers/a_b_c_d-{ID}.log"),
            &format!("/var/log/containers/_b_c-{ID}.log"),
            &format!("/var/log/containers/a_b_c-{}.log", &ID[1..]),
            "/var/log/pods/ns_pod_uid/ctr/x.log",
            "/var/log/pods/ns_pod/ctr/0.log",
            "/var/log/pods/ns_pod_uid/ctr/0.logfile",
            "/var/log/pods/ns_pod_uid/ctr/99999999999.log",
            "0.log",
        ] {
            assert_eq!(parse_kube_path(path), None, "{path}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(path in "\\PC{0,120}|(/[a-z0-9_.-]{0,20}){0,5}") {
            let _ = parse_kube_path(&path);
        }
    }
}
