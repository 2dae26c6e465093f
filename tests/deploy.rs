//! The deployment files of `deploy/`, checked as a cluster would read them:
//! every kustomize build (the base and each overlay, built by the real
//! kustomize inside kubectl) and every rendering of the Helm chart (its
//! defaults and each `ci/*-values.yaml`, rendered and linted by Helm's own
//! engine) is read into the `k8s-openapi` types with no unknown key; the RBAC
//! is exactly get/list/watch on pods and namespaces; each config in a
//! ConfigMap passes the real `mecha validate` with the environment its pod
//! gives it; the pods mount what their configs read, on the ports and probes
//! the configs listen on; the kustomize overlays and the chart's values give
//! the same pods and configs. `deploy/Dockerfile` is read without a Docker
//! engine: its stages, what each COPY takes, the entrypoint and the user.
//!
//! The renderers come from `scripts/install-test-deps` (a venv in
//! `tests/deploy/.venv`); a missing one fails the test with that hint.

#[path = "deploy/dockerfile.rs"]
mod dockerfile;
#[path = "deploy/render.rs"]
mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Container, PodSpec, Probe, Volume};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use render::{NAMESPACE, Rendering};

/// Every rendering, made once per test process.
fn renderings() -> &'static [Rendering] {
    static ALL: OnceLock<Vec<Rendering>> = OnceLock::new();
    ALL.get_or_init(render::all)
}

/// The node name the downward API gives the agent in these tests.
const NODE: &str = "node-a";

/// The ports of DESIGN.md's table that something listens on today: the
/// agent's Sentry and admin (its OTLP 4317/4318 and Zipkin 9411 receivers
/// are not built, so no manifest may open those).
const AGENT_PORTS: [i32; 2] = [9000, 9600];
const AGGREGATOR_PORTS: [i32; 2] = [4317, 8080];

/// One workload of a rendering: the agent's DaemonSet or the aggregator's
/// StatefulSet, reduced to what the checks read.
struct Workload<'a> {
    rendering: &'a Rendering,
    /// `agent` or `aggregator`: the first argument of the binary.
    role: String,
    name: String,
    pod: &'a PodSpec,
    annotations: BTreeMap<String, String>,
    /// The labels of the pods it makes.
    labels: BTreeMap<String, String>,
    container: &'a Container,
}

impl<'a> Workload<'a> {
    fn new(
        rendering: &'a Rendering,
        name: Option<&String>,
        template: &'a k8s_openapi::api::core::v1::PodTemplateSpec,
    ) -> Workload<'a> {
        let name = name.cloned().unwrap_or_default();
        let pod = template
            .spec
            .as_ref()
            .unwrap_or_else(|| panic!("{}: {name} has no pod spec", rendering.name));
        let [container] = pod.containers.as_slice() else {
            panic!("{}: {name}: expected one container", rendering.name);
        };
        let role = container
            .args
            .as_ref()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_else(|| panic!("{}: {name}: no role argument", rendering.name));
        let meta = template.metadata.clone().unwrap_or_default();
        Workload {
            rendering,
            role,
            name,
            pod,
            annotations: meta.annotations.unwrap_or_default(),
            labels: meta.labels.unwrap_or_default(),
            container,
        }
    }

    fn what(&self) -> String {
        format!("{}: {}", self.rendering.name, self.name)
    }

    /// The value after `flag` in the container's arguments.
    fn arg(&self, flag: &str) -> String {
        let args = self.container.args.clone().unwrap_or_default();
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| panic!("{}: no {flag} in {args:?}", self.what()))
    }

    fn volume(&self, name: &str) -> &Volume {
        self.pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("{}: no volume {name}", self.what()))
    }

    /// The mount that holds `path`, the deepest one if several do.
    fn mount_of(&self, path: &str) -> &k8s_openapi::api::core::v1::VolumeMount {
        self.container
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| {
                let root = m.mount_path.trim_end_matches('/');
                path == root || path.starts_with(&format!("{root}/"))
            })
            .max_by_key(|m| m.mount_path.len())
            .unwrap_or_else(|| panic!("{}: nothing is mounted at {path}", self.what()))
    }

    /// The environment the container starts with: literal values, the
    /// downward API's node name, and every key of the Secrets and ConfigMaps
    /// it takes with `envFrom` (which must be in the rendering).
    fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for from in self.container.env_from.iter().flatten() {
            if let Some(secret) = &from.secret_ref {
                let s = self.rendering.secret(&secret.name).unwrap_or_else(|| {
                    panic!(
                        "{}: envFrom Secret {} is not rendered",
                        self.what(),
                        secret.name
                    )
                });
                env.extend(s.string_data.clone().unwrap_or_default());
                for (k, v) in s.data.iter().flatten() {
                    env.insert(k.clone(), String::from_utf8_lossy(&v.0).into_owned());
                }
            }
            if let Some(cm) = &from.config_map_ref {
                env.extend(
                    self.rendering
                        .config_map(&cm.name)
                        .data
                        .clone()
                        .unwrap_or_default(),
                );
            }
        }
        for var in self.container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(v), None) => v.clone(),
                (None, Some(from)) => match &from.field_ref {
                    Some(f) if f.field_path == "spec.nodeName" => NODE.to_string(),
                    _ => panic!(
                        "{}: env {} from {from:?}: add it to the test",
                        self.what(),
                        var.name
                    ),
                },
                _ => String::new(),
            };
            env.insert(var.name.clone(), value);
        }
        env
    }

    /// The config file the container reads (`--config`), from the ConfigMap
    /// mounted at its directory: (file name, text).
    fn config_file(&self) -> (String, String) {
        let path = self.arg("--config");
        let mount = self.mount_of(&path);
        let key = path
            .strip_prefix(&format!("{}/", mount.mount_path.trim_end_matches('/')))
            .unwrap_or_else(|| panic!("{}: {path} is not under {}", self.what(), mount.mount_path));
        let volume = self.volume(&mount.name);
        let cm = volume
            .config_map
            .as_ref()
            .unwrap_or_else(|| panic!("{}: {path} is not on a ConfigMap volume", self.what()));
        let data = self
            .rendering
            .config_map(&cm.name)
            .data
            .clone()
            .unwrap_or_default();
        let text = data.get(key).cloned().unwrap_or_else(|| {
            panic!(
                "{}: ConfigMap {} has no key {key} (it has {:?})",
                self.what(),
                cm.name,
                data.keys()
            )
        });
        (key.to_string(), text)
    }

    /// The config as the binary will read it, with the pod's environment.
    fn config(&self) -> mecha_config::Config {
        let (file, text) = self.config_file();
        let env = self.env();
        mecha_config::parse(&file, &text, &|k| env.get(k).cloned())
            .unwrap_or_else(|e| panic!("{}: {e}", self.what()))
    }

    /// The container port a probe or Service names (by name or number).
    fn port(&self, port: &IntOrString) -> i32 {
        let ports = self.container.ports.clone().unwrap_or_default();
        let found = match port {
            IntOrString::Int(n) => ports.iter().find(|p| p.container_port == *n),
            IntOrString::String(name) => ports.iter().find(|p| p.name.as_deref() == Some(name)),
        };
        found
            .map(|p| p.container_port)
            .unwrap_or_else(|| panic!("{}: the container has no port {port:?}", self.what()))
    }

    fn container_ports(&self) -> BTreeSet<i32> {
        self.container
            .ports
            .iter()
            .flatten()
            .map(|p| p.container_port)
            .collect()
    }

    /// (path, container port) of an HTTP probe.
    fn probe(&self, probe: Option<&Probe>, kind: &str) -> (String, i32) {
        let get = probe
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{}: no HTTP {kind} probe", self.what()));
        (get.path.clone().unwrap_or_default(), self.port(&get.port))
    }

    fn security(&self) -> k8s_openapi::api::core::v1::SecurityContext {
        self.container
            .security_context
            .clone()
            .unwrap_or_else(|| panic!("{}: no security context", self.what()))
    }
}

fn agents(r: &Rendering) -> Vec<Workload<'_>> {
    r.objects
        .daemon_sets
        .iter()
        .map(|d: &DaemonSet| Workload::new(r, d.metadata.name.as_ref(), &d.spec.template))
        .collect()
}

fn aggregators(r: &Rendering) -> Vec<Workload<'_>> {
    r.objects
        .stateful_sets
        .iter()
        .map(|s: &StatefulSet| Workload::new(r, s.metadata.name.as_ref(), &s.spec.template))
        .collect()
}

/// The one agent DaemonSet every rendering has.
fn agent(r: &Rendering) -> Workload<'_> {
    let mut all = agents(r);
    assert_eq!(all.len(), 1, "{}: expected one agent DaemonSet", r.name);
    let w = all.remove(0);
    assert_eq!(w.role, "agent", "{}", w.what());
    w
}

fn sorted(v: &[String]) -> Vec<&str> {
    let mut v: Vec<&str> = v.iter().map(String::as_str).collect();
    v.sort_unstable();
    v
}

/// The literal directory a glob starts with: `/var/log/containers/*.log` →
/// `/var/log/containers`.
fn glob_root(glob: &str) -> &str {
    let cut = glob.find(['*', '?', '[', '{']).unwrap_or(glob.len());
    glob[..cut].rsplit_once('/').map_or("/", |(dir, _)| dir)
}

#[test]
fn every_object_reads_into_the_kubernetes_types_without_unknown_keys() {
    let all = renderings();
    // The base, two overlays, the chart's defaults and its three CI values.
    assert!(
        all.len() >= 7,
        "{:?}",
        all.iter().map(|r| &r.name).collect::<Vec<_>>()
    );
    for r in all {
        assert!(
            r.unknown_keys.is_empty(),
            "keys the Kubernetes API does not have:\n{}",
            r.unknown_keys.join("\n")
        );
        agent(r);
    }
    let base = &all[0];
    assert_eq!(base.name, "kustomize base");
    let ns: Vec<_> = base
        .objects
        .namespaces
        .iter()
        .map(|n| n.metadata.name.clone())
        .collect();
    assert_eq!(ns, [Some(NAMESPACE.to_string())]);
}

#[test]
fn a_key_the_kubernetes_types_lack_is_reported() {
    // A misspelt key in the container's securityContext: a cluster would
    // drop it silently and run the agent with a writable root filesystem.
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  selector: {}\n  template:\n    spec:\n      containers:\n        - name: agent\n          securityContext: {readOnlyRootFileSystem: true}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut unknown = Vec::new();
    let _: DaemonSet = render::typed(doc, "test", &mut unknown);
    assert_eq!(
        unknown,
        ["test: spec.template.spec.containers.0.securityContext.readOnlyRootFileSystem"]
    );
}

#[test]
fn rbac_is_get_list_watch_on_pods_and_namespaces_and_nothing_more() {
    for r in renderings() {
        let agent = agent(r);
        let [role] = r.objects.cluster_roles.as_slice() else {
            panic!("{}: expected one ClusterRole", r.name);
        };
        assert!(role.aggregation_rule.is_none(), "{}", r.name);
        let rules = role.rules.clone().unwrap_or_default();
        let [rule] = rules.as_slice() else {
            panic!("{}: expected one rule, found {rules:?}", r.name);
        };
        assert_eq!(
            rule.api_groups.as_deref(),
            Some(&[String::new()][..]),
            "{}",
            r.name
        );
        assert_eq!(
            sorted(rule.resources.as_deref().unwrap_or_default()),
            ["namespaces", "pods"],
            "{}",
            r.name
        );
        assert_eq!(sorted(&rule.verbs), ["get", "list", "watch"], "{}", r.name);
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "{}",
            r.name
        );

        let [binding] = r.objects.cluster_role_bindings.as_slice() else {
            panic!("{}: expected one ClusterRoleBinding", r.name);
        };
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        assert_eq!(
            binding.role_ref.api_group.as_deref(),
            Some("rbac.authorization.k8s.io")
        );
        assert_eq!(
            Some(&binding.role_ref.name),
            role.metadata.name.as_ref(),
            "{}",
            r.name
        );
        let account = agent.pod.service_account_name.clone();
        let subjects: Vec<_> = binding
            .subjects
            .iter()
            .flatten()
            .map(|s| {
                (
                    s.kind.as_str(),
                    Some(s.name.clone()),
                    s.namespace.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            subjects,
            [("ServiceAccount", account.clone(), Some(NAMESPACE))],
            "{}",
            r.name
        );
        // Every other account, the aggregator's, holds no token at all.
        for sa in &r.objects.service_accounts {
            if sa.metadata.name != account {
                assert_eq!(
                    sa.automount_service_account_token,
                    Some(false),
                    "{}",
                    r.name
                );
            }
        }
        for w in aggregators(r) {
            assert_eq!(
                w.pod.automount_service_account_token,
                Some(false),
                "{}",
                w.what()
            );
        }
    }
}

#[test]
fn every_config_in_a_config_map_passes_mecha_validate() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut checked = 0;
    for r in renderings() {
        for w in agents(r).iter().chain(aggregators(r).iter()) {
            let (file, text) = w.config_file();
            let path = dir.path().join(format!("{checked}-{file}"));
            std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
            // Only what the pod gives the container: a variable the pod
            // lacks fails the check.
            let out = Command::new(env!("CARGO_BIN_EXE_mecha"))
                .args(["validate", "--config"])
                .arg(&path)
                .env_clear()
                .envs(w.env())
                .output()
                .unwrap_or_else(|e| panic!("running mecha validate: {e}"));
            assert!(
                out.status.success() && String::from_utf8_lossy(&out.stdout).contains(": ok"),
                "{}: mecha validate {file}: {}\n{}{}\n{text}",
                w.what(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    // An agent in each rendering, an aggregator in all but the export-only ones.
    assert!(checked >= 12, "checked {checked} configs");
}

#[test]
fn the_agent_mounts_what_its_config_reads() {
    for r in renderings() {
        let w = agent(r);
        let config = w.config();
        let mut read: Vec<String> = config
            .agent
            .sources
            .values()
            .flat_map(|s| s.include.iter().map(|g| g.0.clone()))
            .collect();
        // The schema's defaults, should a config leave `sources` out, and the
        // kubelet's pod log directory the /var/log/containers symlinks name.
        read.extend(mecha_config::DEFAULT_INCLUDE.iter().map(|s| s.to_string()));
        read.push("/var/log/pods/*/*/*.log".to_string());
        for glob in &read {
            let dir = glob_root(glob);
            let mount = w.mount_of(dir);
            assert_eq!(
                mount.read_only,
                Some(true),
                "{}: {dir} must be read-only",
                w.what()
            );
            let host = w
                .volume(&mount.name)
                .host_path
                .as_ref()
                .unwrap_or_else(|| panic!("{}: {dir} is not on a hostPath volume", w.what()));
            // Same path in the pod as on the node: the symlinks are absolute.
            assert_eq!(host.path, mount.mount_path, "{}: {dir}", w.what());
        }

        // Checkpoints and the disk buffer: writable, on the node.
        let data_dir = w.arg("--data-dir");
        assert!(
            config.data_dir.is_none() || config.data_dir.as_deref() == Some(Path::new(&data_dir)),
            "{}: the config's data_dir {:?} is not --data-dir {data_dir}",
            w.what(),
            config.data_dir
        );
        let mount = w.mount_of(&data_dir);
        assert_eq!(mount.mount_path, data_dir, "{}", w.what());
        assert_ne!(
            mount.read_only,
            Some(true),
            "{}: {data_dir} must be writable",
            w.what()
        );
        let host = w
            .volume(&mount.name)
            .host_path
            .clone()
            .unwrap_or_else(|| panic!("{}: {data_dir} is not on a hostPath volume", w.what()));
        assert_eq!(host.path, "/var/lib/mecha", "{}", w.what());
        assert_eq!(
            host.type_.as_deref(),
            Some("DirectoryOrCreate"),
            "{}",
            w.what()
        );
        // Every other host directory is read-only.
        for m in w.container.volume_mounts.iter().flatten() {
            if w.volume(&m.name).host_path.is_some() && m.mount_path != data_dir {
                assert_eq!(m.read_only, Some(true), "{}: {}", w.what(), m.mount_path);
            }
        }

        let node = w
            .container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "NODE_NAME")
            .and_then(|e| e.value_from.as_ref())
            .and_then(|f| f.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(node, Some("spec.nodeName"), "{}: NODE_NAME", w.what());
        assert_eq!(config.node_name.as_deref(), Some(NODE), "{}", w.what());
    }
}

#[test]
fn ports_and_probes_match_what_the_configs_listen_on() {
    for r in renderings() {
        let a = agent(r);
        let config = a.config();
        let admin = config
            .agent
            .admin
            .listen
            .0
            .unwrap_or_else(|| panic!("{}: admin off", a.what()));
        let sentry = config
            .agent
            .sentry
            .listen
            .0
            .unwrap_or_else(|| panic!("{}: sentry off", a.what()));
        // Reachable from the kubelet and other pods, not only from loopback.
        assert!(
            admin.ip().is_unspecified() && sentry.ip().is_unspecified(),
            "{}",
            a.what()
        );
        assert_eq!(
            a.probe(a.container.liveness_probe.as_ref(), "liveness"),
            ("/health".into(), admin.port().into()),
            "{}",
            a.what()
        );
        assert_eq!(
            a.probe(a.container.readiness_probe.as_ref(), "readiness"),
            ("/ready".into(), admin.port().into()),
            "{}",
            a.what()
        );
        assert_eq!(
            a.port(&IntOrString::String("sentry".into())),
            i32::from(sentry.port()),
            "{}",
            a.what()
        );
        assert_eq!(
            a.annotations
                .get("prometheus.io/scrape")
                .map(String::as_str),
            Some("true"),
            "{}",
            a.what()
        );
        assert_eq!(
            a.annotations.get("prometheus.io/port"),
            Some(&admin.port().to_string()),
            "{}",
            a.what()
        );
        assert_eq!(
            a.annotations.get("prometheus.io/path").map(String::as_str),
            Some("/metrics"),
            "{}",
            a.what()
        );
        // Exactly what the agent listens on: no port is opened or advertised
        // that nothing serves.
        assert_eq!(
            a.container_ports(),
            BTreeSet::from([i32::from(sentry.port()), i32::from(admin.port())]),
            "{}",
            a.what()
        );
        assert_eq!(
            a.container_ports(),
            BTreeSet::from(AGENT_PORTS),
            "{}",
            a.what()
        );

        let selects = |w: &Workload<'_>, s: &k8s_openapi::api::core::v1::Service| {
            let labels = &w.labels;
            s.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|sel| {
                    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
        };
        let mut aggregator_service = None;
        for w in aggregators(r).iter().chain([&a]) {
            let services: Vec<_> = r
                .objects
                .services
                .iter()
                .filter(|s| selects(w, s))
                .collect();
            assert!(!services.is_empty(), "{}: no Service selects it", w.what());
            for s in services {
                for p in s.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
                    let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
                    assert_eq!(
                        w.port(&target),
                        p.port,
                        "{}: Service {:?} port {}",
                        w.what(),
                        s.metadata.name,
                        p.port
                    );
                }
                let headless =
                    s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
                if w.role == "aggregator" && !headless {
                    aggregator_service = Some(s);
                }
            }
        }

        for g in aggregators(r) {
            assert_eq!(g.role, "aggregator", "{}", g.what());
            let config = g.config();
            let grpc = config
                .aggregator
                .grpc
                .listen
                .0
                .unwrap_or_else(|| panic!("{}: grpc off", g.what()));
            let http = config
                .aggregator
                .http
                .listen
                .0
                .unwrap_or_else(|| panic!("{}: http off", g.what()));
            assert!(
                grpc.ip().is_unspecified() && http.ip().is_unspecified(),
                "{}",
                g.what()
            );
            assert_eq!(
                g.port(&IntOrString::String("grpc".into())),
                i32::from(grpc.port()),
                "{}",
                g.what()
            );
            assert_eq!(
                g.port(&IntOrString::String("http".into())),
                i32::from(http.port()),
                "{}",
                g.what()
            );
            let http = i32::from(http.port());
            assert_eq!(
                g.probe(g.container.startup_probe.as_ref(), "startup"),
                ("/health".into(), http),
                "{}",
                g.what()
            );
            assert_eq!(
                g.probe(g.container.liveness_probe.as_ref(), "liveness"),
                ("/health".into(), http),
                "{}",
                g.what()
            );
            assert_eq!(
                g.probe(g.container.readiness_probe.as_ref(), "readiness"),
                ("/ready".into(), http),
                "{}",
                g.what()
            );
            assert_eq!(
                g.annotations.get("prometheus.io/port"),
                Some(&http.to_string()),
                "{}",
                g.what()
            );
            assert!(
                g.container_ports().is_superset(&AGGREGATOR_PORTS.into()),
                "{}",
                g.what()
            );

            // The agents forward to this aggregator's Service, on its gRPC port.
            let service =
                aggregator_service.unwrap_or_else(|| panic!("{}: no ClusterIP Service", g.what()));
            let name = service.metadata.name.clone().unwrap_or_default();
            let grpc_port = service
                .spec
                .iter()
                .flat_map(|s| s.ports.iter().flatten())
                .find(|p| {
                    p.target_port
                        .as_ref()
                        .is_some_and(|t| g.port(t) == i32::from(grpc.port()))
                })
                .map(|p| p.port)
                .unwrap_or_else(|| panic!("{}: Service {name} has no gRPC port", g.what()));
            let endpoint = &a.config().agent.forward.endpoint;
            let hosts = [
                name.clone(),
                format!("{name}.{NAMESPACE}"),
                format!("{name}.{NAMESPACE}.svc"),
            ];
            assert!(
                hosts
                    .iter()
                    .any(|h| *endpoint == format!("http://{h}:{grpc_port}")),
                "{}: the agent forwards to {endpoint}, not to Service {name}:{grpc_port}",
                r.name
            );
        }
    }
}

#[test]
fn the_export_only_renderings_have_no_aggregator_and_forward_elsewhere() {
    let export_only = [
        "kustomize overlays/export-only",
        "helm ci/export-only-values.yaml",
    ];
    // Every name the aggregator's Services answer to in the other renderings.
    let mut aggregator_hosts = BTreeSet::new();
    for r in renderings()
        .iter()
        .filter(|r| !export_only.contains(&r.name.as_str()))
    {
        for s in &r.objects.services {
            let name = s.metadata.name.clone().unwrap_or_default();
            if name.contains("aggregator") {
                aggregator_hosts.insert(name.clone());
                aggregator_hosts.insert(format!("{name}.{NAMESPACE}"));
                aggregator_hosts.insert(format!("{name}.{NAMESPACE}.svc"));
                aggregator_hosts.insert(format!("{name}.{NAMESPACE}.svc.cluster.local"));
            }
        }
    }
    assert!(!aggregator_hosts.is_empty());
    for name in export_only {
        let r = renderings()
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no rendering {name}"));
        let o = &r.objects;
        assert!(o.stateful_sets.is_empty(), "{name}: a StatefulSet");
        let component = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            m.labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/component"))
                .cloned()
        };
        let metas = o
            .config_maps
            .iter()
            .map(|c| &c.metadata)
            .chain(o.services.iter().map(|s| &s.metadata))
            .chain(o.service_accounts.iter().map(|s| &s.metadata))
            .chain(o.secrets.iter().map(|s| &s.metadata));
        for m in metas {
            let object = m.name.clone().unwrap_or_default();
            assert!(
                !object.contains("aggregator") && component(m).as_deref() != Some("aggregator"),
                "{name}: {object} belongs to the aggregator"
            );
        }
        for c in &o.config_maps {
            let data = c.data.clone().unwrap_or_default();
            assert!(
                data.values()
                    .all(|v| !v.lines().any(|l| l.starts_with("aggregator:"))),
                "{name}: ConfigMap {:?} holds an aggregator config",
                c.metadata.name
            );
        }
        let endpoint = agent(r).config().agent.forward.endpoint;
        let host = endpoint
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split([':', '/']).next())
            .unwrap_or_default();
        assert!(!host.is_empty(), "{name}: endpoint {endpoint}");
        assert!(
            !aggregator_hosts.contains(host) && !host.contains("aggregator"),
            "{name}: the agent forwards to {endpoint}, the in-cluster aggregator"
        );
    }
}

#[test]
fn the_agent_runs_on_every_node_with_least_privilege() {
    for r in renderings() {
        let a = agent(r);
        let everything = a.pod.tolerations.iter().flatten().any(|t| {
            t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()
        });
        assert!(
            everything,
            "{}: does not tolerate every taint: {:?}",
            a.what(),
            a.pod.tolerations
        );
        assert_ne!(a.pod.host_network, Some(true), "{}", a.what());
        assert_ne!(a.pod.host_pid, Some(true), "{}", a.what());
        for w in aggregators(r).iter().chain([&a]) {
            let s = w.security();
            assert_eq!(s.read_only_root_filesystem, Some(true), "{}", w.what());
            assert_eq!(s.allow_privilege_escalation, Some(false), "{}", w.what());
            assert_ne!(s.privileged, Some(true), "{}", w.what());
            let caps = s.capabilities.clone().unwrap_or_default();
            assert_eq!(
                caps.drop.as_deref(),
                Some(&["ALL".to_string()][..]),
                "{}",
                w.what()
            );
            assert!(caps.add.unwrap_or_default().is_empty(), "{}", w.what());
            let resources = w.container.resources.clone().unwrap_or_default();
            for (kind, set) in [
                ("requests", &resources.requests),
                ("limits", &resources.limits),
            ] {
                let set = set.clone().unwrap_or_default();
                assert!(
                    set.contains_key("cpu") && set.contains_key("memory"),
                    "{}: {kind} {set:?}",
                    w.what()
                );
            }
        }
        // The agent is root (the kubelet's log files are root's, 0640), the
        // aggregator is not.
        assert_eq!(a.security().run_as_user, Some(0), "{}", a.what());
        for g in aggregators(r) {
            let pod = g.pod.security_context.clone().unwrap_or_default();
            assert_eq!(pod.run_as_non_root, Some(true), "{}", g.what());
            assert!(pod.run_as_user.is_some_and(|u| u != 0), "{}", g.what());
        }
    }
}

#[test]
fn the_aggregator_keeps_its_data_on_a_claimed_volume_behind_a_headless_service() {
    let mut seen = 0;
    for r in renderings() {
        for (s, g) in r.objects.stateful_sets.iter().zip(aggregators(r)) {
            let what = g.what();
            let spec = &s.spec;
            assert_eq!(
                spec.replicas,
                Some(1),
                "{what}: the index is embedded in one volume"
            );
            let data_dir = g.arg("--data-dir");
            let mount = g.mount_of(&data_dir);
            assert_eq!(mount.mount_path, data_dir, "{what}");
            let claims = spec.volume_claim_templates.clone().unwrap_or_default();
            let claim = claims
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(&mount.name))
                .unwrap_or_else(|| panic!("{what}: {data_dir} is not on a claimed volume"));
            let storage = claim
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"));
            assert!(storage.is_some(), "{what}: the claim requests no storage");
            let headless = r
                .objects
                .services
                .iter()
                .find(|svc| {
                    svc.metadata.name.as_ref()
                        == Some(&spec.service_name.clone().unwrap_or_default())
                })
                .unwrap_or_else(|| panic!("{what}: no governing Service {:?}", spec.service_name));
            assert_eq!(
                headless.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
                Some("None"),
                "{what}"
            );
            seen += 1;
        }
    }
    assert!(seen >= 5, "{seen} StatefulSets");
}

#[test]
fn helm_lint_strict_is_clean() {
    let mut linted = 0;
    for r in renderings() {
        let Some(lint) = &r.lint else { continue };
        let errors = lint
            .get("errors")
            .and_then(|e| e.as_array())
            .cloned()
            .unwrap_or_default();
        // Severity 2 is a warning, 3 an error: --strict fails on both.
        let warnings: Vec<_> = lint
            .get("messages")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
            .filter(|m| {
                m.get("severity")
                    .and_then(|s| s.as_u64())
                    .is_none_or(|s| s >= 2)
            })
            .collect();
        assert!(
            errors.is_empty() && warnings.is_empty(),
            "{}: {lint}",
            r.name
        );
        assert_eq!(
            lint.get("total_charts_linted").and_then(|t| t.as_u64()),
            Some(1),
            "{}",
            r.name
        );
        linted += 1;
    }
    assert!(linted >= 4, "{linted} chart renderings linted");
}

/// What a workload runs, independent of how it was written: what the
/// kustomize overlay and the chart's values for the same setup must agree on.
fn shape(w: &Workload<'_>) -> String {
    let mut c = w.container.clone();
    c.image = None;
    c.image_pull_policy = None;
    let mut pod = w.pod.clone();
    pod.containers = Vec::new();
    pod.service_account_name = None;
    pod.volumes = None;
    let volumes: Vec<String> = w
        .pod
        .volumes
        .iter()
        .flatten()
        .map(|v| {
            let mut v = v.clone();
            // Generated ConfigMap names differ (kustomize adds a hash).
            v.config_map = v.config_map.map(|_| Default::default());
            format!("{v:?}")
        })
        .collect();
    format!(
        "role {}\ncontainer {c:?}\npod {pod:?}\nvolumes {volumes:?}\nconfig {:?}\nannotations {:?}",
        w.role,
        w.config(),
        w.annotations
            .iter()
            .filter(|(k, _)| k.starts_with("prometheus.io/"))
            .collect::<Vec<_>>()
    )
}

#[test]
fn the_chart_and_the_kustomize_overlays_make_the_same_pods() {
    let all = renderings();
    let find = |name: &str| {
        all.iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no rendering {name}"))
    };
    let pairs = [
        ("kustomize base", "helm (default values)".to_string()),
        (
            "kustomize overlays/small",
            "helm ci/small-values.yaml".to_string(),
        ),
        (
            "kustomize overlays/export-only",
            "helm ci/export-only-values.yaml".to_string(),
        ),
    ];
    for (k, h) in &pairs {
        let (k, h) = (find(k), find(h));
        let shapes = |r: &Rendering| -> Vec<String> {
            agents(r)
                .iter()
                .chain(aggregators(r).iter())
                .map(shape)
                .collect()
        };
        let (ks, hs) = (shapes(k), shapes(h));
        assert_eq!(ks.len(), hs.len(), "{} and {}", k.name, h.name);
        for (a, b) in ks.iter().zip(&hs) {
            assert_eq!(a, b, "{} and {} differ", k.name, h.name);
        }
        let claims = |r: &Rendering| -> Vec<String> {
            r.objects
                .stateful_sets
                .iter()
                .map(|s| {
                    format!(
                        "{:?}",
                        s.spec
                            .volume_claim_templates
                            .clone()
                            .map(|c| c.into_iter().map(|c| c.spec).collect::<Vec<_>>())
                    )
                })
                .collect()
        };
        assert_eq!(claims(k), claims(h), "{} and {}", k.name, h.name);
    }
}

#[test]
fn wecom_keys_reach_the_aggregator_from_a_secret() {
    let r = renderings()
        .iter()
        .find(|r| r.name == "helm ci/wecom-values.yaml")
        .unwrap_or_else(|| panic!("no wecom rendering"));
    let [g]: [Workload<'_>; 1] = aggregators(r)
        .try_into()
        .unwrap_or_else(|_| panic!("{}: expected one aggregator", r.name));
    let env = g.env();
    assert_eq!(
        env.get("WECOM_KEY_OPS").map(String::as_str),
        Some("693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa")
    );
    let config = g.config();
    assert_eq!(
        config.aggregator.alerting.external_url.as_deref(),
        Some("https://mecha.example.com")
    );
    // The key is in the Secret, not in the ConfigMap.
    let (_, text) = g.config_file();
    assert!(!text.contains("693a91f6"), "{text}");
    // The agent, which reads no credential, gets none.
    assert!(agent(r).container.env_from.is_none());
}

#[test]
fn the_dockerfile_builds_the_one_binary_into_a_small_non_root_image() {
    let root = render::repo();
    let text =
        std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap_or_else(|e| panic!("{e}"));
    let file = dockerfile::parse(&text);
    assert!(
        file.stages.len() >= 2,
        "a multi-stage build: {:?}",
        file.stages.iter().map(|s| &s.base).collect::<Vec<_>>()
    );

    // The build stage's toolchain is at least the workspace's rust-version.
    let manifest =
        std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_else(|e| panic!("{e}"));
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("no rust-version in Cargo.toml"));
    let arg = file
        .global_args
        .iter()
        .find_map(|a| a.args.strip_prefix("RUST_VERSION="))
        .unwrap_or_else(|| panic!("no ARG RUST_VERSION=<default>"));
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap_or(0)).collect() };
    assert!(
        version(arg) >= version(&rust_version),
        "rust {arg} < rust-version {rust_version}"
    );

    let mut names = BTreeSet::new();
    for (i, stage) in file.stages.iter().enumerate() {
        for ins in &stage.instructions {
            if ins.keyword != "COPY" && ins.keyword != "ADD" {
                continue;
            }
            let copy = dockerfile::copy(ins);
            match copy.flag("from") {
                // From an earlier stage: a file that stage's RUN wrote.
                Some(from) => {
                    assert!(
                        names.contains(&from.to_ascii_lowercase()),
                        "Dockerfile:{}: --from={from} is not an earlier stage",
                        ins.line
                    );
                    let from = from.to_ascii_lowercase();
                    let runs: Vec<&str> = file.stages[..i]
                        .iter()
                        .filter(|s| s.name.as_deref() == Some(from.as_str()))
                        .flat_map(|s| &s.instructions)
                        .filter(|i| i.keyword == "RUN")
                        .map(|i| i.args.as_str())
                        .collect();
                    for src in &copy.sources {
                        assert!(
                            runs.iter().any(|r| r.contains(src.as_str())),
                            "Dockerfile:{}: stage {from} does not write {src}",
                            ins.line
                        );
                    }
                }
                // From the build context: the paths exist in the repository.
                None => {
                    for src in &copy.sources {
                        assert!(
                            root.join(src).exists(),
                            "Dockerfile:{}: {src} is not in the repository",
                            ins.line
                        );
                    }
                }
            }
        }
        if let Some(name) = &stage.name {
            assert!(
                names.insert(name.clone()),
                "Dockerfile:{}: stage {name} twice",
                stage.from.line
            );
        }
    }

    let build = &file.stages[0];
    let cargo = build
        .instructions
        .iter()
        .find(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .unwrap_or_else(|| panic!("the first stage runs no cargo build"));
    let bin = Path::new(env!("CARGO_BIN_EXE_mecha"))
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    for flag in ["--release", "--locked", format!("--bin {bin}").as_str()] {
        assert!(
            cargo.args.contains(flag),
            "Dockerfile:{}: cargo build without {flag}",
            cargo.line
        );
    }

    let runtime = file.stages.last().unwrap_or_else(|| panic!("no stage"));
    assert!(
        runtime.base.contains("distroless/cc") || runtime.base.contains("-slim"),
        "the runtime image {} is neither distroless/cc nor a slim Debian",
        runtime.base
    );
    let last = |kw: &str| runtime.instructions.iter().rev().find(|i| i.keyword == kw);
    let entry = last("ENTRYPOINT").unwrap_or_else(|| panic!("no ENTRYPOINT"));
    let entry: Vec<String> = serde_json::from_str(&entry.args).unwrap_or_else(|e| {
        panic!(
            "Dockerfile:{}: ENTRYPOINT not in exec form: {e}",
            entry.line
        )
    });
    let binary = entry.first().cloned().unwrap_or_default();
    assert!(
        binary.ends_with(&format!("/{bin}")),
        "ENTRYPOINT {entry:?} is not the {bin} binary"
    );
    let copied: Vec<String> = runtime
        .instructions
        .iter()
        .filter(|i| i.keyword == "COPY")
        .map(|i| dockerfile::copy(i).dest)
        .collect();
    assert!(
        copied.contains(&binary),
        "{binary} is not copied into the runtime stage: {copied:?}"
    );

    let user = last("USER").unwrap_or_else(|| panic!("the runtime stage sets no USER"));
    let uid = user.args.split(':').next().unwrap_or_default();
    assert!(
        !matches!(uid, "0" | "root" | ""),
        "USER {} is root",
        user.args
    );

    let exposed: BTreeSet<i32> = runtime
        .instructions
        .iter()
        .filter(|i| i.keyword == "EXPOSE")
        .flat_map(|i| i.args.split_whitespace())
        .map(|p| {
            p.trim_end_matches("/tcp")
                .parse()
                .unwrap_or_else(|e| panic!("EXPOSE {p}: {e}"))
        })
        .collect();
    let wanted: BTreeSet<i32> = AGENT_PORTS.into_iter().chain(AGGREGATOR_PORTS).collect();
    assert_eq!(exposed, wanted);
}

#[test]
fn the_docker_context_keeps_the_sources_and_leaves_out_build_output() {
    let root = render::repo();
    let text =
        std::fs::read_to_string(root.join(".dockerignore")).unwrap_or_else(|e| panic!("{e}"));
    let patterns = dockerfile::ignore_patterns(&text);
    let manifest =
        std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_else(|e| panic!("{e}"));
    // What `cargo build --locked --bin mecha` reads: the manifests, the lock
    // file, every member's sources and the declared bench targets.
    let members = manifest
        .lines()
        .find_map(|l| l.strip_prefix("members = "))
        .unwrap_or_else(|| panic!("no workspace members"));
    let members: Vec<String> =
        serde_json::from_str(members).unwrap_or_else(|e| panic!("members {members}: {e}"));
    let mut needed = vec![
        "Cargo.toml".to_string(),
        "Cargo.lock".to_string(),
        "src/main.rs".to_string(),
    ];
    for m in &members {
        needed.push(format!("{m}/Cargo.toml"));
        needed.push(format!("{m}/src/lib.rs"));
    }
    let mut in_bench = false;
    for line in manifest.lines() {
        if line.starts_with('[') {
            in_bench = line == "[[bench]]";
        } else if let Some(name) = line.strip_prefix("name = ").filter(|_| in_bench) {
            needed.push(format!("benches/{}.rs", name.trim_matches('"')));
        }
    }
    for path in &needed {
        assert!(root.join(path).exists(), "{path} is not in the repository");
        assert!(
            !dockerfile::is_ignored(&patterns, path),
            ".dockerignore leaves out {path}"
        );
    }
    for path in [
        "target/release/mecha",
        ".git/HEAD",
        "tests/deploy/.venv/bin/python",
        "tests/sentry_sdks/node_modules/x",
    ] {
        assert!(
            dockerfile::is_ignored(&patterns, path),
            ".dockerignore keeps {path}"
        );
    }
}

#[test]
fn image_tags_follow_the_workspace_version() {
    let root = render::repo();
    let version = env!("CARGO_PKG_VERSION");
    let yaml = |path: &str| -> serde_yaml_ng::Value {
        let text =
            std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let chart = yaml("deploy/helm/mecha/Chart.yaml");
    assert_eq!(
        chart.get("appVersion").and_then(|v| v.as_str()),
        Some(version)
    );
    let base = yaml("deploy/kustomize/base/kustomization.yaml");
    let tag = base
        .get("images")
        .and_then(|i| i.get(0))
        .and_then(|i| i.get("newTag"))
        .and_then(|t| t.as_str());
    assert_eq!(tag, Some(version));
    for r in renderings() {
        for w in agents(r).iter().chain(aggregators(r).iter()) {
            assert_eq!(
                w.container.image.as_deref(),
                Some(format!("mecha:{version}").as_str()),
                "{}",
                w.what()
            );
        }
    }
}
