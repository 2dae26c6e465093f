//! Alert rules over logs ([`log`]) and Sentry issues ([`error`]), evaluated
//! with Prometheus' semantics and handed to an [`AlertSink`] with
//! Alertmanager's put semantics.
//!
//! Each rule is evaluated every `interval` (error rules fired by an event
//! also as soon as the event is announced). An evaluation yields the rule's
//! current samples — one per group or issue whose condition holds — and
//! moves each alert through its phases: new samples are *pending* until the
//! condition has held for `for`, then *firing*; a firing alert whose
//! condition stops holding keeps firing for `keep_firing_for`, then is sent
//! once as *resolved*. Every evaluation re-sends the firing alerts with
//! `ends_at` four intervals ahead, so an alert whose rule stopped being
//! evaluated expires by itself at the dispatcher. Every alert carries the
//! value of its condition (a count, an event rate or an issue's count):
//! the current one while firing, and once resolved the one at resolve time,
//! which is why an evaluation also reports the values of active alerts
//! whose condition no longer holds (`Evaluation::below`). The phases and their
//! times are persisted ([`state`]) so that a restart keeps them.
//!
//! [`RuleEngineHandle`] is the running engine: [`spawn`] starts it,
//! [`RuleEngineHandle::reload`] swaps the rules while keeping the state of
//! those that did not change. [`check`] validates rules with the parsers
//! that will run them (queries, [`template`]s), for `mecha validate`.
//!
//! This module must not index, route or notify; queries and issue reads run
//! on blocking threads.

pub mod error;
pub mod log;
pub mod state;
pub mod template;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mecha_config::{ConfigError, ErrorTrigger, RuleConfig, RuleKind};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::state::{ActiveAlert, Phase, StateStore};
use self::template::{Context, Template};
use crate::Error;
use crate::alert::AlertSink;
use crate::alert::model::{Alert, AlertStatus, Labels};
use crate::issues::{IssueEvent, IssueStore};
use crate::metrics::Metrics;
use crate::store::Store;

/// Wall-clock time in nanoseconds since the epoch; injectable so that tests
/// with paused tokio time move it too.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(crate::store::days::now_ns)
}

/// A clock that starts at the system time and then follows tokio's clock
/// (so `tokio::time::pause`/`advance` move it).
pub fn tokio_clock() -> Clock {
    let (wall, base) = (crate::store::days::now_ns(), Instant::now());
    Arc::new(move || {
        let elapsed = i64::try_from(base.elapsed().as_nanos()).unwrap_or(i64::MAX);
        wall.saturating_add(elapsed)
    })
}

/// Firing alerts are sent with `ends_at` this many intervals ahead (as
/// Prometheus does), so they expire if the rule stops being evaluated.
pub const RESEND_INTERVALS: u32 = 4;

pub use crate::alert::model::fingerprint;

/// One thing a rule's condition holds for, at one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    /// Identifying labels, `alertname` and the rule's labels included.
    pub labels: Labels,
    /// The count (or, for issue triggers, the issue's event count).
    pub value: f64,
    /// The link to the search or the issue.
    pub generator_url: String,
    /// For event-fired rules: when the event happened.
    pub triggered_ns: Option<i64>,
    /// For error rules: the issue.
    pub issue_id: Option<u64>,
    /// Annotations the engine adds (the issue's title), below the rule's.
    pub extra_annotations: Labels,
}

/// What one evaluation of a rule found.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Evaluation {
    /// One sample per thing the condition holds for.
    pub samples: Vec<Sample>,
    /// The current value of active alerts whose condition no longer holds
    /// (0 for a group no longer counted at all), by fingerprint: what a
    /// resolved alert shows as its value at resolve time. An alert missing
    /// here (its count was cut off, its issue is gone) keeps its last value.
    pub below: BTreeMap<String, f64>,
}

impl Evaluation {
    /// `samples`, and for each alert of `alerts` not among them the value
    /// `value` reads for its labels.
    pub(crate) fn with_below(
        samples: Vec<Sample>,
        alerts: &BTreeMap<String, ActiveAlert>,
        value: impl Fn(&Labels) -> Option<u64>,
    ) -> Evaluation {
        let held: std::collections::BTreeSet<String> =
            samples.iter().map(|s| fingerprint(&s.labels)).collect();
        let below = alerts
            .iter()
            .filter(|(f, _)| !held.contains(*f))
            .filter_map(|(f, a)| Some((f.clone(), value(&a.labels)? as f64)))
            .collect();
        Evaluation { samples, below }
    }
}

/// The count of the group `key` in `counts`: 0 when it was not counted,
/// unknown when groups past the limit were cut off.
pub(crate) fn group_count(
    counts: &crate::store::count::GroupCounts,
    key: &[String],
) -> Option<u64> {
    match counts.groups.get(key) {
        Some(n) => Some(*n),
        None => (counts.other == 0).then_some(0),
    }
}

/// A rule, checked and ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// As configured.
    pub config: RuleConfig,
    /// Hash of the definition: equal hashes keep state across reloads.
    pub definition: String,
    annotations: Vec<(String, Template)>,
}

impl CompiledRule {
    /// Checks `config` with the query and template parsers; the error names
    /// the rule and the key at fault.
    pub fn new(config: RuleConfig) -> Result<CompiledRule, Error> {
        let fail = |key: String, reason: String| Error::Rule {
            rule: config.name.clone(),
            key,
            reason,
        };
        if let Some(q) = &config.query {
            crate::store::check_query(q).map_err(|e| fail("query".into(), e.to_string()))?;
        }
        if config.on == Some(ErrorTrigger::EventRate) {
            crate::store::check_query(&error::filter_query(&config))
                .map_err(|e| fail("tags".into(), e.to_string()))?;
        }
        let mut annotations = Vec::new();
        for (name, text) in &config.annotations {
            let t = Template::parse(text).map_err(|e| fail(format!("annotations.{name}"), e))?;
            annotations.push((name.clone(), t));
        }
        let json =
            serde_json::to_string(&config).map_err(|e| fail("name".into(), e.to_string()))?;
        let definition = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(json.as_bytes()));
        Ok(CompiledRule {
            config,
            definition,
            annotations,
        })
    }

    fn annotate(&self, labels: &Labels, value: f64, extra: &Labels, external_url: &str) -> Labels {
        let cx = Context {
            labels,
            value,
            external_url,
        };
        let mut out = extra.clone();
        for (name, t) in &self.annotations {
            out.insert(name.clone(), t.expand(&cx));
        }
        out
    }
}

/// Checks every rule of `alerting` with the parsers that will run them
/// (query syntax, templates), naming `file`, the line in `text` and the key,
/// as the config crate does for its own checks.
pub fn check(
    alerting: &mecha_config::AlertingConfig,
    file: &str,
    text: &str,
) -> Result<(), ConfigError> {
    for (i, rule) in alerting.rules.iter().enumerate() {
        if let Err(Error::Rule { key, reason, .. }) = CompiledRule::new(rule.clone()) {
            let key = format!("aggregator.alerting.rules[{i}].{key}");
            return Err(ConfigError::at(file, text, &key, reason));
        }
    }
    Ok(())
}

/// What [`spawn`] needs besides the rules.
#[derive(Clone)]
pub struct EngineInputs {
    /// The log store (log and event-rate rules count in it).
    pub store: Arc<Store>,
    /// The issue store (error rules read issues).
    pub issues: Arc<IssueStore>,
    /// Where alerts go.
    pub sink: Arc<dyn AlertSink>,
    /// Counters of evaluations.
    pub metrics: Arc<Metrics>,
    /// Where the state file lives (`<data_dir>/alerts`).
    pub state_dir: std::path::PathBuf,
    /// The URL links in alerts start with.
    pub external_url: String,
    /// Default evaluation interval.
    pub evaluation_interval: Duration,
    /// Wall clock.
    pub clock: Clock,
}

impl std::fmt::Debug for EngineInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineInputs")
            .field("state_dir", &self.state_dir)
            .field("external_url", &self.external_url)
            .finish()
    }
}

/// A rule's state for `GET /api/v1/rules`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleStatus {
    /// The rule's name.
    pub name: String,
    /// `log` or `error`.
    #[serde(rename = "type")]
    pub kind: RuleKind,
    /// Error rules: what fires them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<ErrorTrigger>,
    /// Log rules: the query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Seconds between evaluations.
    pub interval_seconds: f64,
    /// `ok`, `err` (the last evaluation failed) or `unknown` (not yet run).
    pub health: &'static str,
    /// Why the last evaluation failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was last evaluated.
    pub last_evaluation: Option<DateTime<Utc>>,
    /// How long that took.
    pub evaluation_time_seconds: f64,
    /// The largest value of that evaluation (0 when nothing matched).
    pub last_value: Option<f64>,
    /// Pending and firing alerts.
    pub alerts: Vec<AlertState>,
}

/// One active alert of a rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertState {
    /// Its labels.
    pub labels: Labels,
    /// `pending` or `firing`.
    pub state: &'static str,
    /// When its condition started to hold.
    pub active_since: DateTime<Utc>,
    /// When it started firing.
    pub fired_at: Option<DateTime<Utc>>,
    /// Its last value.
    pub value: f64,
    /// Its fingerprint.
    pub fingerprint: String,
}

/// The rules' statuses, shared with the HTTP API.
#[derive(Debug, Clone, Default)]
pub struct RuleBoard(Arc<RwLock<Vec<RuleStatus>>>);

impl RuleBoard {
    /// The statuses as of the last evaluation of each rule.
    pub fn snapshot(&self) -> Vec<RuleStatus> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, rules: Vec<RuleStatus>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = rules;
    }
}

/// The last evaluation of a rule.
#[derive(Debug, Clone, Default)]
struct LastEval {
    at_ns: Option<i64>,
    seconds: f64,
    value: Option<f64>,
    error: Option<String>,
}

/// A rule with its alerts, as the engine runs it.
#[derive(Debug)]
struct RuleRuntime {
    rule: CompiledRule,
    interval: Duration,
    next_due: Instant,
    alerts: BTreeMap<String, ActiveAlert>,
    /// Issue announcements waiting for the next evaluation.
    triggers: Vec<Sample>,
    last: LastEval,
}

/// What runs under the engine's lock (on blocking threads).
struct Core {
    rules: Vec<RuleRuntime>,
    state: StateStore,
    inputs: EngineInputs,
    max_issue_id: u64,
}

enum Command {
    Reload(Vec<RuleConfig>, oneshot::Sender<Result<(), Error>>),
    Settle(oneshot::Sender<()>),
}

/// The running rule engine.
#[derive(Debug)]
pub struct RuleEngineHandle {
    commands: mpsc::Sender<Command>,
    board: RuleBoard,
    task: JoinHandle<()>,
}

/// Reloads the rules of a running engine (config reload); clonable. It
/// does not keep the engine alive: once the engine's handle is shut down,
/// a reload fails with [`Error::RulesStopped`].
#[derive(Debug, Clone)]
pub struct RuleReloader {
    commands: mpsc::WeakSender<Command>,
}

impl RuleReloader {
    /// See [`RuleEngineHandle::reload`].
    pub async fn reload(&self, rules: Vec<RuleConfig>) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        let commands = self.commands.upgrade().ok_or(Error::RulesStopped)?;
        commands
            .send(Command::Reload(rules, tx))
            .await
            .map_err(|_| Error::RulesStopped)?;
        rx.await.map_err(|_| Error::RulesStopped)?
    }
}

impl RuleEngineHandle {
    /// Replaces the rules. A rule with the same name and definition keeps
    /// its alerts and schedule; a changed or removed rule's firing alerts
    /// are sent resolved and its state forgotten. Rules are checked first:
    /// on an error nothing changes.
    pub async fn reload(&self, rules: Vec<RuleConfig>) -> Result<(), Error> {
        self.reloader().reload(rules).await
    }

    /// A clonable handle that reloads the rules.
    pub fn reloader(&self) -> RuleReloader {
        RuleReloader {
            commands: self.commands.downgrade(),
        }
    }

    /// Returns once every evaluation due now has run (tests, shutdown).
    pub async fn settle(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Settle(tx))
            .await
            .map_err(|_| Error::RulesStopped)?;
        rx.await.map_err(|_| Error::RulesStopped)
    }

    /// The rules' statuses (also served at `GET /api/v1/rules`).
    pub fn board(&self) -> RuleBoard {
        self.board.clone()
    }

    /// Stops the engine (state is already persisted after each evaluation).
    pub async fn shutdown(self) {
        drop(self.commands);
        let _ = self.task.await;
    }
}

/// Starts the engine: checks the rules, opens the state file under
/// `inputs.state_dir`, restores the alerts of unchanged rules and evaluates
/// every rule at once, then on its interval. `hooks` (issue announcements)
/// fire new-issue and regression rules as events arrive.
pub async fn spawn(
    rules: Vec<RuleConfig>,
    inputs: EngineInputs,
    hooks: Option<broadcast::Receiver<IssueEvent>>,
    board: RuleBoard,
) -> Result<RuleEngineHandle, Error> {
    let compiled = rules
        .into_iter()
        .map(CompiledRule::new)
        .collect::<Result<Vec<_>, _>>()?;
    let state_dir = inputs.state_dir.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let state = StateStore::open(&state_dir)?;
        let saved = state.load()?;
        let max_issue_id = state.meta(state::MAX_ISSUE_ID)?;
        Ok::<_, Error>((state, saved, max_issue_id))
    })
    .await
    .map_err(|e| Error::Task {
        what: "open rule state",
        reason: e.to_string(),
    })??;
    let (state, mut saved, max_issue_id) = opened;
    let now = Instant::now();
    let now_ns = (inputs.clock)();
    // Alerts that were firing under a rule that changed or went while we
    // were down are sent resolved: nothing will re-send them.
    let mut resolved = Vec::new();
    let mut runtimes = Vec::new();
    for rule in compiled {
        let alerts = match saved.remove(&rule.config.name) {
            Some(s) if s.definition == rule.definition => s.alerts,
            Some(s) => {
                resolved.extend(resolve_all(&s.alerts, now_ns));
                if let Err(e) = state.save(&rule.config.name, &rule.definition, &BTreeMap::new()) {
                    tracing::warn!(rule = %rule.config.name, error = %e, "cannot write rule state");
                }
                BTreeMap::new()
            }
            None => BTreeMap::new(),
        };
        runtimes.push(RuleRuntime {
            interval: rule.config.interval_or(inputs.evaluation_interval),
            rule,
            next_due: now,
            alerts,
            triggers: Vec::new(),
            last: LastEval::default(),
        });
    }
    for (name, gone) in saved {
        resolved.extend(resolve_all(&gone.alerts, now_ns));
        if let Err(e) = state.remove(&name) {
            tracing::warn!(rule = %name, error = %e, "cannot forget the state of a removed rule");
        }
    }
    let core = Core {
        rules: runtimes,
        state,
        inputs,
        max_issue_id,
    };
    if !resolved.is_empty() {
        core.inputs.sink.put(resolved);
    }
    board.set(core.statuses());
    let (tx, rx) = mpsc::channel(8);
    let task = tokio::spawn(run(Arc::new(Mutex::new(core)), rx, hooks, board.clone()));
    Ok(RuleEngineHandle {
        commands: tx,
        board,
        task,
    })
}

/// Resolved alerts for every firing one of `alerts`.
fn resolve_all(alerts: &BTreeMap<String, ActiveAlert>, now_ns: i64) -> Vec<Alert> {
    alerts
        .iter()
        .filter(|(_, a)| a.phase == Phase::Firing)
        .map(|(f, a)| Alert {
            status: AlertStatus::Resolved,
            labels: a.labels.clone(),
            annotations: Labels::new(),
            starts_at: time(a.fired_at_ns.unwrap_or(a.active_since_ns)),
            ends_at: time(now_ns),
            generator_url: a.generator_url.clone(),
            fingerprint: f.clone(),
            value: Some(a.value),
        })
        .collect()
}

fn time(ns: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_nanos(ns)
}

async fn run(
    core: Arc<Mutex<Core>>,
    mut commands: mpsc::Receiver<Command>,
    mut hooks: Option<broadcast::Receiver<IssueEvent>>,
    board: RuleBoard,
) {
    loop {
        let next = lock(&core).rules.iter().map(|r| r.next_due).min();
        tokio::select! {
            _ = sleep_until(next) => {
                evaluate(&core, &board, false).await;
            }
            cmd = commands.recv() => match cmd {
                None => return,
                Some(Command::Settle(reply)) => {
                    let drained = drain_hooks(&core, &mut hooks).await;
                    evaluate(&core, &board, drained).await;
                    let _ = reply.send(());
                }
                Some(Command::Reload(rules, reply)) => {
                    let result = reload(&core, rules).await;
                    if result.is_ok() {
                        evaluate(&core, &board, false).await;
                    }
                    let _ = reply.send(result);
                }
            },
            event = recv_hook(&mut hooks) => {
                match event {
                    Ok(event) => {
                        let c = Arc::clone(&core);
                        let wanted = spawn_blocking("read issue event", move || {
                            lock(&c).on_issue_event(&event);
                        })
                        .await;
                        if wanted.is_ok() {
                            evaluate(&core, &board, true).await;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "rule engine fell behind the issue announcements; reading the issue store");
                        let c = Arc::clone(&core);
                        let _ = spawn_blocking("catch up on issues", move || {
                            lock(&c).catch_up();
                        })
                        .await;
                        evaluate(&core, &board, true).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => hooks = None,
                }
            }
        }
    }
}

/// Takes every announcement already waiting (so that a settle sees them);
/// returns whether there was any.
async fn drain_hooks(
    core: &Arc<Mutex<Core>>,
    hooks: &mut Option<broadcast::Receiver<IssueEvent>>,
) -> bool {
    let Some(rx) = hooks.as_mut() else {
        return false;
    };
    let mut events = Vec::new();
    let mut lagged = false;
    loop {
        match rx.try_recv() {
            Ok(e) => events.push(e),
            Err(broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
            Err(broadcast::error::TryRecvError::Empty) => break,
            Err(broadcast::error::TryRecvError::Closed) => {
                *hooks = None;
                break;
            }
        }
    }
    if events.is_empty() && !lagged {
        return false;
    }
    let c = Arc::clone(core);
    let _ = spawn_blocking("read issue events", move || {
        let mut core = lock(&c);
        if lagged {
            core.catch_up();
        }
        for e in &events {
            core.on_issue_event(e);
        }
    })
    .await;
    true
}

async fn sleep_until(next: Option<Instant>) {
    match next {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn recv_hook(
    hooks: &mut Option<broadcast::Receiver<IssueEvent>>,
) -> Result<IssueEvent, broadcast::error::RecvError> {
    match hooks {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn lock(core: &Mutex<Core>) -> std::sync::MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn spawn_blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(what, error = %e, "rule engine task failed");
        Error::Task {
            what,
            reason: e.to_string(),
        }
    })
}

/// Evaluates the rules that are due (and, with `triggered`, those with
/// waiting issue announcements) and hands the alerts to the sink.
async fn evaluate(core: &Arc<Mutex<Core>>, board: &RuleBoard, triggered: bool) {
    let c = Arc::clone(core);
    let now = Instant::now();
    let result = spawn_blocking("evaluate rules", move || {
        let mut core = lock(&c);
        let alerts = core.evaluate_due(now, triggered);
        (alerts, core.statuses(), Arc::clone(&core.inputs.sink))
    })
    .await;
    if let Ok((alerts, statuses, sink)) = result {
        board.set(statuses);
        if !alerts.is_empty() {
            sink.put(alerts);
        }
    }
}

async fn reload(core: &Arc<Mutex<Core>>, rules: Vec<RuleConfig>) -> Result<(), Error> {
    let compiled = rules
        .into_iter()
        .map(CompiledRule::new)
        .collect::<Result<Vec<_>, _>>()?;
    let c = Arc::clone(core);
    let (resolved, sink) = spawn_blocking("reload rules", move || {
        let mut core = lock(&c);
        let resolved = core.replace_rules(compiled);
        (resolved, Arc::clone(&core.inputs.sink))
    })
    .await?;
    if !resolved.is_empty() {
        sink.put(resolved);
    }
    Ok(())
}

impl Core {
    fn replace_rules(&mut self, compiled: Vec<CompiledRule>) -> Vec<Alert> {
        let now = Instant::now();
        let now_ns = (self.inputs.clock)();
        let mut old: HashMap<String, RuleRuntime> = self
            .rules
            .drain(..)
            .map(|r| (r.rule.config.name.clone(), r))
            .collect();
        let mut resolved = Vec::new();
        let mut rules = Vec::new();
        for rule in compiled {
            match old.remove(&rule.config.name) {
                Some(rt) if rt.rule.definition == rule.definition => rules.push(rt),
                previous => {
                    if let Some(prev) = previous {
                        resolved.extend(resolve_all(&prev.alerts, now_ns));
                    }
                    let rt = RuleRuntime {
                        interval: rule.config.interval_or(self.inputs.evaluation_interval),
                        rule,
                        next_due: now,
                        alerts: BTreeMap::new(),
                        triggers: Vec::new(),
                        last: LastEval::default(),
                    };
                    self.persist(&rt);
                    rules.push(rt);
                }
            }
        }
        for (name, gone) in old {
            resolved.extend(resolve_all(&gone.alerts, now_ns));
            self.inputs.metrics.rule_removed(&name);
            if let Err(e) = self.state.remove(&name) {
                tracing::warn!(rule = %name, error = %e, "cannot forget the state of a removed rule");
            }
        }
        self.rules = rules;
        resolved
    }

    fn persist(&self, rt: &RuleRuntime) {
        if let Err(e) = self
            .state
            .save(&rt.rule.config.name, &rt.rule.definition, &rt.alerts)
        {
            tracing::warn!(rule = %rt.rule.config.name, error = %e, "cannot persist alert state; a restart would start this rule over");
        }
    }

    /// Queues an announced issue for the rules it fires.
    fn on_issue_event(&mut self, event: &IssueEvent) {
        let (issue, trigger, event_id) = match event {
            IssueEvent::Created { issue, event_id } => (issue, ErrorTrigger::NewIssue, event_id),
            IssueEvent::Regressed { issue, event_id } => {
                (issue, ErrorTrigger::Regression, event_id)
            }
            IssueEvent::Event { issue, .. } => {
                self.note_issue_id(issue.id);
                return;
            }
        };
        self.note_issue_id(issue.id);
        let now_ns = (self.inputs.clock)();
        let wanted: Vec<usize> = (0..self.rules.len())
            .filter(|&i| self.rules[i].rule.config.on == Some(trigger))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let event = error::event_json(&self.inputs.issues, issue.id, event_id);
        for i in wanted {
            let rt = &mut self.rules[i];
            if error::trigger_matches(&rt.rule.config, issue, event.as_ref()) {
                let s = error::trigger_sample(
                    &rt.rule.config,
                    issue,
                    now_ns,
                    &self.inputs.external_url,
                );
                rt.triggers.push(s);
            }
        }
    }

    fn note_issue_id(&mut self, id: u64) {
        if id > self.max_issue_id {
            self.max_issue_id = id;
            if let Err(e) = self.state.set_meta(state::MAX_ISSUE_ID, id) {
                tracing::warn!(error = %e, "cannot persist the newest issue id");
            }
        }
    }

    /// After missed announcements: issues newer than the newest seen are
    /// new, unresolved regressed ones regressions.
    fn catch_up(&mut self) {
        let issues = match error::issues_since(&self.inputs.issues, self.max_issue_id) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the issue store after missed announcements");
                return;
            }
        };
        for (issue, created) in issues {
            let event_id = issue.latest_event_id.clone();
            let event = if created {
                IssueEvent::Created { issue, event_id }
            } else {
                IssueEvent::Regressed { issue, event_id }
            };
            // A regression already firing is not announced twice.
            if let IssueEvent::Regressed { issue, .. } = &event {
                let already = self.rules.iter().any(|r| {
                    r.alerts.values().any(|a| a.issue_id == Some(issue.id))
                        || r.triggers.iter().any(|t| t.issue_id == Some(issue.id))
                });
                if already {
                    continue;
                }
            }
            self.on_issue_event(&event);
        }
    }

    fn evaluate_due(&mut self, now: Instant, triggered: bool) -> Vec<Alert> {
        let mut out = Vec::new();
        for i in 0..self.rules.len() {
            let due = self.rules[i].next_due <= now;
            let has_triggers = !self.rules[i].triggers.is_empty();
            if !(due || (triggered && has_triggers)) {
                continue;
            }
            let now_ns = (self.inputs.clock)();
            let started = std::time::Instant::now();
            let rt = &mut self.rules[i];
            let samples = match rt.rule.config.kind {
                RuleKind::Log => log::evaluate(
                    &rt.rule.config,
                    &self.inputs.store,
                    &rt.alerts,
                    now_ns,
                    &self.inputs.external_url,
                ),
                RuleKind::Error => error::evaluate(
                    &rt.rule.config,
                    &self.inputs.store,
                    &self.inputs.issues,
                    &rt.alerts,
                    std::mem::take(&mut rt.triggers),
                    now_ns,
                    &self.inputs.external_url,
                ),
            };
            let seconds = started.elapsed().as_secs_f64();
            let name = rt.rule.config.name.clone();
            self.inputs
                .metrics
                .rule_evaluated(&name, seconds, samples.is_ok());
            if due {
                rt.next_due = next_due(rt.next_due, rt.interval, now);
            }
            match samples {
                Ok(samples) => {
                    let value = samples.samples.iter().map(|s| s.value).fold(0.0, f64::max);
                    rt.last = LastEval {
                        at_ns: Some(now_ns),
                        seconds,
                        value: Some(value),
                        error: None,
                    };
                    let before = rt.alerts.clone();
                    let alerts = advance(rt, samples, now_ns, &self.inputs.external_url);
                    if rt.alerts != before {
                        let rt = &self.rules[i];
                        self.persist(rt);
                    }
                    out.extend(alerts);
                }
                Err(e) => {
                    tracing::warn!(rule = %name, error = %e, "rule evaluation failed");
                    rt.last = LastEval {
                        at_ns: Some(now_ns),
                        seconds,
                        value: None,
                        error: Some(e.to_string()),
                    };
                    // Keep re-sending what fires so it does not expire at
                    // the dispatcher because of, say, a transient disk error.
                    let ends = now_ns.saturating_add(resend_ns(rt.interval));
                    out.extend(
                        rt.alerts
                            .iter()
                            .filter(|(_, a)| a.phase == Phase::Firing)
                            .map(|(f, a)| {
                                firing_alert(&rt.rule, f, a, ends, &self.inputs.external_url)
                            }),
                    );
                }
            }
        }
        out
    }

    fn statuses(&self) -> Vec<RuleStatus> {
        self.rules
            .iter()
            .map(|rt| RuleStatus {
                name: rt.rule.config.name.clone(),
                kind: rt.rule.config.kind,
                on: rt.rule.config.on,
                query: rt.rule.config.query.clone(),
                interval_seconds: rt.interval.as_secs_f64(),
                health: match (&rt.last.at_ns, &rt.last.error) {
                    (None, _) => "unknown",
                    (Some(_), None) => "ok",
                    (Some(_), Some(_)) => "err",
                },
                last_error: rt.last.error.clone(),
                last_evaluation: rt.last.at_ns.map(time),
                evaluation_time_seconds: rt.last.seconds,
                last_value: rt.last.value,
                alerts: rt
                    .alerts
                    .iter()
                    .map(|(f, a)| AlertState {
                        labels: a.labels.clone(),
                        state: a.phase.as_str(),
                        active_since: time(a.active_since_ns),
                        fired_at: a.fired_at_ns.map(time),
                        value: a.value,
                        fingerprint: f.clone(),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// The next evaluation after one due at `due`: one interval later, or, when
/// evaluations fell behind, one interval from now (missed ones are skipped).
fn next_due(due: Instant, interval: Duration, now: Instant) -> Instant {
    let next = due + interval;
    if next <= now { now + interval } else { next }
}

fn resend_ns(interval: Duration) -> i64 {
    i64::try_from((interval * RESEND_INTERVALS).as_nanos()).unwrap_or(i64::MAX)
}

/// Moves a rule's alerts through their phases given this evaluation's
/// samples, and returns what to send: every firing alert, and the alerts
/// that resolved now.
fn advance(rt: &mut RuleRuntime, eval: Evaluation, now_ns: i64, external_url: &str) -> Vec<Alert> {
    let pending_for = i64::try_from(rt.rule.config.pending_for().as_nanos()).unwrap_or(i64::MAX);
    let keep = i64::try_from(rt.rule.config.keep_firing().as_nanos()).unwrap_or(i64::MAX);
    let mut current: BTreeMap<String, Sample> = BTreeMap::new();
    for s in eval.samples {
        current.insert(fingerprint(&s.labels), s);
    }
    let mut extra: HashMap<String, Labels> = HashMap::new();
    for (f, s) in &current {
        let entry = rt.alerts.entry(f.clone()).or_insert_with(|| ActiveAlert {
            labels: s.labels.clone(),
            phase: Phase::Pending,
            active_since_ns: now_ns,
            fired_at_ns: None,
            lost_since_ns: None,
            value: s.value,
            generator_url: s.generator_url.clone(),
            triggered_ns: s.triggered_ns,
            issue_id: s.issue_id,
        });
        entry.value = s.value;
        entry.lost_since_ns = None;
        entry.generator_url.clone_from(&s.generator_url);
        if s.triggered_ns.is_some() {
            entry.triggered_ns = s.triggered_ns;
        }
        if entry.phase == Phase::Pending
            && now_ns.saturating_sub(entry.active_since_ns) >= pending_for
        {
            entry.phase = Phase::Firing;
            entry.fired_at_ns = Some(now_ns);
        }
        extra.insert(f.clone(), s.extra_annotations.clone());
    }
    let mut out = Vec::new();
    let ends = now_ns.saturating_add(resend_ns(rt.interval));
    let mut gone = Vec::new();
    for (f, a) in rt.alerts.iter_mut() {
        if current.contains_key(f) {
            continue;
        }
        match a.phase {
            // A pending alert whose condition stopped never fired: forget it.
            Phase::Pending => gone.push(f.clone()),
            Phase::Firing => {
                if let Some(v) = eval.below.get(f) {
                    a.value = *v;
                }
                let lost = *a.lost_since_ns.get_or_insert(now_ns);
                if now_ns.saturating_sub(lost) >= keep {
                    gone.push(f.clone());
                    let mut alert = firing_alert(&rt.rule, f, a, now_ns, external_url);
                    alert.status = AlertStatus::Resolved;
                    out.push(alert);
                }
            }
        }
    }
    for f in gone {
        rt.alerts.remove(&f);
    }
    for (f, a) in &rt.alerts {
        if a.phase == Phase::Firing {
            let mut alert = firing_alert(&rt.rule, f, a, ends, external_url);
            if let Some(extra) = extra.get(f) {
                let mut annotations = extra.clone();
                annotations.extend(alert.annotations);
                alert.annotations = annotations;
            }
            out.push(alert);
        }
    }
    out
}

fn firing_alert(
    rule: &CompiledRule,
    f: &str,
    a: &ActiveAlert,
    ends_ns: i64,
    external_url: &str,
) -> Alert {
    Alert {
        status: AlertStatus::Firing,
        labels: a.labels.clone(),
        annotations: rule.annotate(&a.labels, a.value, &Labels::new(), external_url),
        starts_at: time(a.fired_at_ns.unwrap_or(a.active_since_ns)),
        ends_at: time(ends_ns),
        generator_url: a.generator_url.clone(),
        fingerprint: f.to_string(),
        value: Some(a.value),
    }
}

/// The labels every alert of `rule` carries besides its own: the rule's
/// labels, then `alertname`.
pub(crate) fn base_labels(rule: &RuleConfig) -> Labels {
    let mut labels = rule.labels.clone();
    labels.insert("alertname".to_string(), rule.name.clone());
    labels
}

/// The alerts `rule` would produce, with placeholder group values (`<field>`)
/// or a placeholder issue, and `value` (default: the threshold) as the
/// value, fired at `now` (ns since the epoch): what `mecha alert preview
/// --rule NAME` renders through the routing and receivers.
pub fn sample_alerts(
    rule: &RuleConfig,
    external_url: &str,
    value: Option<f64>,
    now: i64,
) -> Result<Vec<Alert>, Error> {
    let compiled = CompiledRule::new(rule.clone())?;
    let value = value.unwrap_or(match (rule.kind, rule.on) {
        (RuleKind::Log, _) | (RuleKind::Error, Some(ErrorTrigger::EventRate)) => {
            rule.min_count() as f64
        }
        _ => 1.0,
    });
    let sample = match rule.kind {
        RuleKind::Log => log::placeholder(rule, value, external_url),
        RuleKind::Error => error::placeholder(rule, value, now, external_url),
    };
    let f = fingerprint(&sample.labels);
    let active = ActiveAlert {
        labels: sample.labels.clone(),
        phase: Phase::Firing,
        active_since_ns: now,
        fired_at_ns: Some(now),
        lost_since_ns: None,
        value,
        generator_url: sample.generator_url.clone(),
        triggered_ns: sample.triggered_ns,
        issue_id: sample.issue_id,
    };
    let interval = rule.interval_or(Duration::from_secs(30));
    let mut alert = firing_alert(
        &compiled,
        &f,
        &active,
        now.saturating_add(resend_ns(interval)),
        external_url,
    );
    let mut annotations = sample.extra_annotations;
    annotations.extend(alert.annotations);
    alert.annotations = annotations;
    Ok(vec![alert])
}

/// Opens nothing: a helper for callers that only have a data directory.
pub fn state_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("alerts")
}

#[cfg(test)]
mod tests;
