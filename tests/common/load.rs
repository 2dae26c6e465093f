//! Load and chaos for the reliability tests: a rate-limited writer of CRI lines
//! that rotate (rename+create or copytruncate), a seeded RNG for kill instants,
//! quiet process starts with logs kept for failures, RSS and metric sampling,
//! and the audit that reads every document of the aggregator's index and
//! compares the ids it holds with the ids written.
//!
//! Every line carries a unique id (file number and per-file sequence), so the
//! audit tells a lost line from a duplicated one instead of comparing counts,
//! which would let a loss and a duplicate cancel out.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Mecha, search, total};

/// The first word of every generated line's message.
pub const TAG: &str = "mecha-rel";

/// Whether the full sizes of the issue were asked for (`MECHA_RELIABILITY_FULL=1`).
pub fn full_size() -> bool {
    std::env::var("MECHA_RELIABILITY_FULL").is_ok_and(|v| v == "1")
}

/// Picks the default or the full variant of a size.
pub fn sized<T>(default: T, full: T) -> T {
    if full_size() { full } else { default }
}

// ---------------------------------------------------------------------------
// Serialising the heavy tests

/// Held while a heavy test runs, so that two of them (in one process under
/// `cargo test`, or in separate processes under nextest) never compete for
/// the CPU: their timing assumptions (the agent keeps up with the writer)
/// are about one test at a time. An abstract Unix socket is the lock: binding
/// its name is exclusive and the kernel releases it when the process dies.
pub struct HeavyLock {
    _socket: UnixListener,
}

/// Waits until no other reliability test of this build runs.
pub fn heavy_lock() -> HeavyLock {
    // Scoped to this build, so that unrelated checkouts do not wait on each other.
    let name = format!(
        "mecha-reliability-{:016x}",
        fnv1a(env!("CARGO_BIN_EXE_mecha").as_bytes())
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes())
        .unwrap_or_else(|e| panic!("abstract socket name {name}: {e}"));
    let mut announced = false;
    loop {
        match UnixListener::bind_addr(&addr) {
            Ok(socket) => return HeavyLock { _socket: socket },
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if !announced {
                    println!("waiting for another reliability test to finish");
                    announced = true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("cannot take the reliability test lock {name}: {e}"),
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------
// Randomness

/// A small seeded RNG (splitmix64): the same seed replays the same kill instants.
pub struct Rng(u64);

impl Rng {
    /// The seed from `MECHA_RELIABILITY_SEED`, else one drawn from the clock;
    /// printed so that a failing run can be replayed.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("MECHA_RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        println!("{test}: seed {seed} (replay with MECHA_RELIABILITY_SEED={seed})");
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration uniformly drawn from `lo..=hi`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_micros() as u64;
        lo + Duration::from_micros(self.next_u64() % (span + 1))
    }
}

// ---------------------------------------------------------------------------
// Lines and their ids

/// The id of a generated line: file number and sequence within that file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LineId {
    /// File number.
    pub file: u32,
    /// Sequence within the file, from 0, across rotations.
    pub seq: u64,
}

/// Padding that brings a line to about 120 bytes, like a short access log line.
const PAD: &str = "GET /api/v1/orders status 200 took 12ms upstream shop";

/// The message of line `seq` of file `file`.
fn message(file: u32, seq: u64) -> String {
    format!("{TAG} f{file:02} s{seq:09} {PAD}")
}

/// One CRI line (`<time> stdout F <message>`, newline included).
fn cri_line(ts: &str, file: u32, seq: u64) -> String {
    format!("{ts} stdout F {}\n", message(file, seq))
}

/// The length of a generated line in bytes, newline included.
pub fn line_len() -> u64 {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    cri_line(&ts, 0, 0).len() as u64
}

/// The id in an indexed body, if it is one of ours and intact.
pub fn parse_id(body: &str) -> Option<LineId> {
    let rest = body.strip_prefix(TAG)?.strip_prefix(" f")?;
    let (file, rest) = rest.split_once(" s")?;
    let (seq, pad) = rest.split_once(' ')?;
    if pad != PAD {
        return None;
    }
    Some(LineId {
        file: file.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

/// The path of file `file` in `dir`.
pub fn log_path(dir: &Path, file: u32) -> PathBuf {
    dir.join(format!("load-{file:02}.log"))
}

fn rotated_path(dir: &Path, file: u32, n: u32) -> PathBuf {
    dir.join(format!("load-{file:02}.log.{n}"))
}

// ---------------------------------------------------------------------------
// The writer

/// How the writer rotates its files.
#[derive(Debug, Clone, Copy)]
pub enum Rotation {
    /// Never.
    Never,
    /// When a file reaches `every_bytes`: shift `name.log.1` to `name.log.2`
    /// (and so on, the oldest beyond `keep` deleted), rename `name.log` to
    /// `name.log.1`, create a new `name.log` — what logrotate's `create` and
    /// the kubelet do.
    RenameCreate {
        /// Size that triggers a rotation.
        every_bytes: u64,
        /// Rotated files kept (logrotate's `rotate N`).
        keep: u32,
    },
    /// When a file reaches `every_bytes`: copy it to `name.log.1` (older copies
    /// shifted, `keep` kept), write `gap_lines` more lines (the writes that
    /// land between the copy and the truncation), then truncate it to zero —
    /// logrotate's `copytruncate`, with the writer keeping its descriptor.
    CopyTruncate {
        /// Size that triggers a rotation.
        every_bytes: u64,
        /// Copies kept.
        keep: u32,
        /// Lines written between the copy and the truncation.
        gap_lines: u64,
    },
}

/// What the writer is asked to do.
#[derive(Debug, Clone)]
pub struct WriterSpec {
    /// Directory of the files.
    pub dir: PathBuf,
    /// Number of files, written round-robin.
    pub files: u32,
    /// Lines in total (fewer if the writer is stopped first).
    pub lines: u64,
    /// Lines per second, in total.
    pub rate: u64,
    /// Rotation policy.
    pub rotation: Rotation,
}

/// One copytruncate generation of a file: the lines between two truncations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    /// First sequence of the generation.
    pub first: u64,
    /// First sequence not in the copy (written after the copy was taken).
    pub copied: u64,
    /// First sequence of the next generation (written after the truncation).
    pub end: u64,
}

/// What the writer did.
#[derive(Debug, Clone)]
pub struct WriterReport {
    /// Lines written per file.
    pub per_file: Vec<u64>,
    /// Rotations done.
    pub rotations: u64,
    /// Rotated files deleted (the oldest beyond `keep`).
    pub deleted: u64,
    /// Time from first to last line.
    pub elapsed: Duration,
    /// Copytruncate generations per file (empty for other rotations).
    pub generations: Vec<Vec<Generation>>,
}

impl WriterReport {
    /// Lines written in total.
    pub fn lines(&self) -> u64 {
        self.per_file.iter().sum()
    }

    /// Lines per second achieved.
    pub fn rate(&self) -> f64 {
        self.lines() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A writer running on its own thread.
pub struct Writer {
    thread: Option<JoinHandle<WriterReport>>,
    stop: Arc<AtomicBool>,
    /// Lines written so far, in total.
    pub progress: Arc<AtomicU64>,
}

impl Writer {
    /// Starts writing.
    pub fn start(spec: WriterSpec) -> Writer {
        fs::create_dir_all(&spec.dir).unwrap_or_else(|e| panic!("{}: {e}", spec.dir.display()));
        let progress = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (progress.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("load-writer".into())
            .spawn(move || write_all(&spec, &p, &s))
            .unwrap_or_else(|e| panic!("cannot start the writer thread: {e}"));
        Writer {
            thread: Some(thread),
            stop,
            progress,
        }
    }

    /// Stops writing (after the line being written) and waits for the writer.
    pub fn stop(self) -> WriterReport {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Whether every line has been written.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the last line.
    pub fn join(mut self) -> WriterReport {
        let Some(t) = self.thread.take() else {
            panic!("writer joined twice");
        };
        t.join()
            .unwrap_or_else(|_| panic!("the writer thread panicked"))
    }
}

/// One file being written.
struct Target {
    path: PathBuf,
    file: File,
    size: u64,
    next_seq: u64,
    generations: Vec<Generation>,
    generation_first: u64,
}

fn open_append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Lines written per write call at most; a tick writes every line that is due.
const LINES_PER_WRITE: u64 = 64;

fn write_all(spec: &WriterSpec, progress: &AtomicU64, stop: &AtomicBool) -> WriterReport {
    let mut targets: Vec<Target> = (0..spec.files)
        .map(|i| {
            let path = log_path(&spec.dir, i);
            Target {
                file: open_append(&path),
                path,
                size: 0,
                next_seq: 0,
                generations: Vec::new(),
                generation_first: 0,
            }
        })
        .collect();
    let mut rotations = 0;
    let mut deleted = 0;
    let started = Instant::now();
    let mut written = 0u64;
    let mut buf = String::new();
    while written < spec.lines && !stop.load(Ordering::Relaxed) {
        let due = ((started.elapsed().as_secs_f64() * spec.rate as f64) as u64).min(spec.lines);
        if written >= due {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        // One timestamp per tick: a CRI runtime stamps with nanoseconds, but
        // the id, not the time, tells lines apart here.
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        while written < due {
            let n = (due - written).min(LINES_PER_WRITE);
            // The file furthest behind gets the write (the first of them on a
            // tie, so an idle writer still goes round-robin): a writer that
            // falls behind catches up in big writes, and taking turns would
            // hand them to some files only, which then rotate while others
            // never reach the rotation size.
            let i = (0..targets.len())
                .min_by_key(|&k| (targets[k].next_seq, k))
                .unwrap_or(0);
            let t = &mut targets[i];
            buf.clear();
            for _ in 0..n {
                buf.push_str(&cri_line(&ts, i as u32, t.next_seq));
                t.next_seq += 1;
            }
            t.file
                .write_all(buf.as_bytes())
                .unwrap_or_else(|e| panic!("{}: {e}", t.path.display()));
            t.size += buf.len() as u64;
            written += n;
            progress.store(written, Ordering::Relaxed);
            match spec.rotation {
                Rotation::RenameCreate { every_bytes, keep } if t.size >= every_bytes => {
                    deleted += rename_create(&spec.dir, i as u32, t, keep);
                    rotations += 1;
                }
                Rotation::CopyTruncate {
                    every_bytes,
                    keep,
                    gap_lines,
                } if t.size >= every_bytes => {
                    deleted += copy_truncate(&spec.dir, i as u32, t, keep, gap_lines, &ts);
                    written += gap_lines;
                    progress.store(written, Ordering::Relaxed);
                    rotations += 1;
                }
                _ => {}
            }
        }
    }
    let elapsed = started.elapsed();
    let generations = match spec.rotation {
        Rotation::CopyTruncate { .. } => targets
            .iter_mut()
            .map(|t| {
                let mut g = std::mem::take(&mut t.generations);
                g.push(Generation {
                    first: t.generation_first,
                    copied: t.next_seq,
                    end: t.next_seq,
                });
                g
            })
            .collect(),
        _ => Vec::new(),
    };
    WriterReport {
        per_file: targets.iter().map(|t| t.next_seq).collect(),
        rotations,
        deleted,
        elapsed,
        generations,
    }
}

/// Shifts `name.log.k` to `name.log.k+1` for `k` from `keep - 1` down to 1,
/// the rename onto `name.log.keep` deleting the oldest (`keep` is at least
/// 1); returns how many files were deleted (0 or 1).
fn shift_rotated(dir: &Path, file: u32, keep: u32) -> u64 {
    let deleted = u64::from(rotated_path(dir, file, keep).exists());
    for k in (1..keep).rev() {
        let from = rotated_path(dir, file, k);
        if from.exists() {
            fs::rename(&from, rotated_path(dir, file, k + 1))
                .unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        }
    }
    deleted
}

/// Renames the file to `name.log.1` (after shifting the older ones; with
/// `keep` 0 it is deleted) and creates a new one.
fn rename_create(dir: &Path, file: u32, t: &mut Target, keep: u32) -> u64 {
    let deleted = if keep == 0 {
        fs::remove_file(&t.path).unwrap_or_else(|e| panic!("{}: {e}", t.path.display()));
        1
    } else {
        let deleted = shift_rotated(dir, file, keep);
        fs::rename(&t.path, rotated_path(dir, file, 1))
            .unwrap_or_else(|e| panic!("{}: {e}", t.path.display()));
        deleted
    };
    t.file = open_append(&t.path);
    t.size = 0;
    deleted
}

/// Copies the file to `name.log.1` (after shifting the older copies), writes
/// `gap` more lines, truncates the file in place and starts a new generation.
fn copy_truncate(dir: &Path, file: u32, t: &mut Target, keep: u32, gap: u64, ts: &str) -> u64 {
    let deleted = shift_rotated(dir, file, keep.max(1));
    fs::copy(&t.path, rotated_path(dir, file, 1))
        .unwrap_or_else(|e| panic!("{}: {e}", t.path.display()));
    let copied = t.next_seq;
    let mut buf = String::new();
    for _ in 0..gap {
        buf.push_str(&cri_line(ts, file, t.next_seq));
        t.next_seq += 1;
    }
    t.file
        .write_all(buf.as_bytes())
        .unwrap_or_else(|e| panic!("{}: {e}", t.path.display()));
    t.file
        .set_len(0)
        .unwrap_or_else(|e| panic!("{}: {e}", t.path.display()));
    t.generations.push(Generation {
        first: t.generation_first,
        copied,
        end: t.next_seq,
    });
    t.generation_first = t.next_seq;
    t.size = 0;
    deleted
}

// ---------------------------------------------------------------------------
// Processes

/// Starts `mecha <role>` like [`Mecha::start`], but with its output appended
/// to `log` instead of the test's terminal (a crash loop would flood it).
pub fn start_logged(role: &str, data_dir: &Path, args: &[&str], log: &Path) -> Mecha {
    let out = open_append(log);
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    Mecha::spawn(
        role,
        data_dir,
        args,
        Stdio::from(out),
        Stdio::from(err),
        || tail_of(log, 40),
    )
}

/// The last `n` lines of a file, for failure messages.
pub fn tail_of(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    format!(
        "--- last lines of {} ---\n{}",
        path.display(),
        lines[from..].join("\n")
    )
}

/// The port of a `host:port` address.
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
}

/// Memory of a process from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident memory, including mapped file pages.
    pub rss: u64,
    /// `VmHWM`: the kernel's peak of `VmRSS` for this process.
    pub hwm: u64,
    /// `RssAnon`: resident anonymous memory (heap and stacks), which is what
    /// queues and buffers held in memory grow.
    pub anon: u64,
}

impl Memory {
    /// The memory of `pid` now, if it is alive.
    pub fn of(pid: u32) -> Option<Memory> {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        };
        Some(Memory {
            rss: field("VmRSS:")?,
            hwm: field("VmHWM:")?,
            anon: field("RssAnon:")?,
        })
    }

    /// Each field the larger of the two.
    fn max(self, other: Memory) -> Memory {
        Memory {
            rss: self.rss.max(other.rss),
            hwm: self.hwm.max(other.hwm),
            anon: self.anon.max(other.anon),
        }
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "peak agent RSS {} MiB (anonymous {} MiB, VmHWM {} MiB)",
            self.rss / 1024,
            self.anon / 1024,
            self.hwm / 1024
        )
    }
}

/// Samples the memory of a process (whose pid may change, across restarts)
/// every 100 ms on a thread, keeping the peaks.
pub struct RssSampler {
    pid: Arc<AtomicU32>,
    peak: Arc<std::sync::Mutex<Memory>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> RssSampler {
        let pid = Arc::new(AtomicU32::new(pid));
        let peak = Arc::new(std::sync::Mutex::new(Memory::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, k, s) = (pid.clone(), peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                sample(&p, &k);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        RssSampler {
            pid,
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// Follows a restarted process.
    pub fn follow(&self, pid: u32) {
        self.pid.store(pid, Ordering::Relaxed);
    }

    /// Takes a last sample and returns the peaks.
    pub fn finish(mut self) -> Memory {
        sample(&self.pid, &self.peak);
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        *self.peak.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn sample(pid: &AtomicU32, peak: &std::sync::Mutex<Memory>) {
    if let Some(now) = Memory::of(pid.load(Ordering::Relaxed)) {
        let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
        *p = p.max(now);
    }
}

/// The Prometheus text of `http://addr/metrics`, if it answers.
pub fn metrics_text(addr: &str) -> Option<String> {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?
        .get(format!("http://{addr}/metrics"))
        .send()
        .ok()?
        .text()
        .ok()
}

/// The sum of every sample of metric `name` whose labels contain all of
/// `labels` (e.g. `reason="file_truncated"`); 0 when absent.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match key.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (key, ""),
            };
            (metric == name && labels.iter().all(|want| label_text.contains(want)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The lines of a metrics text about discards and errors, for reports.
pub fn discard_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            !l.starts_with('#')
                && (l.starts_with("mecha_component_discarded_events_total")
                    || l.starts_with("mecha_component_errors_total"))
        })
        .map(str::to_string)
        .collect()
}

/// Polls the aggregator's search total until it equals `expected`, or it has
/// not moved for `settle`; returns the last total. Never fails by itself: the
/// audit of the index says what is wrong.
pub fn wait_until_settled(http: &str, expected: u64, settle: Duration, max: Duration) -> u64 {
    let started = Instant::now();
    let mut last = u64::MAX;
    let mut last_change = Instant::now();
    loop {
        let now = total(&search(http, "*", 0));
        if now != last {
            last = now;
            last_change = Instant::now();
        }
        if now == expected {
            return now;
        }
        if last_change.elapsed() >= settle || started.elapsed() >= max {
            println!(
                "index stopped at {now} of {expected} records ({:.0} s without change)",
                last_change.elapsed().as_secs_f64()
            );
            return now;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ---------------------------------------------------------------------------
// The audit

/// Every body in the aggregator's index under `data_dir`, read from the
/// tantivy documents themselves (not through search, whose limit and
/// tokenisation could hide a record). The aggregator must be stopped.
pub fn indexed_bodies(data_dir: &Path) -> Vec<String> {
    let root = data_dir.join("logs");
    let (store, _) = mecha_aggregator::store::Store::open(&root)
        .unwrap_or_else(|e| panic!("cannot open the index {}: {e}", root.display()));
    let mut bodies = Vec::new();
    for day in store.days() {
        let index = store
            .day(day)
            .unwrap_or_else(|e| panic!("index of {day}: {e}"));
        let searcher = index.reader.searcher();
        for segment in searcher.segment_readers() {
            let docs = segment
                .get_store_reader(64)
                .unwrap_or_else(|e| panic!("index of {day}: {e}"));
            for doc in docs.iter::<tantivy::TantivyDocument>(segment.alive_bitset()) {
                let doc = doc.unwrap_or_else(|e| panic!("index of {day}: {e}"));
                bodies.push(store.fields().to_hit(&doc).body);
            }
        }
    }
    bodies
}

/// Lines written against documents indexed.
#[derive(Debug, Default)]
pub struct Audit {
    /// Lines written.
    pub written: u64,
    /// Documents in the index.
    pub indexed: u64,
    /// Distinct written ids found.
    pub unique: u64,
    /// Extra copies of ids found more than once.
    pub duplicates: u64,
    /// Written ids not found.
    pub missing: u64,
    /// Documents that are not an intact generated line (cut or garbled).
    pub foreign: u64,
    /// Copies of each id found, for ids found at least once.
    pub counts: HashMap<LineId, u32>,
    /// A few duplicated ids, missing ids and foreign bodies, for messages.
    pub examples: Vec<String>,
}

impl Audit {
    /// Compares the index with the lines written (`per_file[i]` lines in file `i`).
    pub fn of(per_file: &[u64], bodies: &[String]) -> Audit {
        let mut a = Audit {
            written: per_file.iter().sum(),
            indexed: bodies.len() as u64,
            ..Audit::default()
        };
        for body in bodies {
            match parse_id(body) {
                Some(id) if per_file.get(id.file as usize).is_some_and(|n| id.seq < *n) => {
                    *a.counts.entry(id).or_default() += 1;
                }
                _ => {
                    a.foreign += 1;
                    if a.examples.len() < 10 {
                        a.examples.push(format!("foreign body {body:?}"));
                    }
                }
            }
        }
        a.unique = a.counts.len() as u64;
        let mut dup_examples = Vec::new();
        for (id, n) in &a.counts {
            if *n > 1 {
                a.duplicates += u64::from(*n - 1);
                if dup_examples.len() < 10 {
                    dup_examples.push(format!("{id:?} indexed {n} times"));
                }
            }
        }
        dup_examples.sort();
        a.examples.extend(dup_examples);
        for (file, n) in per_file.iter().enumerate() {
            let lost: Vec<u64> = (0..*n)
                .filter(|seq| {
                    !a.counts.contains_key(&LineId {
                        file: file as u32,
                        seq: *seq,
                    })
                })
                .collect();
            a.missing += lost.len() as u64;
            if !lost.is_empty() && a.examples.len() < 30 {
                a.examples.push(format!(
                    "file {file}: {} missing, in {}",
                    lost.len(),
                    ranges(&lost)
                ));
            }
        }
        a
    }

    /// The one-line figures for the report.
    pub fn summary(&self) -> String {
        format!(
            "written {}, indexed {} ({} distinct), duplicates {}, missing {}, foreign {}",
            self.written, self.indexed, self.unique, self.duplicates, self.missing, self.foreign
        )
    }

    /// Passes when every line is in the index exactly once and nothing else is.
    pub fn assert_exactly_once(&self, test: &str, logs: &[PathBuf]) {
        if self.missing == 0 && self.duplicates == 0 && self.foreign == 0 {
            return;
        }
        let tails: Vec<String> = logs.iter().map(|l| tail_of(l, 30)).collect();
        panic!(
            "{test}: not exactly once: {}\n{}\n{}",
            self.summary(),
            self.examples.join("\n"),
            tails.join("\n")
        );
    }
}

/// `[3, 4, 5, 9]` as `3..=5, 9` (at most a few ranges).
pub fn ranges(seqs: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let start = seqs[i];
        let mut end = start;
        while i + 1 < seqs.len() && seqs[i + 1] == end + 1 {
            i += 1;
            end = seqs[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}..={end}")
        });
        i += 1;
    }
    if out.len() > 8 {
        let more = out.len() - 8;
        out.truncate(8);
        out.push(format!("and {more} more ranges"));
    }
    out.join(", ")
}
