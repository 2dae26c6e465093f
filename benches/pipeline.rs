//! End-to-end load harness of the agent: generates CRI logs over many files,
//! runs the real `mecha agent` binary against an OTLP/gRPC sink that only counts
//! records, and reports throughput, CPU-seconds per GiB and peak RSS from first
//! byte to last acknowledged batch — next to `cat` of the same files, the
//! read-from-page-cache floor measured in the same run.
//!
//! `cargo bench --bench pipeline` (1 GiB over 100 files by default; set
//! `MECHA_BENCH_BYTES` and `MECHA_BENCH_FILES` to change the size).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod support;
use support::{CountingSink, env_u64, proc_usage};
use tonic::transport::server::TcpIncoming;

/// Writes `bytes` of CRI lines over `files` files; returns the number of lines.
fn generate(dir: &Path, bytes: u64, files: u64) -> std::io::Result<u64> {
    let per_file = bytes / files.max(1);
    let mut lines = 0;
    for f in 0..files {
        let path = dir.join(format!("svc-{f}-7d9f8b-x2x9z_bench_app-{:064x}.log", f));
        let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut written = 0u64;
        let mut i = 0u64;
        while written < per_file {
            // Real runtimes stamp every line with nanoseconds, so no two files
            // start with the same line.
            let ts = format!(
                "2026-11-23T10:{:02}:{:02}.{:09}Z",
                f % 60,
                (i / 1_000_000) % 60,
                i % 1_000_000_000
            );
            let line = match i % 4 {
                0 => format!(
                    "{ts} stdout F {{\"level\":\"info\",\"msg\":\"request handled\",\"path\":\"/api/v1/orders/{i}\",\"status\":200,\"duration_ms\":12.5,\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e{i:04x}\"}}\n"
                ),
                1 => format!(
                    "{ts} stdout F level=warn msg=\"slow query\" table=orders rows={i} took=1.2s caller=db.go:118\n"
                ),
                2 => format!(
                    "{ts} stderr F 2026-11-23 10:00:00.123 INFO 1 --- [nio-8080-exec-{}] c.s.OrderController : order {i} accepted for customer 42\n",
                    i % 10
                ),
                _ => format!(
                    "{ts} stdout P partial part of a long line number {i} that the runtime split \n{ts} stdout F and its end\n"
                ),
            };
            w.write_all(line.as_bytes())?;
            written += line.len() as u64;
            lines += 1;
            i += 1;
        }
        w.flush()?;
    }
    Ok(lines)
}

fn children_cpu_seconds() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY-free alternative is not available in std; getrusage only writes the struct.
    #[allow(unsafe_code)]
    let u = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, u.as_mut_ptr());
        u.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Seconds the agent's forwarder spent waiting for acknowledgements, and the
/// number of batches, from its `/metrics`: tells a slow sink from a slow agent.
fn ack_wait(data_dir: &Path) -> Option<(f64, u64)> {
    let listeners = std::fs::read(data_dir.join("listeners.json")).ok()?;
    let listeners: serde_json::Value = serde_json::from_slice(&listeners).ok()?;
    let admin = listeners.get("admin")?.as_str()?;
    let text = reqwest::blocking::get(format!("http://{admin}/metrics"))
        .ok()?
        .text()
        .ok()?;
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some((
        value("mecha_forward_ack_latency_seconds_sum")?,
        value("mecha_forward_ack_latency_seconds_count")? as u64,
    ))
}

fn main() {
    // `cargo test --benches` runs bench targets with no arguments; `cargo bench`
    // passes `--bench`. Only the latter should generate a gigabyte.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let bytes = env_u64("MECHA_BENCH_BYTES", 1 << 30);
    let files = env_u64("MECHA_BENCH_FILES", 100);
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => return eprintln!("pipeline bench: tempdir: {e}"),
    };
    let logs = tmp.path().join("logs");
    if let Err(e) = std::fs::create_dir_all(&logs) {
        return eprintln!("pipeline bench: {e}");
    }
    let lines = match generate(&logs, bytes, files) {
        Ok(n) => n,
        Err(e) => return eprintln!("pipeline bench: generating: {e}"),
    };
    let total_bytes: u64 = std::fs::read_dir(&logs)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let mib = total_bytes as f64 / (1 << 20) as f64;
    println!("pipeline: {mib:.0} MiB, {lines} records over {files} files");

    // Baseline: cat of the same files from the page cache (run twice, keep the second).
    let mut cat_secs = 0.0;
    let mut cat_cpu = 0.0;
    for _ in 0..2 {
        let cpu0 = children_cpu_seconds();
        let t = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("cat {}/*.log > /dev/null", logs.display()))
            .status();
        cat_secs = t.elapsed().as_secs_f64();
        cat_cpu = children_cpu_seconds() - cpu0;
        if !status.map(|s| s.success()).unwrap_or(false) {
            return eprintln!("pipeline bench: cat failed");
        }
    }

    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return eprintln!("pipeline bench: runtime: {e}"),
    };
    let count = Arc::new(AtomicU64::new(0));
    let listener = match rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")) {
        Ok(l) => l,
        Err(e) => return eprintln!("pipeline bench: bind: {e}"),
    };
    let addr: SocketAddr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => return eprintln!("pipeline bench: {e}"),
    };
    let svc = CountingSink(count.clone());
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
    );

    // Partial (P) lines merge with their F line: one record per pair.
    let expected_records = lines;
    let t = Instant::now();
    // Diagnostics: `MECHA_BENCH_AGENT_PREFIX="heaptrack -o /tmp/agent"` (or
    // `perf record -g --`) runs the agent under a tool, and `MECHA_BENCH_BIN`
    // another build of it. The CPU and RSS printed are then the prefix
    // command's, not the agent's alone.
    let bin =
        std::env::var("MECHA_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_mecha").into());
    let prefix = std::env::var("MECHA_BENCH_AGENT_PREFIX").unwrap_or_default();
    let mut words = prefix
        .split_whitespace()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    words.push(bin);
    let mut command = Command::new(&words[0]);
    command.args(&words[1..]);

    let child = command
        .args([
            "agent",
            "--admin",
            "127.0.0.1:0",
            "--sentry",
            "off",
            "--data-dir",
        ])
        .arg(tmp.path().join("data"))
        .arg("--include")
        .arg(format!("{}/*.log", logs.display()))
        .arg("--forward")
        .arg(format!("http://{addr}"))
        // `MECHA_BENCH_CONFIG=agent.yaml` measures other settings.
        .args(
            std::env::var("MECHA_BENCH_CONFIG")
                .map(|c| vec!["--config".to_owned(), c])
                .unwrap_or_default(),
        )
        .env("MECHA_LOG", "warn")
        .stdout(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return eprintln!("pipeline bench: starting mecha: {e}"),
    };
    let pid = child.id();
    let mut usage = (0.0, 0);
    let deadline = Instant::now() + Duration::from_secs(1800);
    while count.load(Ordering::SeqCst) < expected_records && Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return eprintln!("pipeline bench: the agent exited early: {status}");
        }
        usage = proc_usage(pid);
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = t.elapsed().as_secs_f64();
    let final_usage = proc_usage(pid);
    let ack_wait = ack_wait(&tmp.path().join("data"));
    if final_usage.0 > 0.0 {
        usage = final_usage;
    }
    let _ = child.kill();
    let _ = child.wait();
    let got = count.load(Ordering::SeqCst);
    let gib = total_bytes as f64 / (1u64 << 30) as f64;
    println!(
        "cat:   {:8.1} MB/s  {:6.2} s wall  {:6.2} CPU-s/GiB",
        total_bytes as f64 / 1e6 / cat_secs,
        cat_secs,
        cat_cpu / gib
    );
    println!(
        "agent: {:8.1} MB/s  {:6.2} s wall  {:6.2} CPU-s/GiB  {:6.1} MB/s per core  peak RSS {:.1} MiB  ({got}/{expected_records} records acked)",
        total_bytes as f64 / 1e6 / secs,
        secs,
        usage.0 / gib,
        total_bytes as f64 / 1e6 / usage.0.max(1e-9),
        usage.1 as f64 / 1024.0
    );
    println!(
        "ratio: agent takes {:.1}x the wall time of cat",
        secs / cat_secs.max(1e-9)
    );
    if let Some((wait, batches)) = ack_wait {
        println!(
            "forwarder: {batches} batches, {wait:.2} s of {secs:.2} s spent waiting for acknowledgements"
        );
    }
}
