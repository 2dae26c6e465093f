//! Load harness of the Sentry endpoint: runs the real `mecha agent` (disk
//! buffer, forwarding over OTLP/gRPC to a sink that only counts records),
//! and sends it a typical exception event — about 4 KB of JSON with a stack
//! trace, gzip-compressed as SDKs send it — from several concurrent HTTP
//! clients over loopback, each waiting for its answer as an SDK does.
//! Reports events per second, the agent's CPU time (from `/proc`, like the
//! pipeline bench) and so events per second per core, answer latency, and
//! peak RSS.
//!
//! `cargo bench --bench sentry` (200,000 events from 64 clients by default;
//! set `MECHA_BENCH_EVENTS` and `MECHA_BENCH_CLIENTS` to change, and
//! `MECHA_BENCH_BUFFER=memory` to leave the disk buffer out).
//!
//! To compare two builds in one run (the machine's load changes between
//! runs), set `MECHA_BENCH_BIN` to a colon-separated list of `mecha`
//! binaries (e.g. a copy of the baseline and the new one) and
//! `MECHA_BENCH_ROUNDS` to run them alternately that many times; each line
//! names its binary. `MECHA_BENCH_PERF=1` also counts, with `perf stat` on
//! the agent, context switches and `fdatasync`/`write`/`pread64` calls per
//! event; `MECHA_BENCH_PERF=record` instead samples the agent's stacks into
//! `sentry-<round>-<binary>.perf.data` in the working directory, for
//! `perf report`.
//!
//! Each round first measures, as this run's baseline, a bare HTTP server
//! (axum on a multi-threaded tokio runtime, as the agent's endpoint is) that
//! reads the same requests whole and answers each with a fixed
//! `{"id": ...}`: the floor of HTTP over loopback on this machine now. Each
//! agent line then says how many times that floor it costs per event.
//!
//! `MECHA_BENCH_PIN=1` gives the measured server (the bare one and each
//! agent alike) the machine's last CPU to itself, and the clients and the
//! sink the others (with `taskset`, from util-linux): the server's CPU per
//! event then holds no time lost to the clients running on its core. A
//! server with one core to itself also shows its saturated events/s.

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

/// A Python-SDK-like exception event of about 4 KB, with id `n`.
fn event(n: u64) -> Vec<u8> {
    let frames: Vec<String> = (0..8)
        .map(|i| {
            format!(
                r#"{{"filename":"shop/orders/service_{i}.py","abs_path":"/app/shop/orders/service_{i}.py","function":"handle_step_{i}","module":"shop.orders.service_{i}","lineno":{},"pre_context":["    order = load(order_id)","    if not order:"],"context_line":"        raise ValueError(f'order {{order_id}} not found')","post_context":["    return order"],"in_app":true,"vars":{{"order_id":"'{n}'","attempt":"{i}"}}}}"#,
                40 + i
            )
        })
        .collect();
    let event = format!(
        r#"{{"event_id":"{n:032x}","timestamp":"2026-11-23T10:00:00.000000Z","platform":"python","level":"error","logger":"shop.orders","server_name":"web-7d9f8b-x2x9z","release":"shop@1.4.2","environment":"production","exception":{{"values":[{{"type":"ValueError","value":"order {n} not found","module":"builtins","mechanism":{{"type":"django","handled":false}},"stacktrace":{{"frames":[{}]}}}}]}},"tags":{{"region":"eu-1","customer_tier":"gold"}},"user":{{"id":"u-{n}","email":"user{n}@example.com"}},"request":{{"url":"https://shop.example/api/orders/{n}","method":"GET","headers":{{"User-Agent":"Mozilla/5.0","Accept":"application/json"}}}},"sdk":{{"name":"sentry.python.django","version":"2.19.0"}}}}"#,
        frames.join(",")
    );
    let envelope = format!(
        "{{\"event_id\":\"{n:032x}\",\"sent_at\":\"2026-11-23T10:00:00.100Z\",\"dsn\":\"http://benchkey@127.0.0.1/1\"}}\n{{\"type\":\"event\",\"length\":{}}}\n{event}\n",
        event.len()
    );
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(envelope.as_bytes());
    e.finish().unwrap_or_default()
}

fn write_config(dir: &Path, buffer: &str) -> std::io::Result<std::path::PathBuf> {
    let cfg = dir.join("mecha.yaml");
    // A disk buffer with its default fsync interval, as on a node: awaited
    // chunks are fsynced at once, the interval only paces file lines.
    std::fs::write(
        &cfg,
        format!(
            "agent:\n  sources: {{}}\n  buffer: {{ type: {buffer} }}\n  sentry:\n    queue_events: 65536\n    projects:\n      - id: 1\n        keys: [benchkey]\n"
        ),
    )?;
    Ok(cfg)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == BARE_SERVER) {
        if let Some(file) = args.get(i + 1) {
            bare_server(Path::new(file));
        }
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let total = env_u64("MECHA_BENCH_EVENTS", 200_000);
    let clients = env_u64("MECHA_BENCH_CLIENTS", 64).max(1);
    let rounds = env_u64("MECHA_BENCH_ROUNDS", 1).max(1);
    let perf = std::env::var("MECHA_BENCH_PERF").unwrap_or_default();
    let bins: Vec<String> = match std::env::var("MECHA_BENCH_BIN") {
        Ok(list) if !list.is_empty() => list.split(':').map(str::to_string).collect(),
        _ => vec![env!("CARGO_BIN_EXE_mecha").to_string()],
    };
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => return eprintln!("sentry bench: tempdir: {e}"),
    };
    // `memory` measures the endpoint without the disk buffer's writes.
    let buffer = std::env::var("MECHA_BENCH_BUFFER").unwrap_or_else(|_| "disk".into());
    let cfg = match write_config(tmp.path(), &buffer) {
        Ok(c) => c,
        Err(e) => return eprintln!("sentry bench: config: {e}"),
    };
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..1024).map(event).collect());
    let raw_len = {
        let mut d = flate2::read::GzDecoder::new(&bodies[0][..]);
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut d, &mut s);
        s.len()
    };
    println!(
        "sentry: {total} events from {clients} clients, {raw_len} bytes of envelope, {} gzipped, {buffer} buffer",
        bodies[0].len()
    );

    let pin = std::env::var("MECHA_BENCH_PIN").is_ok_and(|v| v == "1");
    let server_cpu = if pin { pin_clients() } else { None };
    if let Some(cpu) = server_cpu {
        println!("servers pinned to CPU {cpu}, clients and sink to the others");
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return eprintln!("sentry bench: runtime: {e}"),
    };
    let count = Arc::new(AtomicU64::new(0));
    let listener = match rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")) {
        Ok(l) => l,
        Err(e) => return eprintln!("sentry bench: bind: {e}"),
    };
    let sink: SocketAddr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => return eprintln!("sentry bench: {e}"),
    };
    let svc = CountingSink(count.clone());
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
    );
    let run = Run {
        rt: &rt,
        cfg: &cfg,
        sink,
        count: &count,
        bodies: &bodies,
        total,
        clients,
        perf,
        server_cpu,
    };
    for round in 0..rounds {
        let floor = match run.bare(&tmp.path().join(format!("bare-{round}"))) {
            Ok(m) => {
                m.print("bare HTTP", None);
                Some(m.cpu_per_event())
            }
            Err(e) => {
                eprintln!("sentry bench: bare HTTP server: {e}");
                None
            }
        };
        for (i, bin) in bins.iter().enumerate() {
            let data = tmp.path().join(format!("data-{round}-{i}"));
            if bins.len() > 1 || rounds > 1 {
                println!("round {round}: {bin}");
            }
            let record = format!("sentry-{round}-{i}.perf.data");
            match run.once(Path::new(bin), &data, Path::new(&record)) {
                Ok(m) => m.print("agent", floor),
                Err(e) => eprintln!("sentry bench: {bin}: {e}"),
            }
            let _ = std::fs::remove_dir_all(&data);
        }
    }
}

/// What every measured run shares.
struct Run<'a> {
    rt: &'a tokio::runtime::Runtime,
    cfg: &'a Path,
    sink: SocketAddr,
    count: &'a Arc<AtomicU64>,
    bodies: &'a Arc<Vec<Vec<u8>>>,
    total: u64,
    clients: u64,
    /// `1` to count syscalls, `record` to sample stacks.
    perf: String,
    /// The CPU the measured servers run on alone (`MECHA_BENCH_PIN`).
    server_cpu: Option<usize>,
}

/// `perf stat` attached to the agent for the measured part of a run.
struct PerfStat {
    child: std::process::Child,
    out: std::path::PathBuf,
}

/// What `perf stat` counts, with the label it is printed under.
const PERF_EVENTS: [(&str, &str); 4] = [
    ("context-switches", "ctx switches"),
    ("syscalls:sys_enter_fdatasync", "fdatasync"),
    ("syscalls:sys_enter_write", "write"),
    ("syscalls:sys_enter_pread64", "pread64"),
];

impl PerfStat {
    fn start(pid: u32, dir: &Path, record: Option<&Path>) -> Option<PerfStat> {
        let out = dir.join("perf-stat.csv");
        let events: Vec<&str> = PERF_EVENTS.iter().map(|(e, _)| *e).collect();
        let mut perf = Command::new("perf");
        match record {
            Some(to) => perf.args(["record", "-g", "-F", "499", "-o"]).arg(to),
            None => perf
                .args(["stat", "-x", ",", "-o"])
                .arg(&out)
                .args(["-e", &events.join(",")]),
        };
        let child = perf
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| eprintln!("sentry bench: perf stat: {e}"))
            .ok()?;
        // perf needs a moment to attach before the load starts.
        std::thread::sleep(Duration::from_millis(300));
        Some(PerfStat { child, out })
    }

    /// Stops counting; each event's count per accepted event.
    fn finish(mut self, events: u64) -> String {
        #[allow(unsafe_code)]
        // SAFETY: kill(2) on the pid of a child we spawned and still own.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let mut parts = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split(',').collect();
            let (Some(n), Some(name)) = (f.first(), f.get(2)) else {
                continue;
            };
            let Ok(n) = n.parse::<f64>() else {
                continue;
            };
            if let Some((_, label)) = PERF_EVENTS.iter().find(|(e, _)| e == name) {
                parts.push(format!("{label} {:.3}", n / events.max(1) as f64));
            }
        }
        if parts.is_empty() {
            return "stacks sampled (perf report -i <file>)".into();
        }
        format!("per event: {}", parts.join("  "))
    }
}

impl Run<'_> {
    /// The command that starts the measured server `bin`, on its own CPU
    /// when pinned (`taskset` execs it: the pid is the server's).
    fn server(&self, bin: &Path) -> Command {
        match self.server_cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(bin);
                c
            }
            None => Command::new(bin),
        }
    }

    /// Starts `bin` as an agent and measures it under the load.
    fn once(&self, bin: &Path, data: &Path, record: &Path) -> Result<Measured, String> {
        let child = self
            .server(bin)
            .arg("agent")
            .arg("--config")
            .arg(self.cfg)
            .args([
                "--admin",
                "127.0.0.1:0",
                "--sentry",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data)
            .arg("--forward")
            .arg(format!("http://{}", self.sink))
            .env("MECHA_LOG", "warn")
            .stdout(Stdio::null())
            .spawn();
        let mut child = child.map_err(|e| format!("starting mecha: {e}"))?;
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(60);
        let sentry = loop {
            let found = std::fs::read(data.join("listeners.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v.get("sentry")?.as_str().map(str::to_string));
            if let Some(a) = found {
                break a;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("the agent did not start".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let url = format!("http://{sentry}/api/1/envelope/");
        let stat = match self.perf.as_str() {
            "1" => PerfStat::start(pid, data, None),
            "record" => PerfStat::start(pid, data, Some(record)),
            _ => None,
        };
        let base = self.count.load(Ordering::SeqCst);
        let mut m = self.load(pid, &url);
        m.counters = stat.map(|s| s.finish(m.accepted));
        // Everything answered 200 was fsynced; wait for the sink to have it all.
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.count.load(Ordering::SeqCst) - base < m.accepted && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        m.at_sink = Some(self.count.load(Ordering::SeqCst) - base);
        let _ = child.kill();
        let _ = child.wait();
        Ok(m)
    }

    /// Starts this bench's own bare HTTP server and measures it under the
    /// same load.
    fn bare(&self, dir: &Path) -> Result<Measured, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let file = dir.join("address");
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = self
            .server(&exe)
            .arg(BARE_SERVER)
            .arg(&file)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the bare server: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            match std::fs::read_to_string(&file) {
                Ok(a) if a.ends_with('\n') => break a.trim().to_string(),
                _ if Instant::now() > deadline => {
                    let _ = child.kill();
                    return Err("the bare server did not start".into());
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let m = self.load(child.id(), &format!("http://{addr}/api/1/envelope/"));
        let _ = child.kill();
        let _ = child.wait();
        Ok(m)
    }

    /// Sends the events from the clients to `url`, each waiting for its
    /// answer, and measures process `pid` meanwhile.
    fn load(&self, pid: u32, url: &str) -> Measured {
        let (total, clients) = (self.total, self.clients);
        let url = url.to_string();
        let (cpu0, _) = proc_usage(pid);
        let started = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let bodies = self.bodies;
        let latencies = self.rt.block_on(async {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(clients as usize)
                .build()
                .unwrap_or_default();
            let mut tasks = Vec::new();
            for _ in 0..clients {
                let (client, url, bodies, next, failed) =
                    (client.clone(), url.clone(), bodies.clone(), next.clone(), failed.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= total {
                            break lat;
                        }
                        let body = bodies[(n % bodies.len() as u64) as usize].clone();
                        let t = Instant::now();
                        let ok = client
                            .post(&url)
                            .header("content-encoding", "gzip")
                            .header("content-type", "application/x-sentry-envelope")
                            .header("x-sentry-auth", "Sentry sentry_key=benchkey, sentry_version=7, sentry_client=sentry.python/2.19.0")
                            .body(body)
                            .send()
                            .await
                            .map(|r| r.status().is_success())
                            .unwrap_or(false);
                        if ok {
                            lat.push(t.elapsed());
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                if let Ok(l) = t.await {
                    all.extend(l);
                }
            }
            all
        });
        let secs = started.elapsed().as_secs_f64();
        let (cpu1, rss) = proc_usage(pid);
        let mut lat = latencies;
        lat.sort();
        Measured {
            accepted: lat.len() as u64,
            failed: failed.load(Ordering::Relaxed),
            secs,
            cpu: cpu1 - cpu0,
            rss_kib: rss,
            latencies: lat,
            counters: None,
            at_sink: None,
        }
    }
}

/// Pins this process (its threads yet to come: the clients' runtime and the
/// sink) to every CPU but the last, and returns the last, for the servers.
/// `None` (nothing pinned) on a single CPU or when the kernel refuses.
fn pin_clients() -> Option<usize> {
    let cpus = std::thread::available_parallelism().ok()?.get();
    if cpus < 2 {
        eprintln!("sentry bench: MECHA_BENCH_PIN needs two CPUs; not pinning");
        return None;
    }
    #[allow(unsafe_code)]
    // SAFETY: an all-zero cpu_set_t is a valid empty set, CPU_SET writes
    // only inside it (the indexes are below the CPU count), and
    // sched_setaffinity reads it for the calling thread only.
    let pinned = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..cpus - 1 {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    if !pinned {
        eprintln!("sentry bench: sched_setaffinity refused; not pinning");
        return None;
    }
    Some(cpus - 1)
}

/// What one measured load gave.
struct Measured {
    accepted: u64,
    failed: u64,
    secs: f64,
    /// CPU seconds of the measured process during the load.
    cpu: f64,
    rss_kib: u64,
    latencies: Vec<Duration>,
    counters: Option<String>,
    /// Records the sink received (agents only).
    at_sink: Option<u64>,
}

impl Measured {
    fn cpu_per_event(&self) -> f64 {
        self.cpu * 1e6 / self.accepted.max(1) as f64
    }

    /// Prints the figures; `floor` is the bare server's CPU per event.
    fn print(&self, what: &str, floor: Option<f64>) {
        let lat = &self.latencies;
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .map(|d| d.as_secs_f64() * 1e3)
                .unwrap_or(0.0)
        };
        let ratio = floor
            .filter(|f| *f > 0.0)
            .map(|f| format!("  {:.2}x bare HTTP", self.cpu_per_event() / f))
            .unwrap_or_default();
        println!(
            "{what}: {:8.0} events/s wall  {:6.2} CPU-s  {:8.0} events/s per core  {:5.1} us CPU/event{ratio}  p50 {:.1} ms  p99 {:.1} ms  peak RSS {:.1} MiB",
            self.accepted as f64 / self.secs,
            self.cpu,
            self.accepted as f64 / self.cpu.max(1e-9),
            self.cpu_per_event(),
            pct(0.5),
            pct(0.99),
            self.rss_kib as f64 / 1024.0
        );
        if let Some(c) = &self.counters {
            println!("       {c}");
        }
        match self.at_sink {
            Some(n) => println!(
                "       {} answered 200, {} failed, {n} records at the sink",
                self.accepted, self.failed
            ),
            None => println!(
                "       {} answered 200, {} failed",
                self.accepted, self.failed
            ),
        }
    }
}

/// The argument that makes this binary the bare HTTP server of the
/// baseline, writing its address to the file that follows.
const BARE_SERVER: &str = "--bare-http-server";

/// The baseline's server: reads each request's body whole and answers with
/// a fixed event id, on as many worker threads as the agent's runtime has.
fn bare_server(address_file: &Path) {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return eprintln!("bare server: runtime: {e}"),
    };
    rt.block_on(async {
        let app = axum::Router::new().route(
            "/api/{project}/envelope/",
            axum::routing::post(|body: bytes::Bytes| async move {
                std::hint::black_box(body);
                (
                    [("content-type", "application/json")],
                    r#"{"id":"0123456789abcdef0123456789abcdef"}"#,
                )
            }),
        );
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => return eprintln!("bare server: bind: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => return eprintln!("bare server: {e}"),
        };
        if let Err(e) = std::fs::write(address_file, format!("{addr}\n")) {
            return eprintln!("bare server: {e}");
        }
        // Without Nagle's delay, as the agent's listener.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("bare server: {e}");
        }
    });
}
