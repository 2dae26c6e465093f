//! Pod metadata enrichment end to end: the real `mecha standalone`, its
//! unmodified `kube` client pointed at a fake API server that speaks the
//! list/watch protocol (`tests/common/fake_apiserver.rs`), kubelet-style log
//! files in a temp `containers` directory, and the search API to read what
//! was indexed.
//!
//! What must hold: records carry their pod's semantic-convention attributes
//! (workload, labels, namespace labels, image); annotations exclude files,
//! pick the parser or join stack traces; label changes reach later records;
//! a Sentry event is matched to its pod by the sender's IP, a deleted pod
//! keeps its IP for `delay_deletion` and a pod reusing it wins once the
//! DELETE is seen; watches start at the list's version and resume from the
//! last event or bookmark without listing, and list again after a 410 (an
//! `ERROR` event or the HTTP status); a node of more pods than a page is
//! listed page by page, and from the first page again when a page's token
//! expires; a server restart (versions kept or
//! reset) and an outage never stop logs, retries back off, and the cache
//! catches up.

mod common;
#[path = "common/fake_apiserver.rs"]
mod fake_apiserver;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Mecha, append, cri_ts, hits, search, total, wait_for};
use fake_apiserver::{FakeApiServer, Kind};
use serde_json::{Value, json};

const NODE: &str = "node-1";

/// How long the API server stays away in the outage test; a parameter so
/// that a quick local run can shorten it (`MECHA_KUBE_OUTAGE_SECS`).
fn outage() -> Duration {
    let secs = std::env::var("MECHA_KUBE_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// A 64-hex container id made from `seed`.
fn cid(seed: &str) -> String {
    let mut s = String::new();
    for b in seed.bytes().cycle().take(32) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A pod on `node` with one container `app` (plus `extra` containers),
/// running with `ip`.
fn pod(ns: &str, name: &str, uid: &str, node: &str, ip: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "uid": uid, "labels": {}, "annotations": {}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": format!("registry.local:5000/{ns}/{name}:1.2.3")}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "containerStatuses": [status("app", name)]}
    })
}

fn status(container: &str, pod: &str) -> Value {
    json!({"name": container, "image": "x", "imageID": "", "ready": true, "restartCount": 0,
           "containerID": format!("containerd://{}", cid(&format!("{pod}/{container}")))})
}

fn with_owner(mut p: Value, kind: &str, name: &str) -> Value {
    p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": format!("owner-{name}"), "controller": true}]);
    p
}

fn with_label(mut p: Value, k: &str, v: &str) -> Value {
    p["metadata"]["labels"][k] = json!(v);
    p
}

fn with_annotation(mut p: Value, k: &str, v: &str) -> Value {
    p["metadata"]["annotations"][k] = json!(v);
    p
}

fn with_container(mut p: Value, container: &str) -> Value {
    let name = p["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if let Some(c) = p["spec"]["containers"].as_array_mut() {
        c.push(json!({"name": container, "image": "sidecar:9"}));
    }
    if let Some(s) = p["status"]["containerStatuses"].as_array_mut() {
        s.push(status(container, &name));
    }
    p
}

fn namespace(name: &str, labels: Value, annotations: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels, "annotations": annotations}})
}

/// The kubelet's `/var/log/containers` name of a container's log.
fn log_file(dir: &Path, ns: &str, pod: &str, container: &str) -> PathBuf {
    dir.join(format!(
        "{pod}_{ns}_{container}-{}.log",
        cid(&format!("{pod}/{container}"))
    ))
}

fn line(path: &Path, text: &str) {
    append(
        path,
        &format!("{} stdout F {text}\n", cri_ts(Duration::ZERO)),
    );
}

struct Setup {
    _tmp: tempfile::TempDir,
    logs: PathBuf,
    mecha: Mecha,
    http: String,
}

/// Starts `mecha standalone` tailing a temp `containers` dir, with
/// `agent.kubernetes` pointed at `api` and the given extra settings.
fn start(api: &FakeApiServer, kube_extra: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let logs = tmp.path().join("containers");
    std::fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("{e}"));
    let cfg = tmp.path().join("mecha.yaml");
    std::fs::write(
        &cfg,
        format!(
            "agent:\n  sources:\n    containers:\n      type: tail\n      include: [\"{}/*.log\"]\n      rescan_interval: 200ms\n  kubernetes:\n    enabled: true\n    node_name: {NODE}\n    api_server: {}\n    pod_labels: [\"app\", \"team\"]\n    pod_annotations: [\"note/*\"]\n    namespace_labels: [\"tier\"]\n    backoff_initial: 100ms\n    backoff_max: 1s\n{kube_extra}aggregator:\n  commit_interval: 200ms\n",
            logs.display(),
            api.url()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let data = tmp.path().join("data");
    let cfg = cfg.to_str().unwrap_or_default().to_owned();
    let args = [
        "--config",
        &cfg,
        "--http",
        "127.0.0.1:0",
        "--grpc",
        "off",
        "--admin",
        "127.0.0.1:0",
    ];
    let mecha = Mecha::start("standalone", &data, &args);
    let http = mecha.addr("http");
    Setup {
        _tmp: tmp,
        logs,
        mecha,
        http,
    }
}

/// The single hit of the free-text search `word`, once indexed.
fn hit(http: &str, word: &str) -> Value {
    wait_for(
        &format!("the record {word:?}"),
        Duration::from_secs(60),
        || hits(&search(http, word, 10)).into_iter().next(),
    )
}

fn res<'a>(h: &'a Value, key: &str) -> Option<&'a str> {
    h["resource"][key].as_str()
}

fn metrics(mecha: &Mecha) -> String {
    let admin = mecha.addr("admin");
    reqwest::blocking::get(format!("http://{admin}/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_default()
}

/// The sum of the samples of `name` whose labels contain every `labels`.
fn metric(mecha: &Mecha, name: &str, labels: &[&str]) -> f64 {
    metrics(mecha)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|x| l.contains(x))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Posts a Sentry event with `message` from the local address `from`.
fn sentry_event(mecha: &Mecha, from: &str, message: &str) {
    let sentry = mecha.addr("sentry");
    let from: IpAddr = from.parse().unwrap_or_else(|e| panic!("{e}"));
    let client = reqwest::blocking::Client::builder()
        .local_address(from)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let id = uuid_like(message);
    let event = format!(
        "{{\"event_id\":\"{id}\",\"level\":\"error\",\"platform\":\"python\",\"message\":\"{message}\"}}"
    );
    let body = format!("{{\"event_id\":\"{id}\"}}\n{{\"type\":\"event\"}}\n{event}\n");
    let resp = client
        .post(format!("http://{sentry}/api/1/envelope/"))
        .header("content-type", "application/x-sentry-envelope")
        .header(
            "x-sentry-auth",
            "Sentry sentry_key=abc, sentry_version=7, sentry_client=e2e/1.0",
        )
        .body(body)
        .send()
        .unwrap_or_else(|e| panic!("sentry POST from {from}: {e}"));
    assert_eq!(resp.status().as_u16(), 200, "sentry POST from {from}");
}

fn uuid_like(seed: &str) -> String {
    let mut s: String = cid(seed).chars().take(32).collect();
    // Distinct per message even for messages sharing a prefix.
    let h = seed
        .bytes()
        .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
    s.replace_range(16.., &format!("{h:016x}"));
    s
}

#[test]
fn records_carry_their_pods_metadata_through_its_lifecycle() {
    let api = FakeApiServer::start();
    api.put_namespace(namespace(
        "shop",
        json!({"tier": "web", "other": "x"}),
        json!({}),
    ));
    api.put_namespace(namespace("batch", json!({}), json!({})));
    api.put_namespace(namespace(
        "quiet",
        json!({}),
        json!({"mecha.io/exclude": "true"}),
    ));
    let web = with_label(
        with_label(
            with_owner(
                pod(
                    "shop",
                    "web-5c8d7f9b4-x2kqp",
                    "uid-web-1",
                    NODE,
                    "127.0.0.5",
                ),
                "ReplicaSet",
                "web-5c8d7f9b4",
            ),
            "pod-template-hash",
            "5c8d7f9b4",
        ),
        "app",
        "web",
    );
    let web = with_annotation(with_annotation(web, "note/owner", "ann"), "other/x", "y");
    let web = with_annotation(
        with_container(web, "sidecar"),
        "mecha.io/exclude-containers",
        "sidecar",
    );
    api.put_pod(web.clone());
    api.put_pod(with_owner(
        pod(
            "batch",
            "backup-29000000-abcde",
            "uid-job",
            NODE,
            "127.0.0.6",
        ),
        "Job",
        "backup-29000000",
    ));
    api.put_pod(with_owner(
        pod("batch", "db-0", "uid-db", NODE, "127.0.0.7"),
        "StatefulSet",
        "db",
    ));
    api.put_pod(with_annotation(
        pod("shop", "logfmt-1", "uid-logfmt", NODE, "127.0.0.8"),
        "mecha.io/parser",
        "logfmt",
    ));
    api.put_pod(with_annotation(
        pod("shop", "trace-1", "uid-trace", NODE, "127.0.0.13"),
        "mecha.io/multiline",
        "java",
    ));
    api.put_pod(with_annotation(
        pod("shop", "hidden-1", "uid-hidden", NODE, "127.0.0.9"),
        "mecha.io/exclude",
        "true",
    ));
    api.put_pod(pod("quiet", "q-1", "uid-quiet", NODE, "127.0.0.10"));
    // Another node's pod is not this agent's business.
    api.put_pod(with_label(
        pod("shop", "elsewhere-1", "uid-else", "node-2", "127.0.0.11"),
        "app",
        "elsewhere",
    ));

    let s = start(
        &api,
        "    wait_for_metadata: 30s\n    delay_deletion: 60s\n",
    );
    let http = s.http.clone();

    // A file whose pod the API server does not know yet waits for it.
    let late = log_file(&s.logs, "shop", "late-1", "app");
    line(&late, "lateline0 arrives after its pod");
    let web_log = log_file(&s.logs, "shop", "web-5c8d7f9b4-x2kqp", "app");
    line(&web_log, "webline1 hello");
    line(
        &log_file(&s.logs, "shop", "web-5c8d7f9b4-x2kqp", "sidecar"),
        "sidecarline1 dropped",
    );
    line(
        &log_file(&s.logs, "batch", "backup-29000000-abcde", "app"),
        "jobline1 done",
    );
    line(&log_file(&s.logs, "batch", "db-0", "app"), "dbline1 ready");
    line(
        &log_file(&s.logs, "shop", "logfmt-1", "app"),
        "msg=logfmtline1 user=bob level=warn",
    );
    let trace = [
        "2024-01-15 10:20:30 ERROR traceline1 checkout failed",
        "java.lang.IllegalStateException: traceboom",
        "\tat com.shop.Cart.add(Cart.java:10)",
        "\tat com.shop.Main.main(Main.java:3)",
    ];
    let trace_log = log_file(&s.logs, "shop", "trace-1", "app");
    for l in trace {
        line(&trace_log, l);
    }
    line(&trace_log, "2024-01-15 10:20:31 INFO traceline2 next");
    line(
        &log_file(&s.logs, "shop", "hidden-1", "app"),
        "hiddenline1 dropped",
    );
    line(
        &log_file(&s.logs, "quiet", "q-1", "app"),
        "quietline1 dropped",
    );
    api.put_pod(with_label(
        pod("shop", "late-1", "uid-late", NODE, "127.0.0.12"),
        "app",
        "late",
    ));

    let h = hit(&http, "webline1");
    for (k, v) in [
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "web-5c8d7f9b4-x2kqp"),
        ("k8s.pod.uid", "uid-web-1"),
        ("k8s.container.name", "app"),
        ("k8s.node.name", NODE),
        ("k8s.replicaset.name", "web-5c8d7f9b4"),
        ("k8s.deployment.name", "web"),
        ("k8s.pod.label.app", "web"),
        ("k8s.pod.annotation.note/owner", "ann"),
        ("k8s.namespace.label.tier", "web"),
        (
            "container.image.name",
            "registry.local:5000/shop/web-5c8d7f9b4-x2kqp",
        ),
        ("container.image.tag", "1.2.3"),
    ] {
        assert_eq!(res(&h, k), Some(v), "{k} of {h:#}");
    }
    for absent in [
        "k8s.pod.label.pod-template-hash",
        "k8s.pod.annotation.other/x",
        "k8s.namespace.label.other",
    ] {
        assert_eq!(res(&h, absent), None, "{absent} is not selected: {h:#}");
    }
    let job = hit(&http, "jobline1");
    assert_eq!(res(&job, "k8s.job.name"), Some("backup-29000000"));
    assert_eq!(res(&job, "k8s.cronjob.name"), Some("backup"));
    assert_eq!(
        res(&hit(&http, "dbline1"), "k8s.statefulset.name"),
        Some("db")
    );
    let lf = hit(&http, "logfmtline1");
    assert_eq!(
        lf["attributes"]["user"], "bob",
        "mecha.io/parser: logfmt: {lf:#}"
    );
    // mecha.io/multiline: java: the stack trace is one record.
    let tr = hit(&http, "traceline1");
    assert_eq!(tr["body"], trace.join("\n"), "{tr:#}");
    assert_eq!(total(&search(&http, "traceboom", 10)), 1);
    assert_eq!(
        hits(&search(&http, "traceboom", 10))
            .first()
            .map(|h| h["body"].clone()),
        Some(tr["body"].clone())
    );
    let late_hit = hit(&http, "lateline0");
    assert_eq!(
        res(&late_hit, "k8s.pod.label.app"),
        Some("late"),
        "a new file waits for its pod: {late_hit:#}"
    );

    // Excluded: by container, by pod, by namespace. Their lines were read
    // and dropped (counted), so none of them can still come.
    wait_for(
        "the excluded lines dropped",
        Duration::from_secs(30),
        || {
            (metric(
                &s.mecha,
                "mecha_component_discarded_events_total",
                &["reason=\"excluded\""],
            ) >= 3.0)
                .then_some(())
        },
    );
    assert_eq!(
        metric(&s.mecha, "mecha_kube_files_excluded_total", &[]),
        3.0
    );
    line(&web_log, "webline2 after the excluded ones");
    hit(&http, "webline2");
    for word in ["sidecarline1", "hiddenline1", "quietline1"] {
        assert_eq!(total(&search(&http, word, 10)), 0, "{word} is excluded");
    }

    // The agent asked for this node's pods only, with bookmarks.
    let asked = api.requests();
    assert!(
        asked.iter().filter(|r| r.kind == Kind::Pods).all(|r| {
            r.query.get("fieldSelector").map(String::as_str) == Some("spec.nodeName=node-1")
        }),
        "{asked:?}"
    );
    assert!(
        asked
            .iter()
            .any(|r| r.watch
                && r.query.get("allowWatchBookmarks").map(String::as_str) == Some("true"))
    );

    // Labels change: later records carry the new ones.
    api.put_pod(with_label(web.clone(), "team", "blue"));
    wait_for("the new label", Duration::from_secs(30), || {
        let word = format!("webline3x{}", api.resource_version());
        line(&web_log, &word);
        let h = hit(&http, &word);
        (res(&h, "k8s.pod.label.team") == Some("blue")).then_some(())
    });

    // Sentry: the sender's IP names the pod.
    sentry_event(&s.mecha, "127.0.0.5", "sentryfromweb");
    let ev = hit(&http, "sentryfromweb");
    assert_eq!(
        res(&ev, "k8s.pod.name"),
        Some("web-5c8d7f9b4-x2kqp"),
        "{ev:#}"
    );
    assert_eq!(res(&ev, "k8s.deployment.name"), Some("web"));
    sentry_event(&s.mecha, "127.0.0.200", "sentryfromnobody");
    assert_eq!(res(&hit(&http, "sentryfromnobody"), "k8s.pod.name"), None);
    assert!(
        metric(
            &s.mecha,
            "mecha_kube_records_without_metadata_total",
            &["component=\"sentry\""]
        ) >= 1.0
    );

    // The pod is deleted: for delay_deletion its IP still names it.
    let pods_now = || metric(&s.mecha, "mecha_kube_cache_pods", &[]);
    let before = pods_now();
    api.delete_pod("shop", "web-5c8d7f9b4-x2kqp");
    // Watch events are applied in order: once this one is in, so is the
    // DELETE.
    api.put_pod(pod("shop", "marker-1", "uid-marker", NODE, "127.0.0.14"));
    wait_for("the DELETE applied", Duration::from_secs(30), || {
        (pods_now() > before).then_some(())
    });
    sentry_event(&s.mecha, "127.0.0.5", "sentryafterdelete");
    let ev = hit(&http, "sentryafterdelete");
    assert_eq!(res(&ev, "k8s.pod.uid"), Some("uid-web-1"), "{ev:#}");
    // A new pod gets the IP: it wins at once, though it claims to be older
    // than the deleted one (only the DELETE frees the IP for it; the newer
    // creationTimestamp rule alone would keep the old pod).
    let before = pods_now();
    let mut successor = with_label(
        with_owner(
            pod(
                "shop",
                "web-5c8d7f9b4-r7tzm",
                "uid-web-2",
                NODE,
                "127.0.0.5",
            ),
            "ReplicaSet",
            "web-5c8d7f9b4",
        ),
        "app",
        "web",
    );
    successor["metadata"]["creationTimestamp"] = json!("2020-01-01T00:00:00Z");
    api.put_pod(successor);
    wait_for("the new pod in the cache", Duration::from_secs(30), || {
        (pods_now() > before).then_some(())
    });
    sentry_event(&s.mecha, "127.0.0.5", "sentryafterreuse");
    let ev = hit(&http, "sentryafterreuse");
    assert_eq!(
        res(&ev, "k8s.pod.name"),
        Some("web-5c8d7f9b4-r7tzm"),
        "{ev:#}"
    );
    assert_eq!(res(&ev, "k8s.pod.uid"), Some("uid-web-2"));
    // The deleted pod's file still finds its pod.
    line(&web_log, "webline4 last words");
    assert_eq!(
        res(&hit(&http, "webline4"), "k8s.pod.uid"),
        Some("uid-web-1")
    );
    s.mecha.stop();
}

#[test]
fn logs_keep_flowing_through_410_restarts_and_an_outage() {
    let mut api = FakeApiServer::start();
    api.put_namespace(namespace("shop", json!({"tier": "web"}), json!({})));
    api.put_pod(with_label(
        pod("shop", "a-1", "uid-a", NODE, "127.0.1.1"),
        "app",
        "a",
    ));
    let s = start(
        &api,
        "    wait_for_metadata: 1s\n    delay_deletion: 60s\n    watch_timeout: 30s\n",
    );
    let http = s.http.clone();
    let a_log = log_file(&s.logs, "shop", "a-1", "app");
    line(&a_log, "aline1");
    assert_eq!(res(&hit(&http, "aline1"), "k8s.pod.label.app"), Some("a"));

    // The history is compacted: open watches get ERROR 410 and the agent
    // lists again; a pod created after that is found.
    let lists = |api: &FakeApiServer| api.requests().iter().filter(|r| !r.watch).count();
    let lists_before = lists(&api);
    api.compact();
    api.put_pod(with_label(
        pod("shop", "b-1", "uid-b", NODE, "127.0.1.2"),
        "app",
        "b",
    ));
    let b_log = log_file(&s.logs, "shop", "b-1", "app");
    line(&b_log, "bline1");
    assert_eq!(res(&hit(&http, "bline1"), "k8s.pod.label.app"), Some("b"));
    wait_for("a re-list after 410", Duration::from_secs(30), || {
        (metric(
            &s.mecha,
            "mecha_kube_watch_restarts_total",
            &["reason=\"gone\""],
        ) >= 1.0)
            .then_some(())
    });
    assert!(lists(&api) > lists_before);

    // Restart with versions starting over: the agent's version is unknown
    // to the new server, it lists again and sees new pods.
    api.restart(true);
    api.put_pod(with_label(
        pod("shop", "c-1", "uid-c", NODE, "127.0.1.3"),
        "app",
        "c",
    ));
    wait_for(
        "pod c after the reset restart",
        Duration::from_secs(60),
        || {
            let word = format!("clinex{}", api.resource_version());
            line(&log_file(&s.logs, "shop", "c-1", "app"), &word);
            (res(&hit(&http, &word), "k8s.pod.label.app") == Some("c")).then_some(())
        },
    );
    // Restart with versions continuing: the watch resumes.
    api.restart(false);
    api.put_pod(with_label(
        pod("shop", "d-1", "uid-d", NODE, "127.0.1.4"),
        "app",
        "d",
    ));
    line(&log_file(&s.logs, "shop", "d-1", "app"), "dline1");
    assert_eq!(res(&hit(&http, "dline1"), "k8s.pod.label.app"), Some("d"));

    // The API server is away: known pods keep their metadata, a new pod's
    // lines go out with what the path says, nothing waits on the server.
    let errors_before = metric(&s.mecha, "mecha_kube_api_errors_total", &[]);
    api.stop();
    let away = std::time::Instant::now();
    api.put_pod(with_label(
        pod("shop", "e-1", "uid-e", NODE, "127.0.1.5"),
        "app",
        "e",
    ));
    let e_log = log_file(&s.logs, "shop", "e-1", "app");
    let mut n = 0;
    while away.elapsed() < outage() {
        n += 1;
        line(&a_log, &format!("aoutage{n}"));
        line(&e_log, &format!("eoutage{n}"));
        let a = hit(&http, &format!("aoutage{n}"));
        assert_eq!(res(&a, "k8s.pod.label.app"), Some("a"), "{a:#}");
        let e = hit(&http, &format!("eoutage{n}"));
        assert_eq!(res(&e, "k8s.pod.name"), Some("e-1"), "{e:#}");
        assert_eq!(res(&e, "k8s.container.name"), Some("app"));
        assert_eq!(res(&e, "k8s.pod.label.app"), None, "{e:#}");
    }
    assert!(n >= 1);
    let errors = metric(&s.mecha, "mecha_kube_api_errors_total", &[]) - errors_before;
    let away_for = away.elapsed();
    assert!(errors > 0.0);
    // Two loops (pods, namespaces), each waiting at least half its window
    // between failures: the window doubles from backoff_initial (100ms) to
    // backoff_max (1s), so past the first few tries a loop fails at most
    // twice a second. A retry spin fails thousands of times a second.
    let per_loop = away_for.as_secs_f64() / 0.5 + 10.0;
    let bound = 2.0 * per_loop * 2.0;
    assert!(
        errors <= bound,
        "{errors} API errors in {away_for:?}: more than backoff allows ({bound})"
    );
    assert!(
        metric(
            &s.mecha,
            "mecha_kube_records_without_metadata_total",
            &["component=\"tail\""]
        ) >= 1.0
    );

    // Back: the cache catches up and the new pod's later lines carry it.
    api.restart(false);
    wait_for("pod e after the outage", Duration::from_secs(60), || {
        n += 1;
        let word = format!("eback{n}");
        line(&e_log, &word);
        (res(&hit(&http, &word), "k8s.pod.label.app") == Some("e")).then_some(())
    });
    assert_eq!(
        metric(&s.mecha, "mecha_kube_synced", &["resource=\"pods\""]),
        1.0
    );
    s.mecha.stop();
}

#[test]
fn watches_resume_where_they_ended_and_list_again_only_after_410() {
    let api = FakeApiServer::start();
    api.put_namespace(namespace("shop", json!({"tier": "web"}), json!({})));
    api.put_pod(with_label(
        pod("shop", "r-1", "uid-r1", NODE, "127.0.2.1"),
        "app",
        "r1",
    ));
    let s = start(&api, "    wait_for_metadata: 1s\n");
    let http = s.http.clone();
    let pod_requests = |watch: bool| -> Vec<fake_apiserver::Request> {
        api.requests()
            .into_iter()
            .filter(|r| r.kind == Kind::Pods && r.watch == watch)
            .collect()
    };
    let nth_watch = |n: usize| {
        wait_for(&format!("pod watch #{n}"), Duration::from_secs(30), || {
            pod_requests(true).get(n).cloned()
        })
    };
    let last_pod_watch_ended = |n: usize| {
        wait_for(
            &format!("{n} pod watches ended"),
            Duration::from_secs(30),
            || {
                let ended: Vec<_> = api
                    .ended()
                    .into_iter()
                    .filter(|e| e.kind == Kind::Pods)
                    .collect();
                (ended.len() >= n).then(|| ended[n - 1])
            },
        )
    };

    // Ends the watches; the `n`th pod watch ended must be resumed from the
    // last version it sent, without a list.
    let end_and_resume = |bookmark: bool, n: usize| {
        let watches = pod_requests(true).len();
        api.end_watches(bookmark);
        let ended = last_pod_watch_ended(n);
        let resumed = nth_watch(watches);
        assert_eq!(resumed.resource_version(), ended.last_sent, "{ended:?}");
        assert_eq!(pod_requests(false).len(), 1, "listed again after {ended:?}");
        ended
    };

    // The watch starts where the list was taken.
    let first = nth_watch(0);
    let lists = pod_requests(false);
    assert_eq!(lists.len(), 1, "{lists:?}");
    assert_eq!(Some(first.resource_version()), lists[0].listed_at);

    // A change, then the watch ends (no 410): the agent watches again from
    // the last version it was sent, without listing.
    let r2 = api.put_pod(with_label(
        pod("shop", "r-2", "uid-r2", NODE, "127.0.2.2"),
        "app",
        "r2",
    ));
    line(&log_file(&s.logs, "shop", "r-2", "app"), "rline2");
    assert_eq!(res(&hit(&http, "rline2"), "k8s.pod.label.app"), Some("r2"));
    let ended = end_and_resume(false, 1);
    assert!(ended.last_sent >= r2, "{ended:?} before {r2}");

    // A BOOKMARK at V (a namespace's version: no pod event carries it),
    // then the end: the agent resumes from V.
    let v = api.put_namespace(namespace("other", json!({}), json!({})));
    let ended = end_and_resume(true, 2);
    assert!(ended.last_sent >= v, "{ended:?} before {v}");

    // A watch refused with HTTP 410: the agent lists again and the
    // metadata stays right, for known pods and for one created meanwhile.
    let gone_before = metric(
        &s.mecha,
        "mecha_kube_watch_restarts_total",
        &["reason=\"gone\"", "resource=\"pods\""],
    );
    api.refuse_next_watch_with_410();
    api.end_watches(false);
    api.put_pod(with_label(
        pod("shop", "r-3", "uid-r3", NODE, "127.0.2.3"),
        "app",
        "r3",
    ));
    wait_for("a list after the 410", Duration::from_secs(30), || {
        (pod_requests(false).len() >= 2).then_some(())
    });
    assert_eq!(
        metric(
            &s.mecha,
            "mecha_kube_watch_restarts_total",
            &["reason=\"gone\"", "resource=\"pods\""],
        ),
        gone_before + 1.0
    );
    line(&log_file(&s.logs, "shop", "r-3", "app"), "rline3");
    assert_eq!(res(&hit(&http, "rline3"), "k8s.pod.label.app"), Some("r3"));
    line(&log_file(&s.logs, "shop", "r-1", "app"), "rline1");
    let h = hit(&http, "rline1");
    assert_eq!(res(&h, "k8s.pod.label.app"), Some("r1"), "{h:#}");
    assert_eq!(res(&h, "k8s.namespace.label.tier"), Some("web"), "{h:#}");
    s.mecha.stop();
}

/// Pods on this node in a large cluster: more than the agent's page of
/// 500 (`p-0000`…, labelled `app` = name, in namespace `big`), interleaved
/// in the server's order with pods of another node that the field
/// selector leaves out.
const PAGED_PODS: usize = 1201;

fn put_a_big_node(api: &FakeApiServer) {
    api.put_namespace(namespace("big", json!({"tier": "batch"}), json!({})));
    for i in 0..PAGED_PODS {
        let name = format!("p-{i:04}");
        let ip = format!("127.4.{}.{}", i / 250, i % 250 + 1);
        api.put_pod(with_label(
            pod("big", &name, &format!("uid-{name}"), NODE, &ip),
            "app",
            &name,
        ));
        if i % 10 == 0 {
            let other = format!("p-{i:04}-elsewhere");
            api.put_pod(pod(
                "big",
                &other,
                &format!("uid-{other}"),
                "node-2",
                "127.5.0.1",
            ));
        }
    }
}

/// The pod list requests, once the first pod watch has started (the list
/// is then complete).
fn pod_lists_before_the_watch(api: &FakeApiServer) -> Vec<fake_apiserver::Request> {
    wait_for("the first pod watch", Duration::from_secs(60), || {
        api.requests()
            .iter()
            .any(|r| r.kind == Kind::Pods && r.watch)
            .then_some(())
    });
    api.requests()
        .into_iter()
        .filter(|r| r.kind == Kind::Pods && !r.watch)
        .collect()
}

/// Waits for the cache to hold `pods` pods, then checks that a log line of
/// each named pod comes back with its pod's and namespace's labels.
fn cached_with_labels(s: &Setup, pods: usize, names: &[&str]) {
    wait_for(
        "every pod of the node cached",
        Duration::from_secs(30),
        || (metric(&s.mecha, "mecha_kube_cache_pods", &[]) == pods as f64).then_some(()),
    );
    for name in names {
        let word = format!("paged{}", name.replace('-', ""));
        line(&log_file(&s.logs, "big", name, "app"), &word);
        let h = hit(&s.http, &word);
        assert_eq!(res(&h, "k8s.pod.label.app"), Some(*name), "{h:#}");
        assert_eq!(res(&h, "k8s.namespace.label.tier"), Some("batch"), "{h:#}");
    }
}

#[test]
fn a_node_of_more_pods_than_a_page_is_listed_page_by_page_into_the_cache() {
    // Three pages of at most 500, each but the last followed by its token.
    let api = FakeApiServer::start();
    put_a_big_node(&api);
    let s = start(&api, "");
    let lists = pod_lists_before_the_watch(&api);
    assert_eq!(lists.len(), 3, "{lists:?}");
    let continued: Vec<Option<&str>> = lists
        .iter()
        .map(|r| r.query.get("continue").map(String::as_str))
        .collect();
    assert_eq!(continued[0], None, "{lists:?}");
    assert!(
        continued[1..]
            .iter()
            .all(|c| c.is_some_and(|c| !c.is_empty())),
        "{lists:?}"
    );
    for r in &lists {
        assert_eq!(
            r.query.get("limit").map(String::as_str),
            Some("500"),
            "{r:?}"
        );
        assert!(
            r.query
                .get("fieldSelector")
                .is_some_and(|f| f.contains(NODE)),
            "{r:?}"
        );
    }
    // The watch starts at the version of the whole list.
    let first_watch = api
        .requests()
        .into_iter()
        .find(|r| r.kind == Kind::Pods && r.watch)
        .map(|r| r.resource_version());
    assert_eq!(first_watch, lists[2].listed_at, "{lists:?}");
    // A pod of each page is known to the cache.
    cached_with_labels(
        &s,
        PAGED_PODS,
        &["p-0000", "p-0499", "p-0500", "p-0999", "p-1000", "p-1200"],
    );
    s.mecha.stop();
}

#[test]
fn a_list_whose_continue_token_expires_mid_way_is_listed_again_whole() {
    // A pod is created while the agent pages through the list: the server
    // answers the next page 410 Gone (the token's snapshot is no longer
    // served), and the agent must list again from the first page, not
    // keep a cache of the pages it had.
    let api = FakeApiServer::start();
    put_a_big_node(&api);
    api.put_pod_before_next_page(with_label(
        pod("big", "p-late", "uid-p-late", NODE, "127.4.9.1"),
        "app",
        "p-late",
    ));
    let s = start(&api, "");
    let lists = pod_lists_before_the_watch(&api);
    let shape: Vec<(bool, Option<u64>)> = lists
        .iter()
        .map(|r| {
            (
                r.query.get("continue").is_some_and(|c| !c.is_empty()),
                r.listed_at,
            )
        })
        .collect();
    // Page 1, page 2 refused (no version: an error), then pages 1 to 3.
    assert_eq!(shape.len(), 5, "{lists:?}");
    assert_eq!(shape[1], (true, None), "{lists:?}");
    assert!(!shape[2].0, "the list did not start again: {lists:?}");
    assert!(shape[3..].iter().all(|(c, _)| *c), "{lists:?}");
    assert!(
        metric(
            &s.mecha,
            "mecha_kube_api_errors_total",
            &["resource=\"pods\""]
        ) >= 1.0,
        "{}",
        metrics(&s.mecha)
    );
    cached_with_labels(
        &s,
        PAGED_PODS + 1,
        &["p-0000", "p-0700", "p-1200", "p-late"],
    );
    s.mecha.stop();
}
