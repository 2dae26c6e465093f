//! Which keys may send to which project, each project's processing options,
//! and its rate limit (a token bucket on tokio's clock, so tests can pause
//! time).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mecha_parsers::sentry::filter::{FilterOptions, Filters};
use mecha_parsers::sentry::scrub::ScrubOptions;
use tokio::time::Instant;

/// What is done to a project's events.
#[derive(Debug, Clone)]
pub struct ProjectRules {
    /// Inbound filters.
    pub filters: Filters,
    /// PII scrubbing.
    pub scrub: ScrubOptions,
    /// Rate limit, if any.
    pub rate: Option<Rate>,
}

/// A rate limit: `burst` events at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Events per second.
    pub per_second: f64,
    /// Bucket size.
    pub burst: u32,
}

/// Why a key may not send to a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The key is not configured at all.
    UnknownKey,
    /// The key belongs to another project.
    OtherProject(u64),
}

/// Open mode keeps a bucket per project id it sees; past this many the
/// full ones (idle at least a burst's refill time) are forgotten, so that
/// made-up project ids cannot grow the map without bound.
const MAX_OPEN_BUCKETS: usize = 10_000;

/// The projects of the endpoint.
pub struct Projects {
    /// Key → project id; empty in open mode.
    keys: HashMap<String, u64>,
    rules: HashMap<u64, Arc<ProjectRules>>,
    default_rules: Arc<ProjectRules>,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

impl Projects {
    /// Projects from `(id, keys, rules)`; `default_rules` apply in open mode
    /// (no projects).
    pub fn new(
        projects: Vec<(u64, Vec<String>, ProjectRules)>,
        default_rules: ProjectRules,
    ) -> Self {
        let mut keys = HashMap::new();
        let mut rules = HashMap::new();
        for (id, ks, r) in projects {
            for k in ks {
                keys.insert(k, id);
            }
            rules.insert(id, Arc::new(r));
        }
        Projects {
            keys,
            rules,
            default_rules: Arc::new(default_rules),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any key is accepted for any project.
    pub fn open_mode(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules for `key` sending to `project`, or why it may not.
    pub fn authorize(&self, project: u64, key: &str) -> Result<Arc<ProjectRules>, Denied> {
        if self.open_mode() {
            return Ok(self.default_rules.clone());
        }
        match self.keys.get(key) {
            None => Err(Denied::UnknownKey),
            Some(&p) if p != project => Err(Denied::OtherProject(p)),
            Some(p) => Ok(self
                .rules
                .get(p)
                .cloned()
                .unwrap_or_else(|| self.default_rules.clone())),
        }
    }

    /// Takes `n` events from `project`'s bucket, or says how long until
    /// they would be there (nothing is taken then).
    pub fn take(
        &self,
        project: u64,
        rules: &ProjectRules,
        n: u32,
        now: Instant,
    ) -> Result<(), Duration> {
        let Some(rate) = rules.rate else {
            return Ok(());
        };
        if n == 0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_OPEN_BUCKETS && !buckets.contains_key(&project) {
            buckets.retain(|_, b| !b.is_full(now));
        }
        buckets
            .entry(project)
            .or_insert_with(|| Bucket::full(rate, now))
            .take(n, now)
    }
}

/// A token bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: Rate,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(rate: Rate, now: Instant) -> Self {
        Bucket {
            rate,
            tokens: f64::from(rate.burst),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * self.rate.per_second).min(f64::from(self.rate.burst));
        self.at = now;
    }

    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * self.rate.per_second >= f64::from(self.rate.burst)
    }

    /// Takes `n` tokens, or returns the wait until `n` are there (at least
    /// 1 s, the resolution of `Retry-After`). More than `burst` at once can
    /// never pass; it is refused with the time to refill the whole bucket.
    pub fn take(&mut self, n: u32, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let want = f64::from(n);
        if want <= self.tokens {
            self.tokens -= want;
            return Ok(());
        }
        let missing = want.min(f64::from(self.rate.burst)) - self.tokens;
        let secs = (missing / self.rate.per_second).ceil().max(1.0);
        Err(Duration::from_secs_f64(secs.min(86_400.0)))
    }
}

/// The filter and scrub options of a config section.
pub fn rules_from_config(
    filters: &mecha_config::FiltersConfig,
    scrub: &mecha_config::ScrubConfig,
    rate: Option<&mecha_config::RateLimitConfig>,
) -> Result<ProjectRules, mecha_parsers::ParseError> {
    // Options the config does not name keep the parsers' defaults.
    #[allow(clippy::needless_update)]
    let filters = Filters::new(&FilterOptions {
        localhost: filters.localhost,
        browser_extensions: filters.browser_extensions,
        error_messages: filters.error_messages.iter().map(|g| g.0.clone()).collect(),
        ..FilterOptions::default()
    })?;
    #[allow(clippy::needless_update)]
    let scrub = ScrubOptions {
        enabled: scrub.enabled,
        scrub_ip: scrub.scrub_ip,
        extra_keys: scrub.extra_keys.clone(),
        safe_keys: scrub.safe_keys.clone(),
        ..ScrubOptions::default()
    };
    Ok(ProjectRules {
        filters,
        scrub,
        rate: rate.map(|r| Rate {
            per_second: r.events_per_second,
            burst: r.effective_burst(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(rate: Option<Rate>) -> ProjectRules {
        ProjectRules {
            filters: Filters::default(),
            scrub: ScrubOptions::default(),
            rate,
        }
    }

    #[test]
    fn keys_open_only_their_own_project() {
        let p = Projects::new(
            vec![
                (1, vec!["a".into()], rules(None)),
                (2, vec!["b".into(), "c".into()], rules(None)),
            ],
            rules(None),
        );
        assert!(!p.open_mode());
        assert!(p.authorize(1, "a").is_ok());
        assert!(p.authorize(2, "c").is_ok());
        assert_eq!(p.authorize(1, "b").err(), Some(Denied::OtherProject(2)));
        assert_eq!(p.authorize(1, "zz").err(), Some(Denied::UnknownKey));
        assert_eq!(p.authorize(3, "a").err(), Some(Denied::OtherProject(1)));
    }

    #[test]
    fn open_mode_takes_any_key_for_any_project() {
        let p = Projects::new(Vec::new(), rules(None));
        assert!(p.open_mode());
        assert!(p.authorize(99, "anything").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_a_burst_then_the_rate() {
        let rate = Rate {
            per_second: 2.0,
            burst: 4,
        };
        let p = Projects::new(Vec::new(), rules(Some(rate)));
        let r = rules(Some(rate));
        let t0 = Instant::now();
        assert_eq!(p.take(1, &r, 4, t0), Ok(()));
        assert_eq!(p.take(1, &r, 1, t0), Err(Duration::from_secs(1)));
        // Another project has its own bucket.
        assert_eq!(p.take(2, &r, 4, t0), Ok(()));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(p.take(1, &r, 1, Instant::now()), Ok(()));
        assert!(p.take(1, &r, 1, Instant::now()).is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        // Refilled only up to the burst.
        assert_eq!(p.take(1, &r, 4, Instant::now()), Ok(()));
        assert!(p.take(1, &r, 1, Instant::now()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_the_time_to_refill_what_is_missing() {
        let mut b = Bucket::full(
            Rate {
                per_second: 0.5,
                burst: 2,
            },
            Instant::now(),
        );
        assert_eq!(b.take(2, Instant::now()), Ok(()));
        assert_eq!(b.take(1, Instant::now()), Err(Duration::from_secs(2)));
        // More than the burst can never pass: the answer is the full refill.
        assert_eq!(b.take(10, Instant::now()), Err(Duration::from_secs(4)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.take(1, Instant::now()), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn open_mode_forgets_idle_buckets_past_the_cap() {
        let rate = Rate {
            per_second: 1.0,
            burst: 1,
        };
        let p = Projects::new(Vec::new(), rules(Some(rate)));
        let r = rules(Some(rate));
        for id in 0..MAX_OPEN_BUCKETS as u64 {
            let _ = p.take(id, &r, 1, Instant::now());
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let _ = p.take(u64::MAX, &r, 1, Instant::now());
        let len = p.buckets.lock().map(|b| b.len()).unwrap_or(0);
        assert_eq!(len, 1);
    }
}
