//! Helpers shared by the end-to-end tests: run the real `mecha` binary in a temp
//! dir, find its listeners, query its search API, stop it with SIGTERM.

#![allow(dead_code)]

pub mod load;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `mecha` process.
pub struct Mecha {
    pub child: Child,
    pub data_dir: PathBuf,
    listeners: Option<Value>,
}

impl Mecha {
    /// Starts `mecha <args>` with `--data-dir data_dir` and waits for its listeners file.
    pub fn start(role: &str, data_dir: &Path, args: &[&str]) -> Mecha {
        Mecha::spawn(
            role,
            data_dir,
            args,
            Stdio::null(),
            Stdio::inherit(),
            String::new,
        )
    }

    /// Like [`Mecha::start`] with the process's output sent where the caller
    /// says; `describe` adds context (e.g. its log) if it exits early.
    pub fn spawn(
        role: &str,
        data_dir: &Path,
        args: &[&str],
        stdout: Stdio,
        stderr: Stdio,
        describe: impl Fn() -> String,
    ) -> Mecha {
        let _ = std::fs::remove_file(data_dir.join("listeners.json"));
        // The Sentry endpoint is on by default at :9000; tests that do not
        // ask for it take a free port so that parallel tests never collide.
        let sentry: &[&str] = if role != "aggregator" && !args.contains(&"--sentry") {
            &["--sentry", "127.0.0.1:0"]
        } else {
            &[]
        };
        let child = Command::new(env!("CARGO_BIN_EXE_mecha"))
            .arg(role)
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .args(sentry)
            .env("MECHA_LOG", "info")
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start mecha: {e}"));
        let mut m = Mecha {
            child,
            data_dir: data_dir.to_path_buf(),
            listeners: None,
        };
        let path = data_dir.join("listeners.json");
        let l = wait_for("listeners.json", Duration::from_secs(60), || {
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!("mecha {role} exited early: {status}\n{}", describe());
            }
            std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        });
        m.listeners = Some(l);
        m
    }

    /// The bound address of a listener (`http`, `grpc`, `admin`).
    pub fn addr(&self, name: &str) -> String {
        self.listeners
            .as_ref()
            .and_then(|l| l.get(name))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no {name} listener in {:?}", self.listeners))
            .to_string()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) {
        terminate(&mut self.child);
    }

    /// Kills the process without warning.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Mecha {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn terminate(child: &mut Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                assert!(status.success(), "mecha exited with {status}");
                return;
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => panic!("mecha did not stop within 20 s of SIGTERM"),
        }
    }
}

/// Polls `f` until it returns `Some`, panicking after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a search and returns the JSON answer.
pub fn search(http: &str, q: &str, limit: usize) -> Value {
    let url = format!("http://{http}/api/v1/logs/search");
    let resp = reqwest::blocking::Client::new()
        .get(url)
        .query(&[("q", q), ("from", "now-2d"), ("limit", &limit.to_string())])
        .send()
        .unwrap_or_else(|e| panic!("search request failed: {e}"));
    let status = resp.status();
    let body: Value = resp
        .json()
        .unwrap_or_else(|e| panic!("search answer is not JSON: {e}"));
    assert!(status.is_success(), "search {q:?} failed: {status} {body}");
    body
}

/// The `total` of a search.
pub fn total(v: &Value) -> u64 {
    v.get("total").and_then(Value::as_u64).unwrap_or(0)
}

/// The hits of a search.
pub fn hits(v: &Value) -> Vec<Value> {
    v.get("hits")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// A CRI timestamp for "now minus `ago`".
pub fn cri_ts(ago: Duration) -> String {
    let t = chrono::Utc::now() - chrono::Duration::from_std(ago).unwrap_or_default();
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Appends text to a file, creating it.
pub fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
