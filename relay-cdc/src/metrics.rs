//! The relay's Prometheus metrics (prefix `outbox_relay_`), registered in one registry that
//! `/metrics` serves.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub published: IntCounter,
    pub publish_errors: IntCounterVec,
    pub skipped: IntCounter,
    pub in_flight: IntGauge,
    pub lag_bytes: IntGauge,
    pub lag_seconds: prometheus::Gauge,
    pub commit_to_ack: Histogram,
    pub rows_not_sent: IntGauge,
    pub leader: IntGauge,
    pub confirmed_lsn: IntGauge,
    pub marked: IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let m = Self {
            published: IntCounter::new("outbox_relay_events_published_total", "Events Kafka acknowledged")
                .unwrap(),
            publish_errors: IntCounterVec::new(
                Opts::new(
                    "outbox_relay_publish_errors_total",
                    "Events that failed to publish, by kind",
                ),
                &["kind"],
            )
            .unwrap(),
            skipped: IntCounter::new(
                "outbox_relay_events_skipped_total",
                "Events resent by the server that were already sent (not produced again)",
            )
            .unwrap(),
            in_flight: IntGauge::new(
                "outbox_relay_events_in_flight",
                "Events produced but not yet confirmed",
            )
            .unwrap(),
            lag_bytes: IntGauge::new(
                "outbox_relay_replication_lag_bytes",
                "Server WAL end minus the slot's confirmed flush LSN",
            )
            .unwrap(),
            lag_seconds: prometheus::Gauge::new(
                "outbox_relay_replication_lag_seconds",
                "Age of the oldest committed transaction not yet confirmed",
            )
            .unwrap(),
            commit_to_ack: Histogram::with_opts(
                HistogramOpts::new(
                    "outbox_relay_commit_to_ack_seconds",
                    "From the transaction's commit on PostgreSQL to Kafka's acknowledgement",
                )
                .buckets(vec![
                    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
            )
            .unwrap(),
            rows_not_sent: IntGauge::new(
                "outbox_relay_rows_not_sent",
                "outbox_events rows whose status is not sent (sampled)",
            )
            .unwrap(),
            leader: IntGauge::new("outbox_relay_leader", "1 while this instance leads the slot").unwrap(),
            confirmed_lsn: IntGauge::new(
                "outbox_relay_confirmed_lsn",
                "The slot position this relay confirmed",
            )
            .unwrap(),
            marked: IntCounter::new("outbox_relay_rows_marked_sent_total", "Rows marked sent").unwrap(),
            registry,
        };
        for c in [
            Box::new(m.published.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.publish_errors.clone()),
            Box::new(m.skipped.clone()),
            Box::new(m.in_flight.clone()),
            Box::new(m.lag_bytes.clone()),
            Box::new(m.lag_seconds.clone()),
            Box::new(m.commit_to_ack.clone()),
            Box::new(m.rows_not_sent.clone()),
            Box::new(m.leader.clone()),
            Box::new(m.confirmed_lsn.clone()),
            Box::new(m.marked.clone()),
        ] {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
