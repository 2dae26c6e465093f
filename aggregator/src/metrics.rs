//! The aggregator's own telemetry: every metric name lives here and nowhere else.
//!
//! Metrics are registered in a private [`prometheus::Registry`] (not the global
//! default) so that two aggregators in one process, as in tests, do not collide.
//! This module must not decide anything: it only counts.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::Error;

/// The `component` label of `mecha_component_discarded_events_total` for this crate.
pub const COMPONENT: &str = "aggregator";

/// Why a record was dropped instead of indexed (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardReason {
    /// Its source position was at or below the stream's high-water mark.
    Duplicate,
    /// Its day is older than the retention period.
    OlderThanRetention,
    /// An alert without labels.
    InvalidAlert,
    /// A new alert while the dispatcher holds its maximum.
    AlertLimit,
}

impl DiscardReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DiscardReason::Duplicate => "duplicate",
            DiscardReason::OlderThanRetention => "older_than_retention",
            DiscardReason::InvalidAlert => "invalid_alert",
            DiscardReason::AlertLimit => "alert_limit",
        }
    }
}

/// Transport a record came in by (the `transport` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// OTLP over gRPC.
    Grpc,
    /// The in-process path of `mecha standalone`.
    InProcess,
}

impl Transport {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::InProcess => "in_process",
        }
    }
}

/// What became of a Sentry event on its way into the issue store (the
/// `outcome` label of `mecha_aggregator_issue_events_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// Arrived (every record carrying `sentry.event`).
    Received,
    /// Grouped and counted into an issue.
    Grouped,
    /// Its event id was seen before: not counted again.
    Duplicate,
    /// Unreadable (bad JSON, project or event id): kept as a log line only.
    Invalid,
    /// Its day is past retention: dropped.
    OlderThanRetention,
}

impl EventOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Received => "received",
            EventOutcome::Grouped => "grouped",
            EventOutcome::Duplicate => "duplicate",
            EventOutcome::Invalid => "invalid",
            EventOutcome::OlderThanRetention => "older_than_retention",
        }
    }
}

/// Outcome of a search request (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOutcome {
    /// Answered with hits.
    Ok,
    /// Rejected: bad query or parameter.
    BadRequest,
    /// Failed on our side.
    Error,
}

impl SearchOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchOutcome::Ok => "ok",
            SearchOutcome::BadRequest => "bad_request",
            SearchOutcome::Error => "error",
        }
    }
}

/// What became of one delivery attempt (the `outcome` label of
/// `mecha_alert_notifications_total` and `mecha_alert_group_notifications_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// Delivered.
    Success,
    /// Failed; retried later.
    RetryableError,
    /// Failed; retrying cannot help.
    PermanentError,
    /// The TLS handshake failed (e.g. the server's certificate was refused).
    TlsError,
}

impl NotifyOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOutcome::Success => "success",
            NotifyOutcome::RetryableError => "retryable_error",
            NotifyOutcome::PermanentError => "permanent_error",
            NotifyOutcome::TlsError => "tls_error",
        }
    }
}

/// All metrics of the aggregator, registered in one registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    received_records: IntCounterVec,
    /// Records added to an index.
    pub indexed_records: IntCounter,
    /// Records dropped as replays.
    pub duplicate_records: IntCounter,
    /// Approximate in-memory bytes of received records.
    pub received_bytes: IntCounter,
    /// Group commits done.
    pub commits: IntCounter,
    /// Duration of a group commit (adding documents, commit, reader reload).
    pub commit_duration: Histogram,
    /// Records waiting for a commit (queue backlog).
    pub pending_records: IntGauge,
    search_requests: IntCounterVec,
    discarded: IntCounterVec,
    /// Day indexes currently on disk.
    pub index_days: IntGauge,
    issue_events: IntCounterVec,
    /// Issues created.
    pub issues_created: IntCounter,
    /// Resolved issues reopened by a new event.
    pub issues_regressed: IntCounter,
    issue_store_errors: IntCounterVec,
    /// Time to group one event.
    pub grouping_duration: Histogram,
    issue_requests: IntCounterVec,
    alerts: IntGaugeVec,
    alert_notifications: IntCounterVec,
    alert_groups: IntGauge,
    alert_nflog_entries: IntGauge,
    alert_silences: IntGaugeVec,
    rule_evaluations: IntCounterVec,
    rule_failures: IntCounterVec,
    rule_duration: GaugeVec,
    /// Alert receivers' deliveries and the Alertmanager bridge.
    pub notify: NotifyMetrics,
    /// Config reloads (SIGHUP, `POST /-/reload`).
    pub reload: ReloadMetrics,
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Result<Metrics, Error> {
        let registry = Registry::new();
        let received_records = IntCounterVec::new(
            Opts::new(
                "mecha_aggregator_received_records_total",
                "Log records received, by transport.",
            ),
            &["transport"],
        )?;
        let indexed_records = IntCounter::new(
            "mecha_aggregator_indexed_records_total",
            "Log records added to an index and committed.",
        )?;
        let duplicate_records = IntCounter::new(
            "mecha_aggregator_duplicate_records_total",
            "Log records dropped because their source position was already indexed.",
        )?;
        let received_bytes = IntCounter::new(
            "mecha_aggregator_received_bytes_total",
            "Approximate in-memory bytes of received log records.",
        )?;
        let commits = IntCounter::new(
            "mecha_aggregator_commits_total",
            "Group commits of the log indexes.",
        )?;
        let commit_duration = Histogram::with_opts(
            HistogramOpts::new(
                "mecha_aggregator_commit_duration_seconds",
                "Time to index and commit one group of batches.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let pending_records = IntGauge::new(
            "mecha_aggregator_pending_records",
            "Log records waiting for a commit.",
        )?;
        let search_requests = IntCounterVec::new(
            Opts::new(
                "mecha_aggregator_search_requests_total",
                "Search requests, by outcome.",
            ),
            &["outcome"],
        )?;
        let discarded = IntCounterVec::new(
            Opts::new(
                "mecha_component_discarded_events_total",
                "Events dropped on purpose, by component and reason.",
            ),
            &["component", "reason"],
        )?;
        let index_days = IntGauge::new(
            "mecha_aggregator_index_days",
            "Day indexes currently kept on disk.",
        )?;
        let issue_events = IntCounterVec::new(
            Opts::new(
                "mecha_aggregator_issue_events_total",
                "Sentry events on their way into the issue store, by outcome.",
            ),
            &["outcome"],
        )?;
        let issues_created = IntCounter::new(
            "mecha_aggregator_issues_created_total",
            "Issues created by their first event.",
        )?;
        let issues_regressed = IntCounter::new(
            "mecha_aggregator_issues_regressed_total",
            "Resolved issues reopened by a new event.",
        )?;
        let issue_store_errors = IntCounterVec::new(
            Opts::new(
                "mecha_aggregator_issue_store_errors_total",
                "Failed operations of the issue store, by operation.",
            ),
            &["operation"],
        )?;
        let grouping_duration = Histogram::with_opts(
            HistogramOpts::new(
                "mecha_aggregator_issue_grouping_seconds",
                "Time to read and group one Sentry event.",
            )
            .buckets(vec![
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.01,
            ]),
        )?;
        let issue_requests = IntCounterVec::new(
            Opts::new(
                "mecha_aggregator_issue_api_requests_total",
                "Requests to the issues API, by outcome.",
            ),
            &["outcome"],
        )?;
        let alerts = IntGaugeVec::new(
            Opts::new(
                "mecha_alerts",
                "Unresolved alerts held by the dispatcher, by state (active, suppressed).",
            ),
            &["state"],
        )?;
        let alert_notifications = IntCounterVec::new(
            Opts::new(
                "mecha_alert_group_notifications_total",
                "Notifications of alert groups to receivers (all of a receiver's integrations at once), by receiver and outcome.",
            ),
            &["receiver", "outcome"],
        )?;
        let alert_groups = IntGauge::new(
            "mecha_alert_groups",
            "Aggregation groups of the alert dispatcher.",
        )?;
        let alert_nflog_entries = IntGauge::new(
            "mecha_alert_nflog_entries",
            "Entries in the notification log (receiver and group).",
        )?;
        let alert_silences = IntGaugeVec::new(
            Opts::new(
                "mecha_alert_silences",
                "Silences, by state (pending, active, expired).",
            ),
            &["state"],
        )?;
        registry.register(Box::new(alerts.clone()))?;
        registry.register(Box::new(alert_notifications.clone()))?;
        registry.register(Box::new(alert_groups.clone()))?;
        registry.register(Box::new(alert_nflog_entries.clone()))?;
        registry.register(Box::new(alert_silences.clone()))?;
        let rule_evaluations = IntCounterVec::new(
            Opts::new(
                "mecha_rule_evaluations_total",
                "Evaluations of alert rules, by rule.",
            ),
            &["rule"],
        )?;
        let rule_failures = IntCounterVec::new(
            Opts::new(
                "mecha_rule_evaluation_failures_total",
                "Failed evaluations of alert rules (query or store errors), by rule.",
            ),
            &["rule"],
        )?;
        let rule_duration = GaugeVec::new(
            Opts::new(
                "mecha_rule_last_evaluation_duration_seconds",
                "Duration of the last evaluation of each alert rule.",
            ),
            &["rule"],
        )?;
        registry.register(Box::new(rule_evaluations.clone()))?;
        registry.register(Box::new(rule_failures.clone()))?;
        registry.register(Box::new(rule_duration.clone()))?;
        let notify = NotifyMetrics::register(&registry)?;
        let reload = ReloadMetrics::register(&registry)?;
        registry.register(Box::new(issue_events.clone()))?;
        registry.register(Box::new(issues_created.clone()))?;
        registry.register(Box::new(issues_regressed.clone()))?;
        registry.register(Box::new(issue_store_errors.clone()))?;
        registry.register(Box::new(grouping_duration.clone()))?;
        registry.register(Box::new(issue_requests.clone()))?;
        registry.register(Box::new(received_records.clone()))?;
        registry.register(Box::new(indexed_records.clone()))?;
        registry.register(Box::new(duplicate_records.clone()))?;
        registry.register(Box::new(received_bytes.clone()))?;
        registry.register(Box::new(commits.clone()))?;
        registry.register(Box::new(commit_duration.clone()))?;
        registry.register(Box::new(pending_records.clone()))?;
        registry.register(Box::new(search_requests.clone()))?;
        registry.register(Box::new(discarded.clone()))?;
        registry.register(Box::new(index_days.clone()))?;
        Ok(Metrics {
            registry,
            received_records,
            indexed_records,
            duplicate_records,
            received_bytes,
            commits,
            commit_duration,
            pending_records,
            search_requests,
            discarded,
            index_days,
            issue_events,
            issues_created,
            issues_regressed,
            issue_store_errors,
            grouping_duration,
            issue_requests,
            alerts,
            alert_notifications,
            alert_groups,
            alert_nflog_entries,
            alert_silences,
            rule_evaluations,
            rule_failures,
            rule_duration,
            notify,
            reload,
        })
    }

    /// Counts one delivery attempt of an alert notification.
    pub fn alert_notification(&self, receiver: &str, outcome: NotifyOutcome) {
        self.alert_notifications
            .with_label_values(&[receiver, outcome.as_str()])
            .inc();
    }

    /// Sets the dispatcher's gauges: alerts by state, groups, notification
    /// log entries and silences (pending, active, expired).
    pub fn alert_gauges(
        &self,
        active: i64,
        suppressed: i64,
        groups: usize,
        nflog_entries: usize,
        silences: (usize, usize, usize),
    ) {
        self.alerts.with_label_values(&["active"]).set(active);
        self.alerts
            .with_label_values(&["suppressed"])
            .set(suppressed);
        self.alert_groups.set(gauge(groups));
        self.alert_nflog_entries.set(gauge(nflog_entries));
        for (state, n) in [
            ("pending", silences.0),
            ("active", silences.1),
            ("expired", silences.2),
        ] {
            self.alert_silences
                .with_label_values(&[state])
                .set(gauge(n));
        }
    }

    /// Counts one evaluation of an alert rule and notes its duration.
    pub fn rule_evaluated(&self, rule: &str, seconds: f64, ok: bool) {
        self.rule_evaluations.with_label_values(&[rule]).inc();
        if !ok {
            self.rule_failures.with_label_values(&[rule]).inc();
        }
        self.rule_duration.with_label_values(&[rule]).set(seconds);
    }

    /// Forgets the series of a rule that no longer exists.
    pub fn rule_removed(&self, rule: &str) {
        let _ = self.rule_evaluations.remove_label_values(&[rule]);
        let _ = self.rule_failures.remove_label_values(&[rule]);
        let _ = self.rule_duration.remove_label_values(&[rule]);
    }

    /// Counts Sentry events by outcome.
    pub fn issue_events(&self, outcome: EventOutcome, events: usize) {
        if events == 0 {
            return;
        }
        self.issue_events
            .with_label_values(&[outcome.as_str()])
            .inc_by(events as u64);
    }

    /// Counts a failed issue store operation (`record`, `mark_indexed`, `read`,
    /// `update`, `retention`).
    pub fn issue_store_error(&self, operation: &'static str) {
        self.issue_store_errors
            .with_label_values(&[operation])
            .inc();
    }

    /// Counts a request to the issues API.
    pub fn issue_request(&self, outcome: SearchOutcome) {
        self.issue_requests
            .with_label_values(&[outcome.as_str()])
            .inc();
    }

    /// Counts received records.
    pub fn received(&self, transport: Transport, records: usize, bytes: usize) {
        self.received_records
            .with_label_values(&[transport.as_str()])
            .inc_by(records as u64);
        self.received_bytes.inc_by(bytes as u64);
    }

    /// Counts dropped records.
    pub fn discarded(&self, reason: DiscardReason, records: usize) {
        if records == 0 {
            return;
        }
        self.discarded
            .with_label_values(&[COMPONENT, reason.as_str()])
            .inc_by(records as u64);
    }

    /// Counts a search request.
    pub fn search(&self, outcome: SearchOutcome) {
        self.search_requests
            .with_label_values(&[outcome.as_str()])
            .inc();
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# metrics encoding failed: {e}\n"))
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Metrics of config reloads, named as Prometheus' and Alertmanager's
/// (`*_config_last_reload_successful`,
/// `*_config_last_reload_success_timestamp_seconds`).
#[derive(Debug, Clone)]
pub struct ReloadMetrics {
    reloads: IntCounterVec,
    last_successful: IntGauge,
    last_success: Gauge,
}

impl ReloadMetrics {
    fn register(registry: &Registry) -> Result<ReloadMetrics, Error> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "mecha_config_reload_total",
                "Config reloads (SIGHUP, POST /-/reload), by outcome (success, error).",
            ),
            &["outcome"],
        )?;
        let last_successful = IntGauge::new(
            "mecha_config_last_reload_successful",
            "Whether the last config reload succeeded (1 at start).",
        )?;
        let last_success = Gauge::new(
            "mecha_config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully (start or reload), Unix seconds.",
        )?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(last_successful.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        for outcome in ["success", "error"] {
            reloads.with_label_values(&[outcome]);
        }
        last_successful.set(1);
        last_success.set(unix_now());
        Ok(ReloadMetrics {
            reloads,
            last_successful,
            last_success,
        })
    }

    /// Counts one reload.
    pub fn reloaded(&self, ok: bool) {
        let outcome = if ok { "success" } else { "error" };
        self.reloads.with_label_values(&[outcome]).inc();
        self.last_successful.set(i64::from(ok));
        if ok {
            self.last_success.set(unix_now());
        }
    }
}

fn unix_now() -> f64 {
    crate::store::days::now_ns() as f64 / 1e9
}

/// Metrics of the alert receivers and the Alertmanager bridge.
#[derive(Debug, Clone)]
pub struct NotifyMetrics {
    notifications: IntCounterVec,
    latency: HistogramVec,
    failing: IntGaugeVec,
    bridge: IntCounterVec,
    queued: IntGaugeVec,
}

impl NotifyMetrics {
    fn register(registry: &Registry) -> Result<NotifyMetrics, Error> {
        let notifications = IntCounterVec::new(
            Opts::new(
                "mecha_alert_notifications_total",
                "Delivery attempts of alert messages, by receiver, integration and outcome.",
            ),
            &["receiver", "integration", "outcome"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "mecha_alert_notification_duration_seconds",
                "Time of one delivery attempt (request and response), by integration.",
            )
            .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["receiver", "integration"],
        )?;
        let failing = IntGaugeVec::new(
            Opts::new(
                "mecha_alert_receiver_failing",
                "1 while the last delivery to an integration failed permanently (bad key, signature).",
            ),
            &["receiver", "integration"],
        )?;
        let bridge = IntCounterVec::new(
            Opts::new(
                "mecha_alert_bridge_requests_total",
                "Requests to the Alertmanager webhook bridge, by outcome.",
            ),
            &["outcome"],
        )?;
        let queued = IntGaugeVec::new(
            Opts::new(
                "mecha_alert_receiver_queued_messages",
                "Messages waiting for an integration's rate limit.",
            ),
            &["receiver", "integration"],
        )?;
        registry.register(Box::new(notifications.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(failing.clone()))?;
        registry.register(Box::new(bridge.clone()))?;
        registry.register(Box::new(queued.clone()))?;
        Ok(NotifyMetrics {
            notifications,
            latency,
            failing,
            bridge,
            queued,
        })
    }

    /// Counts one delivery attempt and its duration.
    pub fn attempt(&self, receiver: &str, integration: &str, outcome: NotifyOutcome, seconds: f64) {
        self.notifications
            .with_label_values(&[receiver, integration, outcome.as_str()])
            .inc();
        self.latency
            .with_label_values(&[receiver, integration])
            .observe(seconds);
    }

    /// Marks an integration failing (after a permanent error) or healthy.
    pub fn set_failing(&self, receiver: &str, integration: &str, failing: bool) {
        self.failing
            .with_label_values(&[receiver, integration])
            .set(i64::from(failing));
    }

    /// Sets the backlog of an integration's rate-limit queue.
    pub fn set_queued(&self, receiver: &str, integration: &str, messages: usize) {
        self.queued
            .with_label_values(&[receiver, integration])
            .set(i64::try_from(messages).unwrap_or(i64::MAX));
    }

    /// Counts a request to the Alertmanager bridge (`delivered`,
    /// `retryable_error`, `permanent_error`, `bad_request`,
    /// `unknown_receiver`, `too_large`).
    pub fn bridge_request(&self, outcome: &'static str) {
        self.bridge.with_label_values(&[outcome]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_text_names_every_family() {
        let m = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        m.received(Transport::Grpc, 3, 100);
        m.discarded(DiscardReason::Duplicate, 1);
        m.search(SearchOutcome::Ok);
        m.issue_events(EventOutcome::Grouped, 2);
        m.issue_store_error("record");
        m.issue_request(SearchOutcome::BadRequest);
        m.alert_notification("ops", NotifyOutcome::RetryableError);
        m.alert_gauges(2, 1, 3, 4, (0, 5, 6));
        m.rule_evaluated("PaymentErrors", 0.25, false);
        let text = m.render();
        for name in [
            "mecha_aggregator_received_records_total{transport=\"grpc\"} 3",
            "mecha_aggregator_received_bytes_total 100",
            "mecha_component_discarded_events_total{component=\"aggregator\",reason=\"duplicate\"} 1",
            "mecha_aggregator_search_requests_total{outcome=\"ok\"} 1",
            "mecha_aggregator_commit_duration_seconds_bucket",
            "mecha_aggregator_pending_records 0",
            "mecha_aggregator_index_days 0",
            "mecha_aggregator_issue_events_total{outcome=\"grouped\"} 2",
            "mecha_aggregator_issue_store_errors_total{operation=\"record\"} 1",
            "mecha_aggregator_issue_api_requests_total{outcome=\"bad_request\"} 1",
            "mecha_aggregator_issues_created_total 0",
            "mecha_aggregator_issues_regressed_total 0",
            "mecha_aggregator_issue_grouping_seconds_bucket",
            "mecha_alert_group_notifications_total{outcome=\"retryable_error\",receiver=\"ops\"} 1",
            "mecha_alerts{state=\"suppressed\"} 1",
            "mecha_alert_groups 3",
            "mecha_alert_nflog_entries 4",
            "mecha_alert_silences{state=\"expired\"} 6",
            "mecha_rule_evaluations_total{rule=\"PaymentErrors\"} 1",
            "mecha_rule_evaluation_failures_total{rule=\"PaymentErrors\"} 1",
            "mecha_rule_last_evaluation_duration_seconds{rule=\"PaymentErrors\"} 0.25",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
