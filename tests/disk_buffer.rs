//! The agent's disk buffer, end to end: the agent keeps collecting while the
//! aggregator is away (the buffer grows, then drains), and a full disk makes
//! it not ready without losing anything — the files wait until space returns.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::load::{metric_sum, metrics_text};
use common::{Mecha, append, cri_ts, search, total, wait_for};

/// A free local port for a process started later.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A metric of the agent; `None` when the agent does not answer or does not
/// export it.
fn metric(admin: &str, name: &str) -> Option<f64> {
    let text = metrics_text(admin)?;
    text.contains(name).then(|| metric_sum(&text, name, &[]))
}

fn ready(admin: &str) -> (u16, String) {
    match reqwest::blocking::get(format!("http://{admin}/ready")) {
        Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Appends lines `from..to`, each with 200 pseudo-random hex digits: the
/// agent buffers zstd-compressed chunks, and these tests need the buffer to
/// hold about half the bytes written, not a few percent.
fn write_lines(file: &Path, tag: &str, from: usize, to: usize) {
    let mut text = String::new();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ from as u64;
    for i in from..to {
        let mut noise = String::with_capacity(200);
        for _ in 0..13 {
            // xorshift64: enough entropy that zstd cannot shrink it much.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            noise.push_str(&format!("{state:016x}"));
        }
        text.push_str(&format!(
            "{} stdout F {tag} line {i} {noise}\n",
            cri_ts(Duration::from_secs(60)),
        ));
    }
    append(file, &text);
}

/// A test's temp dir: one log file, and the agent's config pointing at an
/// aggregator port that may not be listening yet.
struct Rig {
    tmp: tempfile::TempDir,
    file: PathBuf,
    port: u16,
    config: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let logs = tmp.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("{e}"));
        let port = free_port();
        let config = tmp.path().join("agent.yaml");
        let text = format!(
            "agent:\n  sources:\n    app:\n      type: tail\n      include: [\"{}/*.log\"]\n  forward:\n    endpoint: http://127.0.0.1:{port}\n  buffer:\n    type: disk\n    segment_size: 64KiB\n    fsync_interval: 100ms\n",
            logs.display()
        );
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
        Rig {
            file: logs.join("app.log"),
            tmp,
            port,
            config,
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Starts the agent with its data in `data`; returns it and its admin address.
    fn agent(&self, data: &Path) -> (Mecha, String) {
        let config = self.config.to_str().unwrap_or_default();
        let agent = Mecha::start(
            "agent",
            data,
            &["--config", config, "--admin", "127.0.0.1:0"],
        );
        let admin = agent.addr("admin");
        (agent, admin)
    }

    /// Starts the aggregator on the port the agent forwards to.
    fn aggregator(&self) -> Mecha {
        let grpc = format!("127.0.0.1:{}", self.port);
        Mecha::start(
            "aggregator",
            &self.dir("agg"),
            &["--grpc", &grpc, "--http", "127.0.0.1:0"],
        )
    }
}

#[test]
fn the_buffer_grows_while_the_aggregator_is_away_and_drains_when_it_returns() {
    let rig = Rig::new();
    let (agent, admin) = rig.agent(&rig.dir("agent"));
    write_lines(&rig.file, "away", 0, 2000);

    // No aggregator: the lines are in the buffer, and the checkpoint has
    // moved past them (the file is no longer what holds them).
    wait_for(
        "the buffer to hold 2000 lines",
        Duration::from_secs(60),
        || {
            let text = metrics_text(&admin)?;
            let read = metric_sum(
                &text,
                "mecha_component_received_events_total",
                &["component=\"tail\""],
            );
            let lag = metric(&admin, "mecha_tail_checkpoint_lag_bytes")?;
            let chunks = metric(&admin, "mecha_buffer_chunks")?;
            (read >= 2000.0 && lag == 0.0 && chunks > 0.0).then_some(())
        },
    );

    let aggregator = rig.aggregator();
    let http = aggregator.addr("http");
    wait_for("2000 lines indexed", Duration::from_secs(90), || {
        (total(&search(&http, "away", 1)) == 2000).then_some(())
    });
    wait_for("the buffer to drain", Duration::from_secs(30), || {
        (metric(&admin, "mecha_buffer_chunks")? == 0.0).then_some(())
    });
    assert_eq!(total(&search(&http, "away", 1)), 2000, "nothing duplicated");
    agent.stop();
    aggregator.stop();
}

/// Unmounts (lazily) on drop, so a failing test leaves no mount behind.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap_or_else(|e| panic!("{e}"));
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "this test needs root to mount a small tmpfs at {}",
            at.display()
        );
        Mount(at.to_path_buf())
    }
}

impl Mount {
    fn read_only_bind(at: &Path) -> Mount {
        let bound = Command::new("mount")
            .arg("--bind")
            .arg(at)
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(bound, "this test needs root to bind-mount {}", at.display());
        // Unmounted on drop from here on, even if the next step fails.
        let mount = Mount(at.to_path_buf());
        let read_only = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(read_only, "cannot make {} read-only", at.display());
        mount
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_makes_the_agent_unready_and_it_resumes_without_loss() {
    let rig = Rig::new();
    let data = rig.dir("agent");
    let _mount = Mount::tmpfs(&data, "4m");
    let (agent, admin) = rig.agent(&data);

    // About 10 MB of lines (chunks of up to 1 MiB): more than twice what
    // the data dir can hold.
    let lines = 40_000;
    write_lines(&rig.file, "full", 0, lines);
    wait_for(
        "the agent to report the full disk",
        Duration::from_secs(60),
        || {
            let (status, body) = ready(&admin);
            (status == 503 && body.contains("buffer") && body.contains("write failed"))
                .then_some(())
        },
    );

    // The aggregator comes: the buffer drains, space returns, reading resumes.
    let aggregator = rig.aggregator();
    let http = aggregator.addr("http");
    wait_for("every line indexed", Duration::from_secs(120), || {
        (total(&search(&http, "full", 1)) >= lines as u64).then_some(())
    });
    wait_for(
        "the agent to be ready again",
        Duration::from_secs(30),
        || (ready(&admin).0 == 200).then_some(()),
    );
    assert_eq!(
        total(&search(&http, "full", 1)),
        lines as u64,
        "nothing duplicated"
    );
    agent.stop();
    aggregator.stop();
}

/// A data dir that turns read-only under the running agent: a read-only
/// bind mount over it. (A plain `remount,ro` is refused while files are open
/// for writing.) Files the agent already holds stay writable, as they do when
/// a filesystem is remounted read-only after an error; every new file — the
/// next segment, the ack file, a checkpoint — fails with EROFS.
#[test]
fn a_read_only_data_dir_makes_the_agent_unready_until_it_is_writable_again() {
    let rig = Rig::new();
    let data = rig.dir("agent");
    let aggregator = rig.aggregator();
    let http = aggregator.addr("http");
    let (agent, admin) = rig.agent(&data);
    write_lines(&rig.file, "before", 0, 100);
    wait_for("the first lines indexed", Duration::from_secs(60), || {
        (total(&search(&http, "before", 1)) == 100).then_some(())
    });

    let read_only = Mount::read_only_bind(&data);
    // More than a segment (64 KiB): the buffer must open a new file.
    write_lines(&rig.file, "during", 0, 2000);
    wait_for(
        "the agent to report the read-only data dir",
        Duration::from_secs(60),
        || {
            let (status, body) = ready(&admin);
            (status == 503 && body.contains("buffer") && body.contains("Read-only")).then_some(())
        },
    );
    let held = total(&search(&http, "during", 1));
    assert!(held < 2000, "lines passed a buffer that cannot write");

    drop(read_only);
    wait_for("the held lines indexed", Duration::from_secs(60), || {
        (total(&search(&http, "during", 1)) == 2000).then_some(())
    });
    wait_for(
        "the agent to be ready again",
        Duration::from_secs(30),
        || (ready(&admin).0 == 200).then_some(()),
    );
    assert_eq!(
        total(&search(&http, "before", 1)),
        100,
        "nothing duplicated"
    );
    agent.stop();
    aggregator.stop();
}
