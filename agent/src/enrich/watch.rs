//! List then watch one kind of object, for as long as the agent runs.
//!
//! The loop lists (in pages), hands the whole list over as a replacement,
//! then watches from the list's resourceVersion with bookmarks, renewing the
//! watch when the server ends it. A `410 Gone` (an `ERROR` event, or the HTTP
//! status of the watch request) means the server no longer has that version:
//! the loop lists again. Failed requests are retried with exponential backoff
//! and jitter, so a fleet of agents does not hammer an API server that is
//! coming back. The loop never gives up and never blocks a caller: the cache
//! simply lags while the server is away.
//!
//! Written on `kube::Api` rather than with `kube-runtime`'s watcher: that
//! watcher retries a watch refused with HTTP 410 from the same
//! resourceVersion forever (its `InitListed` state), where a re-list is
//! needed, and it hides the restarts and errors `/metrics` must count.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Api;
use kube::api::{ListParams, WatchEvent, WatchParams};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::Shutdown;
use crate::metrics::AgentMetrics;

/// Longest server-side watch timeout kube accepts, rounded down.
const MAX_WATCH_SECS: u32 = 290;
/// Objects per list page.
const PAGE_SIZE: u32 = 500;
/// Watch requests that fail in a row before the loop lists again: a server
/// that refuses one resourceVersion for long may never accept it.
const WATCH_FAILURES_BEFORE_RELIST: u32 = 5;
/// A watch that ends sooner than this with no event is retried after a
/// backoff, not at once (a server closing every watch must not cause a spin).
const MIN_WATCH_LIFE: Duration = Duration::from_secs(1);
/// Slack on top of the server-side watch timeout before a silent watch is
/// given up (the connection may be dead without the socket knowing).
const IDLE_SLACK: Duration = Duration::from_secs(30);

/// What the loop tells its owner.
#[derive(Debug)]
pub enum Change<K> {
    /// A fresh list: everything else is gone.
    Replace(Vec<K>),
    /// Added or modified.
    Apply(K),
    /// Deleted.
    Delete(K),
}

/// Exponential backoff with jitter: each wait is drawn from the upper half
/// of a window that doubles from `initial` to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    window: Option<Duration>,
    seed: u64,
    draws: u64,
}

impl Backoff {
    /// A backoff between `initial` and `max`; `seed` varies the jitter.
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            initial: initial.max(Duration::from_millis(1)),
            max: max.max(initial),
            window: None,
            seed,
            draws: 0,
        }
    }

    /// The next wait.
    pub fn next_wait(&mut self) -> Duration {
        let window = match self.window {
            None => self.initial,
            Some(w) => w.saturating_mul(2).min(self.max),
        };
        self.window = Some(window);
        self.draws += 1;
        let r = xxhash_rust::xxh3::xxh3_64_with_seed(&self.draws.to_le_bytes(), self.seed);
        // A fraction in [0.5, 1.0) of the window.
        let frac = 0.5 + (r >> 11) as f64 / (1u64 << 54) as f64;
        window.mul_f64(frac)
    }

    /// Back to `initial` after a success.
    pub fn reset(&mut self) {
        self.window = None;
    }
}

/// Settings of one watch loop.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The resource's name in metrics and logs (`pods`, `namespaces`).
    pub resource: &'static str,
    /// A field selector (`spec.nodeName=node-1`), if any.
    pub field_selector: Option<String>,
    /// The server-side timeout of one watch request.
    pub timeout: Duration,
    /// Waits between failed requests.
    pub backoff: Backoff,
}

/// Why the watch must list again.
enum Relist {
    Gone,
    Failures,
}

/// Runs until `shutdown`, feeding every change to `on`.
pub async fn run<K, F>(
    api: Api<K>,
    mut opts: WatchOptions,
    metrics: Arc<AgentMetrics>,
    shutdown: Shutdown,
    mut on: F,
) where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    F: FnMut(Change<K>),
{
    let resource = opts.resource;
    let mut failing = false;
    loop {
        let (items, mut version) = match list(&api, &opts).await {
            Ok(l) => l,
            Err(e) => {
                report(&metrics, resource, "list", &e, &mut failing);
                if sleep(&shutdown, opts.backoff.next_wait()).await {
                    return;
                }
                continue;
            }
        };
        recovered(resource, &mut failing);
        opts.backoff.reset();
        on(Change::Replace(items));
        metrics.kube_synced.with_label_values(&[resource]).set(1);
        let why = watch(
            &api,
            &opts,
            &metrics,
            &shutdown,
            &mut version,
            &mut on,
            &mut failing,
        )
        .await;
        let Some(why) = why else { return };
        let reason = match why {
            Relist::Gone => "gone",
            Relist::Failures => "error",
        };
        metrics
            .kube_watch_restarts
            .with_label_values(&[resource, reason])
            .inc();
        tracing::debug!(resource, reason, "kubernetes: listing again");
    }
}

/// Lists every page; the objects and the list's resourceVersion.
async fn list<K>(api: &Api<K>, opts: &WatchOptions) -> Result<(Vec<K>, String), kube::Error>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug,
{
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(PAGE_SIZE);
        if let Some(f) = &opts.field_selector {
            lp = lp.fields(f);
        }
        lp.continue_token = token.take();
        let page = api.list(&lp).await?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(next) => token = Some(next),
            None => {
                let version = page.metadata.resource_version.unwrap_or_default();
                return Ok((items, version));
            }
        }
    }
}

fn is_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 410)
}

/// Watches from `version` until the server says it is gone (`Some`) or
/// shutdown (`None`), renewing the watch when it ends.
async fn watch<K, F>(
    api: &Api<K>,
    opts: &WatchOptions,
    metrics: &AgentMetrics,
    shutdown: &Shutdown,
    version: &mut String,
    on: &mut F,
    failing: &mut bool,
) -> Option<Relist>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    F: FnMut(Change<K>),
{
    let resource = opts.resource;
    // kube documents watches as limited to 295s (what API servers allow
    // a watch before ending it anyway).
    let secs = u32::try_from(opts.timeout.as_secs())
        .unwrap_or(u32::MAX)
        .clamp(1, MAX_WATCH_SECS);
    let mut wp = WatchParams::default().timeout(secs);
    if let Some(f) = &opts.field_selector {
        wp = wp.fields(f);
    }
    let idle = opts.timeout + IDLE_SLACK;
    let mut backoff = opts.backoff.clone();
    let mut failures = 0u32;
    loop {
        let stream = tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            s = api.watch(&wp, version) => s,
        };
        let stream = match stream {
            Ok(s) => s,
            Err(e) if is_gone(&e) => return Some(Relist::Gone),
            Err(e) => {
                report(metrics, resource, "watch", &e, failing);
                failures += 1;
                if failures >= WATCH_FAILURES_BEFORE_RELIST {
                    return Some(Relist::Failures);
                }
                if sleep(shutdown, backoff.next_wait()).await {
                    return None;
                }
                continue;
            }
        };
        let opened = Instant::now();
        let mut events = 0u64;
        let mut stream = std::pin::pin!(stream);
        let ended_by_error = loop {
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => return None,
                n = tokio::time::timeout(idle, stream.next()) => n,
            };
            let event = match next {
                // Silent too long, or ended by the server: watch again.
                Err(_) | Ok(None) => break false,
                Ok(Some(Ok(e))) => e,
                Ok(Some(Err(e))) => {
                    report(metrics, resource, "watch", &e, failing);
                    break true;
                }
            };
            events += 1;
            match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                    advance(version, o.meta().resource_version.as_deref());
                    on(Change::Apply(o));
                }
                WatchEvent::Deleted(o) => {
                    advance(version, o.meta().resource_version.as_deref());
                    on(Change::Delete(o));
                }
                WatchEvent::Bookmark(b) => advance(version, Some(&b.metadata.resource_version)),
                WatchEvent::Error(status) if status.code == 410 => return Some(Relist::Gone),
                WatchEvent::Error(status) => {
                    let e = kube::Error::Api(status);
                    report(metrics, resource, "watch", &e, failing);
                    break true;
                }
            }
        };
        if events > 0 && !ended_by_error {
            recovered(resource, failing);
            backoff.reset();
            failures = 0;
        }
        let short = opened.elapsed() < MIN_WATCH_LIFE && events == 0;
        if ended_by_error || short {
            failures += u32::from(ended_by_error);
            if failures >= WATCH_FAILURES_BEFORE_RELIST {
                return Some(Relist::Failures);
            }
            if sleep(shutdown, backoff.next_wait()).await {
                return None;
            }
        }
    }
}

fn advance(version: &mut String, new: Option<&str>) {
    if let Some(v) = new.filter(|v| !v.is_empty()) {
        v.clone_into(version);
    }
}

/// Counts a failed request; the first of a run of failures is a warning,
/// the rest debug (the API server being away is one problem, not many).
fn report(
    metrics: &AgentMetrics,
    resource: &'static str,
    request: &'static str,
    e: &kube::Error,
    failing: &mut bool,
) {
    metrics
        .kube_api_errors
        .with_label_values(&[resource, request])
        .inc();
    if std::mem::replace(failing, true) {
        tracing::debug!(resource, request, error = %e, "kubernetes: request failed");
    } else {
        tracing::warn!(resource, request, error = %e, "kubernetes: request failed; records keep flowing with what their paths say, retrying");
    }
}

fn recovered(resource: &'static str, failing: &mut bool) {
    if std::mem::take(failing) {
        tracing::info!(resource, "kubernetes: API server reachable again");
    }
}

/// Sleeps `d`; `true` when shutdown came first.
async fn sleep(shutdown: &Shutdown, d: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800), 7);
        let windows = [100u64, 200, 400, 800, 800, 800];
        for w in windows {
            let d = b.next_wait();
            let w = Duration::from_millis(w);
            assert!(d >= w / 2 && d < w, "{d:?} outside [{:?}, {w:?})", w / 2);
        }
        b.reset();
        assert!(b.next_wait() < Duration::from_millis(100));
    }

    #[test]
    fn backoff_seeds_spread_the_waits() {
        let first =
            |seed| Backoff::new(Duration::from_secs(1), Duration::from_secs(30), seed).next_wait();
        let waits: std::collections::BTreeSet<Duration> = (0..16).map(first).collect();
        assert!(waits.len() > 8, "{waits:?}");
    }
}
