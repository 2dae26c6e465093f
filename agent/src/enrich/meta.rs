//! What the agent keeps of a pod or namespace object: the resource attributes
//! it gives records (semantic-convention names, include lists applied), the
//! keys it is found by (uid, container ids, IPs) and the collection
//! directives of its `mecha.io/*` annotations.
//!
//! Pure functions over the API objects: no cache, no clock, no network.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use mecha_parsers::Resource;
use mecha_parsers::body::BodyFormat;
use mecha_parsers::model::keys;
use mecha_parsers::multiline::MultilineRule;

/// Resource attribute names of workloads and images (OpenTelemetry semantic
/// conventions), beside the ones in [`mecha_parsers::model::keys`].
pub mod attr {
    /// Deployment owning the pod's ReplicaSet.
    pub const DEPLOYMENT: &str = "k8s.deployment.name";
    /// ReplicaSet owning the pod.
    pub const REPLICASET: &str = "k8s.replicaset.name";
    /// StatefulSet owning the pod.
    pub const STATEFULSET: &str = "k8s.statefulset.name";
    /// DaemonSet owning the pod.
    pub const DAEMONSET: &str = "k8s.daemonset.name";
    /// Job owning the pod.
    pub const JOB: &str = "k8s.job.name";
    /// CronJob owning the pod's Job.
    pub const CRONJOB: &str = "k8s.cronjob.name";
    /// Image of the container, without its tag or digest.
    pub const IMAGE_NAME: &str = "container.image.name";
    /// Tag of the container's image.
    pub const IMAGE_TAG: &str = "container.image.tag";
    /// Prefix of copied pod labels.
    pub const POD_LABEL: &str = "k8s.pod.label.";
    /// Prefix of copied pod annotations.
    pub const POD_ANNOTATION: &str = "k8s.pod.annotation.";
    /// Prefix of copied namespace labels.
    pub const NAMESPACE_LABEL: &str = "k8s.namespace.label.";
}

/// The annotations a pod (or namespace) steers its collection with.
pub mod annotation {
    /// `"true"`: no log line of the pod (or of any pod of the namespace) is sent.
    pub const EXCLUDE: &str = "mecha.io/exclude";
    /// Comma-separated container names whose lines are not sent.
    pub const EXCLUDE_CONTAINERS: &str = "mecha.io/exclude-containers";
    /// Body format of every container of the pod.
    pub const PARSER: &str = "mecha.io/parser";
    /// `mecha.io/parser-<container>`: body format of one container.
    pub const PARSER_PREFIX: &str = "mecha.io/parser-";
    /// Multiline rule of the pod's files (`off` turns joining off).
    pub const MULTILINE: &str = "mecha.io/multiline";
}

/// The include lists of labels and annotations.
#[derive(Debug, Clone)]
pub struct Selectors {
    pod_labels: GlobSet,
    pod_annotations: GlobSet,
    namespace_labels: GlobSet,
}

impl Selectors {
    /// Compiles the globs; the first that does not compile is returned with
    /// its error.
    pub fn new(
        pod_labels: &[String],
        pod_annotations: &[String],
        namespace_labels: &[String],
    ) -> Result<Self, (String, String)> {
        Ok(Selectors {
            pod_labels: globs(pod_labels)?,
            pod_annotations: globs(pod_annotations)?,
            namespace_labels: globs(namespace_labels)?,
        })
    }
}

fn globs(patterns: &[String]) -> Result<GlobSet, (String, String)> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| (p.clone(), e.kind().to_string()))?);
    }
    b.build().map_err(|e| (patterns.join(","), e.to_string()))
}

/// Whether a file's multiline joining follows the source or an annotation.
#[derive(Debug, Clone)]
pub enum Multiline {
    /// `off`: no joining.
    Off,
    /// A named rule.
    Rule(MultilineRule),
}

impl PartialEq for Multiline {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Multiline::Off, Multiline::Off) => true,
            (Multiline::Rule(a), Multiline::Rule(b)) => rule_name(a) == rule_name(b),
            _ => false,
        }
    }
}

/// Annotations name built-in rules only, so a name identifies the rule.
fn rule_name(r: &MultilineRule) -> &str {
    match r {
        MultilineRule::Java => "java",
        MultilineRule::Python => "python",
        MultilineRule::Go => "go",
        MultilineRule::Node => "nodejs",
        MultilineRule::Builtin => "builtin",
        MultilineRule::Custom(re) => re.as_str(),
    }
}

/// The `mecha.io/*` annotations of a pod, read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Directives {
    /// `mecha.io/exclude: "true"` on the pod.
    pub exclude: bool,
    /// `mecha.io/exclude-containers`.
    pub exclude_containers: BTreeSet<String>,
    /// `mecha.io/parser`.
    pub parser: Option<BodyFormat>,
    /// `mecha.io/parser-<container>`, by container.
    pub container_parsers: BTreeMap<String, BodyFormat>,
    /// `mecha.io/multiline`.
    pub multiline: Option<Multiline>,
    /// Annotations whose value was not understood: (key, why). They are
    /// ignored and counted.
    pub invalid: Vec<(String, String)>,
}

/// What the agent keeps of one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodMeta {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.creationTimestamp` in seconds since the epoch (0 when
    /// unknown): of two pods claiming one IP or name, the newer wins.
    pub created_s: i64,
    /// Pod IPs, when the pod has its own network (not `hostNetwork`) and is
    /// not finished: a finished pod's IP is free for another pod.
    pub ips: Vec<IpAddr>,
    /// Runtime container ids (without `containerd://`), of every container.
    pub container_ids: Vec<String>,
    /// Pod-level resource attributes: namespace, name, uid, node, workload,
    /// selected labels and annotations.
    pub attrs: Vec<(String, String)>,
    /// Image of each container, by container name.
    pub images: BTreeMap<String, String>,
    /// Collection directives.
    pub directives: Directives,
}

/// What the agent keeps of one namespace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NamespaceMeta {
    /// `metadata.name`.
    pub name: String,
    /// Selected labels as `k8s.namespace.label.<key>`.
    pub attrs: Vec<(String, String)>,
    /// `mecha.io/exclude: "true"` on the namespace.
    pub exclude: bool,
}

/// A pod as records see it: its own metadata joined with its namespace's.
#[derive(Debug)]
pub struct Resolved {
    /// The pod.
    pub pod: Arc<PodMeta>,
    /// Its namespace, when known.
    pub namespace: Option<Arc<NamespaceMeta>>,
    /// Pod and namespace attributes as a resource (for push sources, whose
    /// container is not known).
    pub resource: Resource,
}

impl Resolved {
    /// Joins a pod and its namespace.
    pub fn new(pod: Arc<PodMeta>, namespace: Option<Arc<NamespaceMeta>>) -> Self {
        let mut resource = Resource::default();
        let attrs = Arc::make_mut(&mut resource.attributes);
        let ns_attrs = namespace.iter().flat_map(|n| n.attrs.iter());
        for (k, v) in pod.attrs.iter().chain(ns_attrs) {
            attrs.insert(k.clone(), v.clone());
        }
        Resolved {
            pod,
            namespace,
            resource,
        }
    }

    /// The collection settings of one of the pod's containers.
    pub fn settings(&self, container: &str) -> FileSettings {
        let d = &self.pod.directives;
        FileSettings {
            excluded: d.exclude
                || self.namespace.as_ref().is_some_and(|n| n.exclude)
                || d.exclude_containers.contains(container),
            body_format: d.container_parsers.get(container).copied().or(d.parser),
            multiline: d.multiline.clone(),
        }
    }

    /// `base` (what the file's path says) with the pod's attributes and the
    /// container's image.
    pub fn file_resource(&self, base: &Resource, container: &str) -> Resource {
        let mut r = base.clone();
        let attrs = Arc::make_mut(&mut r.attributes);
        for (k, v) in self.resource.attributes.iter() {
            attrs.insert(k.clone(), v.clone());
        }
        if let Some(image) = self.pod.images.get(container) {
            let (name, tag) = split_image(image);
            attrs.insert(attr::IMAGE_NAME.to_owned(), name.to_owned());
            if let Some(tag) = tag {
                attrs.insert(attr::IMAGE_TAG.to_owned(), tag.to_owned());
            }
        }
        r
    }
}

/// How one file is collected, as its pod's annotations say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileSettings {
    /// Its lines are dropped (counted as `excluded`).
    pub excluded: bool,
    /// Body format instead of the source's.
    pub body_format: Option<BodyFormat>,
    /// Multiline joining instead of the source's.
    pub multiline: Option<Multiline>,
}

/// `registry:5000/team/app:1.2@sha256:…` → (`registry:5000/team/app`, `1.2`).
fn split_image(image: &str) -> (&str, Option<&str>) {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last_slash = no_digest.rfind('/').map_or(0, |i| i + 1);
    match no_digest[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (&no_digest[..at], no_digest.get(at + 1..))
        }
        None => (no_digest, None),
    }
}

/// The characters of the random suffixes the ReplicaSet controller puts in
/// `pod-template-hash` (Kubernetes' `rand.SafeEncodeString` alphabet: no
/// vowels, no look-alike digits).
const SAFE_ENCODE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The Deployment of a ReplicaSet named `<deployment>-<pod-template-hash>`.
fn deployment_of(replicaset: &str, template_hash: Option<&str>) -> Option<String> {
    let (prefix, suffix) = replicaset.rsplit_once('-')?;
    let matches = match template_hash {
        Some(h) => suffix == h,
        None => !suffix.is_empty() && suffix.bytes().all(|b| SAFE_ENCODE.contains(&b)),
    };
    (matches && !prefix.is_empty()).then(|| prefix.to_owned())
}

/// The CronJob of a Job named `<cronjob>-<scheduled time in minutes>`.
fn cronjob_of(job: &str) -> Option<String> {
    let (prefix, suffix) = job.rsplit_once('-')?;
    (!prefix.is_empty() && !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()))
        .then(|| prefix.to_owned())
}

fn is_true(v: &str) -> bool {
    v.trim().eq_ignore_ascii_case("true")
}

fn directives(annotations: &BTreeMap<String, String>) -> Directives {
    let mut d = Directives::default();
    for (k, v) in annotations {
        let v = v.trim();
        if k == annotation::EXCLUDE {
            d.exclude = is_true(v);
        } else if k == annotation::EXCLUDE_CONTAINERS {
            d.exclude_containers = v
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
        } else if k == annotation::PARSER {
            match v.parse::<BodyFormat>() {
                Ok(f) => d.parser = Some(f),
                Err(e) => d.invalid.push((k.clone(), e.to_string())),
            }
        } else if let Some(container) = k.strip_prefix(annotation::PARSER_PREFIX) {
            match v.parse::<BodyFormat>() {
                Ok(f) => {
                    d.container_parsers.insert(container.to_owned(), f);
                }
                Err(e) => d.invalid.push((k.clone(), e.to_string())),
            }
        } else if k == annotation::MULTILINE {
            match v {
                "off" | "none" | "false" => d.multiline = Some(Multiline::Off),
                name => match name.parse::<MultilineRule>() {
                    Ok(r) => d.multiline = Some(Multiline::Rule(r)),
                    Err(e) => d.invalid.push((k.clone(), e.to_string())),
                },
            }
        }
    }
    d
}

fn copy_selected(
    from: Option<&BTreeMap<String, String>>,
    set: &GlobSet,
    prefix: &str,
    out: &mut Vec<(String, String)>,
) {
    if set.is_empty() {
        return;
    }
    for (k, v) in from.into_iter().flatten() {
        if set.is_match(k) {
            out.push((format!("{prefix}{k}"), v.clone()));
        }
    }
}

/// The runtime id of a `containerd://<id>` (or `docker://`, `cri-o://`) id.
fn runtime_id(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, rest)| rest)
}

/// What the agent keeps of `pod`; `None` when it lacks a uid, name or
/// namespace (the API server always sets them).
pub fn pod_meta(pod: &Pod, sel: &Selectors) -> Option<PodMeta> {
    let m = &pod.metadata;
    let uid = m.uid.clone().filter(|u| !u.is_empty())?;
    let name = m.name.clone().filter(|n| !n.is_empty())?;
    let namespace = m.namespace.clone().filter(|n| !n.is_empty())?;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let mut attrs = vec![
        (keys::NAMESPACE.to_owned(), namespace.clone()),
        (keys::POD.to_owned(), name.clone()),
        (keys::POD_UID.to_owned(), uid.clone()),
    ];
    if let Some(node) = spec.and_then(|s| s.node_name.clone()) {
        attrs.push((keys::NODE.to_owned(), node));
    }
    let owners = m.owner_references.as_deref().unwrap_or_default();
    let owner = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.first());
    if let Some(o) = owner {
        let labels = m.labels.as_ref();
        let hash = labels
            .and_then(|l| l.get("pod-template-hash"))
            .map(String::as_str);
        match o.kind.as_str() {
            "ReplicaSet" => {
                attrs.push((attr::REPLICASET.to_owned(), o.name.clone()));
                if let Some(d) = deployment_of(&o.name, hash) {
                    attrs.push((attr::DEPLOYMENT.to_owned(), d));
                }
            }
            "StatefulSet" => attrs.push((attr::STATEFULSET.to_owned(), o.name.clone())),
            "DaemonSet" => attrs.push((attr::DAEMONSET.to_owned(), o.name.clone())),
            "Job" => {
                attrs.push((attr::JOB.to_owned(), o.name.clone()));
                if let Some(c) = cronjob_of(&o.name) {
                    attrs.push((attr::CRONJOB.to_owned(), c));
                }
            }
            _ => {}
        }
    }
    copy_selected(
        m.labels.as_ref(),
        &sel.pod_labels,
        attr::POD_LABEL,
        &mut attrs,
    );
    copy_selected(
        m.annotations.as_ref(),
        &sel.pod_annotations,
        attr::POD_ANNOTATION,
        &mut attrs,
    );
    let containers = spec.into_iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    });
    let mut images: BTreeMap<String, String> = containers
        .filter_map(|c| Some((c.name.clone(), c.image.clone()?)))
        .collect();
    let statuses: Vec<_> = status
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
                .chain(s.ephemeral_container_statuses.iter().flatten())
        })
        .collect();
    for s in &statuses {
        // Ephemeral (debug) containers are only in the status.
        if !s.image.is_empty() {
            images
                .entry(s.name.clone())
                .or_insert_with(|| s.image.clone());
        }
    }
    let container_ids = statuses
        .iter()
        .filter_map(|s| s.container_id.as_deref())
        .map(runtime_id)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let finished = matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    let mut ips: Vec<IpAddr> = Vec::new();
    if !host_network && !finished {
        let listed = status
            .into_iter()
            .flat_map(|s| s.pod_ips.iter().flatten().map(|p| p.ip.as_str()));
        let primary = status.and_then(|s| s.pod_ip.as_deref());
        for ip in primary.into_iter().chain(listed) {
            if let Ok(ip) = ip.parse::<IpAddr>()
                && !ips.contains(&ip)
            {
                ips.push(ip);
            }
        }
    }
    let directives = directives(m.annotations.as_ref().unwrap_or(&BTreeMap::new()));
    Some(PodMeta {
        uid,
        namespace,
        name,
        created_s: m.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second()),
        ips,
        container_ids,
        attrs,
        images,
        directives,
    })
}

/// What the agent keeps of `ns`; `None` without a name.
pub fn namespace_meta(ns: &Namespace, sel: &Selectors) -> Option<NamespaceMeta> {
    let m = &ns.metadata;
    let name = m.name.clone().filter(|n| !n.is_empty())?;
    let mut attrs = Vec::new();
    copy_selected(
        m.labels.as_ref(),
        &sel.namespace_labels,
        attr::NAMESPACE_LABEL,
        &mut attrs,
    );
    let exclude = m
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotation::EXCLUDE))
        .is_some_and(|v| is_true(v));
    Some(NamespaceMeta {
        name,
        attrs,
        exclude,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sel(labels: &[&str], annotations: &[&str], ns: &[&str]) -> Selectors {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        Selectors::new(&v(labels), &v(annotations), &v(ns)).unwrap()
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn web_pod() -> Pod {
        pod(serde_json::json!({
            "metadata": {
                "name": "web-7d9f8c6b5-x2kqp", "namespace": "shop", "uid": "u-1",
                "labels": {"app": "web", "pod-template-hash": "7d9f8c6b5",
                           "app.kubernetes.io/name": "web", "team": "checkout"},
                "annotations": {"prometheus.io/scrape": "true", "mecha.io/parser": "json",
                                "mecha.io/parser-sidecar": "logfmt",
                                "mecha.io/exclude-containers": "istio-proxy, ,linkerd"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                     "name": "web-7d9f8c6b5", "uid": "rs", "controller": true}]
            },
            "spec": {"nodeName": "node-1", "containers": [
                {"name": "app", "image": "registry.local:5000/shop/web:1.4.2"},
                {"name": "sidecar", "image": "envoy@sha256:abc"}]},
            "status": {"phase": "Running", "podIP": "10.1.2.3",
                       "podIPs": [{"ip": "10.1.2.3"}, {"ip": "fd00::3"}],
                       "containerStatuses": [
                           {"name": "app", "image": "x", "imageID": "", "ready": true,
                            "restartCount": 0, "containerID": "containerd://abc123"}]}
        }))
    }

    #[test]
    fn a_deployment_pod_gets_semantic_convention_attributes() {
        let m = pod_meta(&web_pod(), &sel(&["app", "app.kubernetes.io/*"], &[], &[])).unwrap();
        let attrs: BTreeMap<&str, &str> = m
            .attrs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            attrs,
            BTreeMap::from([
                ("k8s.namespace.name", "shop"),
                ("k8s.pod.name", "web-7d9f8c6b5-x2kqp"),
                ("k8s.pod.uid", "u-1"),
                ("k8s.node.name", "node-1"),
                ("k8s.replicaset.name", "web-7d9f8c6b5"),
                ("k8s.deployment.name", "web"),
                ("k8s.pod.label.app", "web"),
                ("k8s.pod.label.app.kubernetes.io/name", "web"),
            ])
        );
        assert_eq!(m.container_ids, ["abc123"]);
        assert_eq!(
            m.ips,
            [
                "10.1.2.3".parse::<IpAddr>().unwrap(),
                "fd00::3".parse().unwrap()
            ]
        );
    }

    #[test]
    fn annotations_are_copied_only_when_selected() {
        let none = pod_meta(&web_pod(), &sel(&[], &[], &[])).unwrap();
        assert!(
            !none
                .attrs
                .iter()
                .any(|(k, _)| k.starts_with("k8s.pod.annotation."))
        );
        let some = pod_meta(&web_pod(), &sel(&[], &["prometheus.io/*"], &[])).unwrap();
        assert!(some.attrs.contains(&(
            "k8s.pod.annotation.prometheus.io/scrape".into(),
            "true".into()
        )));
    }

    #[test]
    fn owner_kinds_map_to_their_workload_attributes() {
        let owned = |kind: &str, name: &str, labels: serde_json::Value| {
            let p = pod(serde_json::json!({
                "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": labels,
                             "ownerReferences": [{"apiVersion": "v1", "kind": kind, "name": name,
                                                  "uid": "o", "controller": true}]}
            }));
            let m = pod_meta(&p, &sel(&[], &[], &[])).unwrap();
            m.attrs
                .into_iter()
                .filter(|(k, _)| {
                    !["k8s.namespace.name", "k8s.pod.name", "k8s.pod.uid"].contains(&k.as_str())
                })
                .collect::<Vec<_>>()
        };
        let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(
            owned("StatefulSet", "db", serde_json::json!({})),
            [s(attr::STATEFULSET, "db")]
        );
        assert_eq!(
            owned("DaemonSet", "agent", serde_json::json!({})),
            [s(attr::DAEMONSET, "agent")]
        );
        assert_eq!(
            owned("Job", "backup-29123456", serde_json::json!({})),
            [s(attr::JOB, "backup-29123456"), s(attr::CRONJOB, "backup")]
        );
        assert_eq!(
            owned("Job", "migrate", serde_json::json!({})),
            [s(attr::JOB, "migrate")]
        );
        // Without the label, the suffix must look like a template hash.
        assert_eq!(
            owned("ReplicaSet", "api-5c8d7f9b4", serde_json::json!({})),
            [
                s(attr::REPLICASET, "api-5c8d7f9b4"),
                s(attr::DEPLOYMENT, "api")
            ]
        );
        assert_eq!(
            owned("ReplicaSet", "my-replicaset", serde_json::json!({})),
            [s(attr::REPLICASET, "my-replicaset")]
        );
        // With the label, only an exact match counts.
        assert_eq!(
            owned(
                "ReplicaSet",
                "api-5c8d7f9b4",
                serde_json::json!({"pod-template-hash": "zzz"})
            ),
            [s(attr::REPLICASET, "api-5c8d7f9b4")]
        );
    }

    #[test]
    fn host_network_and_finished_pods_claim_no_ip() {
        let mut p = web_pod();
        if let Some(s) = p.spec.as_mut() {
            s.host_network = Some(true);
        }
        assert!(pod_meta(&p, &sel(&[], &[], &[])).unwrap().ips.is_empty());
        let mut p = web_pod();
        if let Some(s) = p.status.as_mut() {
            s.phase = Some("Succeeded".into());
        }
        assert!(pod_meta(&p, &sel(&[], &[], &[])).unwrap().ips.is_empty());
    }

    #[test]
    fn directives_are_read_and_bad_values_reported() {
        let m = pod_meta(&web_pod(), &sel(&[], &[], &[])).unwrap();
        let d = &m.directives;
        assert!(!d.exclude);
        assert_eq!(
            d.exclude_containers,
            BTreeSet::from(["istio-proxy".to_owned(), "linkerd".to_owned()])
        );
        assert_eq!(d.parser, Some(BodyFormat::Json));
        assert_eq!(
            d.container_parsers.get("sidecar"),
            Some(&BodyFormat::Logfmt)
        );
        let bad = directives(&BTreeMap::from([
            ("mecha.io/parser".to_owned(), "yaml".to_owned()),
            ("mecha.io/multiline".to_owned(), "cobol".to_owned()),
            ("mecha.io/exclude".to_owned(), "True".to_owned()),
        ]));
        assert!(bad.exclude);
        assert_eq!(bad.parser, None);
        let keys: Vec<&str> = bad.invalid.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["mecha.io/multiline", "mecha.io/parser"]);
        let off = directives(&BTreeMap::from([(
            "mecha.io/multiline".to_owned(),
            "off".to_owned(),
        )]));
        assert_eq!(off.multiline, Some(Multiline::Off));
    }

    #[test]
    fn a_named_multiline_rule_is_read() {
        let rule = |v: &str| {
            directives(&BTreeMap::from([(
                "mecha.io/multiline".to_owned(),
                v.to_owned(),
            )]))
        };
        let java = rule(" java ");
        assert!(
            matches!(java.multiline, Some(Multiline::Rule(MultilineRule::Java))),
            "{java:?}"
        );
        assert!(java.invalid.is_empty());
        assert!(matches!(
            rule("node").multiline,
            Some(Multiline::Rule(MultilineRule::Node))
        ));
        assert!(matches!(
            rule("builtin").multiline,
            Some(Multiline::Rule(MultilineRule::Builtin))
        ));
        // Settings carry it to every container of the pod.
        let mut p = web_pod();
        p.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("mecha.io/multiline".into(), "python".into());
        let r = Resolved::new(Arc::new(pod_meta(&p, &sel(&[], &[], &[])).unwrap()), None);
        assert!(matches!(
            r.settings("sidecar").multiline,
            Some(Multiline::Rule(MultilineRule::Python))
        ));
    }

    #[test]
    fn settings_join_pod_namespace_and_container() {
        let m = Arc::new(pod_meta(&web_pod(), &sel(&[], &[], &[])).unwrap());
        let r = Resolved::new(m.clone(), None);
        assert_eq!(
            r.settings("app"),
            FileSettings {
                excluded: false,
                body_format: Some(BodyFormat::Json),
                multiline: None
            }
        );
        assert_eq!(r.settings("sidecar").body_format, Some(BodyFormat::Logfmt));
        assert!(r.settings("istio-proxy").excluded);
        let ns = Arc::new(NamespaceMeta {
            name: "shop".into(),
            attrs: vec![("k8s.namespace.label.team".into(), "checkout".into())],
            exclude: true,
        });
        let r = Resolved::new(m, Some(ns));
        assert!(r.settings("app").excluded);
        assert_eq!(r.resource.get("k8s.namespace.label.team"), Some("checkout"));
    }

    #[test]
    fn file_resource_adds_the_containers_image() {
        let r = Resolved::new(
            Arc::new(pod_meta(&web_pod(), &sel(&[], &[], &[])).unwrap()),
            None,
        );
        let mut base = Resource::default();
        base.set(keys::CONTAINER, "app");
        let app = r.file_resource(&base, "app");
        assert_eq!(
            app.get(attr::IMAGE_NAME),
            Some("registry.local:5000/shop/web")
        );
        assert_eq!(app.get(attr::IMAGE_TAG), Some("1.4.2"));
        assert_eq!(app.get(keys::CONTAINER), Some("app"));
        assert_eq!(app.get(keys::POD_UID), Some("u-1"));
        let sidecar = r.file_resource(&base, "sidecar");
        assert_eq!(sidecar.get(attr::IMAGE_NAME), Some("envoy"));
        assert_eq!(sidecar.get(attr::IMAGE_TAG), None);
    }

    #[test]
    fn namespace_labels_and_exclusion_are_read() {
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "batch", "labels": {"team": "data", "kubernetes.io/metadata.name": "batch"},
                         "annotations": {"mecha.io/exclude": "true"}}
        }))
        .unwrap();
        let m = namespace_meta(&ns, &sel(&[], &[], &["team"])).unwrap();
        assert_eq!(
            m.attrs,
            [("k8s.namespace.label.team".into(), "data".into())]
        );
        assert!(m.exclude);
    }
}
