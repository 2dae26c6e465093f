//! The agent's internal telemetry, in one place: every metric the agent exports
//! is declared here and registered on the agent's own registry, served on the
//! admin listener's `/metrics`.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Reasons a record or line is discarded or altered, as `reason` label values.
pub mod reason {
    /// A line longer than `max_line_bytes` was cut.
    pub const LINE_TRUNCATED: &str = "line_truncated";
    /// Partial lines merged beyond `max_merged_line_bytes`: the rest was dropped.
    pub const MERGE_TRUNCATED: &str = "merge_truncated";
    /// A multiline record beyond its byte or line limit: the rest was dropped.
    pub const MULTILINE_TRUNCATED: &str = "multiline_truncated";
    /// Invalid UTF-8 replaced by U+FFFD.
    pub const INVALID_UTF8: &str = "invalid_utf8";
    /// The container envelope (CRI/docker) could not be parsed; kept as plain.
    pub const ENVELOPE_ERROR: &str = "envelope_error";
    /// The body parser failed; the raw line was kept with `parse_error`.
    pub const BODY_PARSE_ERROR: &str = "body_parse_error";
    /// A file shrank (copytruncate) before all of it was read.
    pub const TRUNCATED_FILE: &str = "file_truncated";
    /// A file the scan found was gone before it could be opened (counted
    /// once per file: its lines were never read).
    pub const FILE_VANISHED: &str = "file_vanished";
    /// The disk buffer was full and `when_full: drop_newest` is set.
    pub const BUFFER_FULL: &str = "buffer_full";
    /// A chunk larger than the whole disk buffer.
    pub const BUFFER_TOO_LARGE: &str = "buffer_too_large";
    /// Records of a buffer segment skipped at a corrupt record.
    pub const BUFFER_CORRUPT: &str = "buffer_corrupt";
    /// Sentry: missing, malformed or refused auth (401/403), or a
    /// `dsn` that contradicts the request.
    pub const SENTRY_AUTH: &str = "auth";
    /// Sentry: the path's project id is not a number.
    pub const SENTRY_INVALID_PROJECT: &str = "invalid_project";
    /// Sentry: a body, event or item over its size limit (413).
    pub const SENTRY_TOO_LARGE: &str = "too_large";
    /// Sentry: a compressed body that decompresses past the limit (413).
    pub const SENTRY_BOMB: &str = "bomb";
    /// Sentry: a body that does not decompress, or an unknown encoding.
    pub const SENTRY_DECOMPRESSION: &str = "decompression";
    /// Sentry: envelope framing is broken (wrong length, truncated, bad header).
    pub const SENTRY_BAD_ENVELOPE: &str = "bad_envelope";
    /// Sentry: an event or transaction that is not a JSON object.
    pub const SENTRY_INVALID_JSON: &str = "invalid_json";
    /// Sentry: an optional item (session, client report, ...) that is not
    /// valid JSON; dropped alone.
    pub const SENTRY_INVALID_ITEM: &str = "invalid_item";
    /// Sentry: a project over its rate limit (429).
    pub const SENTRY_RATE_LIMITED: &str = "rate_limited";
    /// Sentry: the pipeline or buffer had no room (429).
    pub const SENTRY_BUFFER_FULL: &str = "buffer_full";
    /// Sentry: transactions are dropped until a span pipeline exists.
    pub const SENTRY_TRANSACTION_UNSUPPORTED: &str = "transaction_unsupported";
    /// Sentry: attachments are not forwarded.
    pub const SENTRY_ATTACHMENT_UNSUPPORTED: &str = "attachment_unsupported";
    /// Sentry: items that are read and counted but not forwarded (sessions,
    /// client reports, check-ins, logs, spans, unknown types, non-CSP reports).
    pub const SENTRY_ITEM_UNSUPPORTED: &str = "item_unsupported";
    /// A log line of a pod, namespace or container excluded by its
    /// `mecha.io/exclude*` annotation.
    pub const KUBE_EXCLUDED: &str = "excluded";
}

/// Every metric of the agent.
pub struct AgentMetrics {
    registry: Registry,
    /// Records emitted by sources, by component.
    pub events_in: IntCounterVec,
    /// Records acknowledged downstream, by component.
    pub events_out: IntCounterVec,
    /// Bytes read by sources, by component.
    pub bytes_in: IntCounterVec,
    /// Discarded or altered items, by component and reason.
    pub discarded: IntCounterVec,
    /// Errors, by component and kind.
    pub errors: IntCounterVec,
    /// Files currently open by the tail source.
    pub files_watched: IntGauge,
    /// Rotations seen by the tail source.
    pub rotations: IntCounter,
    /// Bytes of files not yet acknowledged downstream, summed over files.
    pub checkpoint_lag_bytes: IntGauge,
    /// Chunks waiting between sources and the forwarder.
    pub queue_chunks: IntGauge,
    /// Bytes waiting between sources and the forwarder.
    pub queue_bytes: IntGauge,
    /// Records waiting between sources and the forwarder.
    pub queue_records: IntGauge,
    /// Batches sent by the forwarder, by outcome.
    pub forward_batches: IntCounterVec,
    /// Bytes of encoded records acknowledged downstream, before compression.
    pub forward_bytes: IntCounter,
    /// Time from send to acknowledgement of a batch.
    pub forward_latency: Histogram,
    /// 1 while the downstream is reachable, by sink.
    pub downstream_up: IntGaugeVec,
    /// Bytes in the disk buffer not yet delivered.
    pub buffer_bytes: IntGauge,
    /// Chunks in the disk buffer not yet delivered.
    pub buffer_chunks: IntGauge,
    /// Segment files of the disk buffer.
    pub buffer_segments: IntGauge,
    /// Bytes cut from torn buffer tails when the agent started.
    pub buffer_truncated_bytes: IntCounter,
    /// Sentry requests, by route and HTTP status.
    pub sentry_requests: IntCounterVec,
    /// Sentry envelope items, by type.
    pub sentry_items: IntCounterVec,
    /// Sentry events safely buffered and answered 200.
    pub sentry_events_accepted: IntCounter,
    /// Sentry bodies that failed to decompress, by encoding.
    pub sentry_decompression_errors: IntCounterVec,
    /// Open connections of the Sentry endpoint.
    pub sentry_connections: IntGauge,
    /// Pods in the Kubernetes cache (deleted ones kept for `delay_deletion`
    /// included).
    pub kube_cache_pods: IntGauge,
    /// Namespaces in the Kubernetes cache.
    pub kube_cache_namespaces: IntGauge,
    /// Full re-lists after the first, by resource and reason (`gone`: the
    /// API server no longer had the watch's resourceVersion; `error`: the
    /// watch could not be resumed).
    pub kube_watch_restarts: IntCounterVec,
    /// Failed requests to the API server, by resource and request.
    pub kube_api_errors: IntCounterVec,
    /// 1 once a resource's first list is in the cache.
    pub kube_synced: IntGaugeVec,
    /// Records of a pod sent without its metadata (the pod was not in the
    /// cache within `wait_for_metadata`, or no pod has the sender's IP), by
    /// component.
    pub kube_records_without_metadata: IntCounterVec,
    /// Log files whose lines are dropped by a `mecha.io/exclude*`
    /// annotation of their pod or namespace.
    pub kube_files_excluded: IntCounter,
}

impl AgentMetrics {
    /// Creates and registers every metric on a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let m = AgentMetrics {
            events_in: counter_vec(
                "mecha_component_received_events_total",
                "Records emitted by a source",
                &["component"],
            ),
            events_out: counter_vec(
                "mecha_component_sent_events_total",
                "Records acknowledged downstream",
                &["component"],
            ),
            bytes_in: counter_vec(
                "mecha_component_received_bytes_total",
                "Bytes read by a source",
                &["component"],
            ),
            discarded: counter_vec(
                "mecha_component_discarded_events_total",
                "Items discarded or altered, by reason",
                &["component", "reason"],
            ),
            errors: counter_vec(
                "mecha_component_errors_total",
                "Errors, by component and kind",
                &["component", "kind"],
            ),
            files_watched: gauge("mecha_tail_files_watched", "Files open by the tail source"),
            rotations: counter(
                "mecha_tail_rotations_total",
                "Rotations seen by the tail source",
            ),
            checkpoint_lag_bytes: gauge(
                "mecha_tail_checkpoint_lag_bytes",
                "Bytes of watched files not yet acknowledged downstream",
            ),
            queue_chunks: gauge(
                "mecha_pipeline_queue_chunks",
                "Chunks waiting for the forwarder",
            ),
            queue_bytes: gauge(
                "mecha_pipeline_queue_bytes",
                "Bytes waiting for the forwarder",
            ),
            queue_records: gauge(
                "mecha_pipeline_queue_records",
                "Records waiting for the forwarder",
            ),
            forward_batches: counter_vec(
                "mecha_forward_batches_total",
                "Batches sent downstream, by outcome",
                &["outcome"],
            ),
            forward_bytes: counter(
                "mecha_forward_bytes_total",
                "Bytes of encoded records acknowledged downstream, before compression",
            ),
            forward_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "mecha_forward_ack_latency_seconds",
                    "Time from sending a batch to its acknowledgement",
                )
                .buckets(vec![0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            )
            .unwrap_or_else(|_| unreachable_metric()),
            downstream_up: gauge_vec(
                "mecha_forward_downstream_up",
                "1 while the downstream answers",
                &["sink"],
            ),
            buffer_bytes: gauge(
                "mecha_buffer_bytes",
                "Bytes in the disk buffer not yet delivered",
            ),
            buffer_chunks: gauge(
                "mecha_buffer_chunks",
                "Chunks in the disk buffer not yet delivered",
            ),
            buffer_segments: gauge("mecha_buffer_segments", "Segment files of the disk buffer"),
            buffer_truncated_bytes: counter(
                "mecha_buffer_truncated_bytes_total",
                "Bytes cut from torn disk buffer tails at start-up",
            ),
            sentry_requests: counter_vec(
                "mecha_sentry_requests_total",
                "Sentry requests, by route and HTTP status",
                &["route", "status"],
            ),
            sentry_items: counter_vec(
                "mecha_sentry_items_total",
                "Sentry envelope items received, by type",
                &["type"],
            ),
            sentry_events_accepted: counter(
                "mecha_sentry_events_accepted_total",
                "Sentry events safely buffered and answered 200",
            ),
            sentry_decompression_errors: counter_vec(
                "mecha_sentry_decompression_errors_total",
                "Sentry request bodies that failed to decompress, by encoding",
                &["encoding"],
            ),
            sentry_connections: gauge(
                "mecha_sentry_connections",
                "Open connections of the Sentry endpoint (at most agent.sentry.limits.max_connections)",
            ),
            kube_cache_pods: gauge(
                "mecha_kube_cache_pods",
                "Pods in the Kubernetes metadata cache",
            ),
            kube_cache_namespaces: gauge(
                "mecha_kube_cache_namespaces",
                "Namespaces in the Kubernetes metadata cache",
            ),
            kube_watch_restarts: counter_vec(
                "mecha_kube_watch_restarts_total",
                "Full re-lists of a Kubernetes resource after the first, by reason",
                &["resource", "reason"],
            ),
            kube_api_errors: counter_vec(
                "mecha_kube_api_errors_total",
                "Failed Kubernetes API requests, by resource and request",
                &["resource", "request"],
            ),
            kube_synced: gauge_vec(
                "mecha_kube_synced",
                "1 once the first list of a Kubernetes resource is cached",
                &["resource"],
            ),
            kube_records_without_metadata: counter_vec(
                "mecha_kube_records_without_metadata_total",
                "Records sent without their pod's metadata, by component",
                &["component"],
            ),
            kube_files_excluded: counter(
                "mecha_kube_files_excluded_total",
                "Log files excluded by a mecha.io/exclude annotation",
            ),
            registry,
        };
        m.register_all();
        m
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.events_in.clone()),
            Box::new(self.events_out.clone()),
            Box::new(self.bytes_in.clone()),
            Box::new(self.discarded.clone()),
            Box::new(self.errors.clone()),
            Box::new(self.files_watched.clone()),
            Box::new(self.rotations.clone()),
            Box::new(self.checkpoint_lag_bytes.clone()),
            Box::new(self.queue_chunks.clone()),
            Box::new(self.queue_bytes.clone()),
            Box::new(self.queue_records.clone()),
            Box::new(self.forward_batches.clone()),
            Box::new(self.forward_bytes.clone()),
            Box::new(self.forward_latency.clone()),
            Box::new(self.downstream_up.clone()),
            Box::new(self.buffer_bytes.clone()),
            Box::new(self.buffer_chunks.clone()),
            Box::new(self.buffer_segments.clone()),
            Box::new(self.buffer_truncated_bytes.clone()),
            Box::new(self.sentry_requests.clone()),
            Box::new(self.sentry_items.clone()),
            Box::new(self.sentry_events_accepted.clone()),
            Box::new(self.sentry_decompression_errors.clone()),
            Box::new(self.sentry_connections.clone()),
            Box::new(self.kube_cache_pods.clone()),
            Box::new(self.kube_cache_namespaces.clone()),
            Box::new(self.kube_watch_restarts.clone()),
            Box::new(self.kube_api_errors.clone()),
            Box::new(self.kube_synced.clone()),
            Box::new(self.kube_records_without_metadata.clone()),
            Box::new(self.kube_files_excluded.clone()),
        ];
        for c in collectors {
            // Names are unique constants on a fresh registry: registration cannot
            // collide, and a failure would only hide one metric, not break the agent.
            if let Err(e) = self.registry.register(c) {
                debug_assert!(false, "metric registration failed: {e}");
            }
        }
    }

    /// Counts a discarded or altered item.
    pub fn discard(&self, component: &str, reason: &str) {
        self.discarded.with_label_values(&[component, reason]).inc();
    }

    /// Copies the disk buffer's counts: gauges as they are, counters by how
    /// much they grew since `last`.
    pub fn record_buffer(
        &self,
        last: &crate::buffer::BufferStats,
        now: &crate::buffer::BufferStats,
    ) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.buffer_bytes.set(gauge(now.unacked_bytes));
        self.buffer_chunks.set(gauge(now.unacked_records));
        self.buffer_segments.set(gauge(now.segments));
        let grew = |a: u64, b: u64| b.saturating_sub(a);
        self.buffer_truncated_bytes
            .inc_by(grew(last.truncated_bytes, now.truncated_bytes));
        self.errors
            .with_label_values(&["buffer", "sync"])
            .inc_by(grew(last.sync_errors, now.sync_errors));
        // Chunks, not records: the records of a lost chunk are not known.
        self.discarded
            .with_label_values(&["buffer", reason::BUFFER_CORRUPT])
            .inc_by(grew(last.lost_records, now.lost_records));
    }

    /// The Prometheus text exposition of every agent metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)
        {
            out = format!("# encoding failed: {e}\n");
        }
        out
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

// The constructors below only fail on invalid names or label sets, which are
// constants in this file; tests in this module construct every metric.
fn unreachable_metric<T>() -> T {
    panic!("invalid metric definition in agent/src/metrics.rs")
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| unreachable_metric())
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| unreachable_metric())
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric())
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exported() {
        let m = AgentMetrics::new();
        m.discard("tail", reason::LINE_TRUNCATED);
        m.files_watched.set(3);
        let text = m.render();
        assert!(text.contains(
            "mecha_component_discarded_events_total{component=\"tail\",reason=\"line_truncated\"} 1"
        ));
        assert!(text.contains("mecha_tail_files_watched 3"));
    }
}
