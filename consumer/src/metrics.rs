//! Prometheus metrics (`outbox_consumer_*`) and the periodic `[metrics]` log line the seed shows.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use rdkafka::statistics::Statistics;

use crate::apply::Outcome;

/// Counters and gauges of one consumer; cheap to clone (the handles are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    ok: IntCounter,
    skipped: IntCounter,
    duplicate: IntCounter,
    dlq: IntCounter,
    retried: IntCounter,
    processing: Histogram,
    lag: IntGaugeVec,
}

/// Totals so far, by result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub ok: u64,
    pub skipped: u64,
    pub duplicate: u64,
    pub dlq: u64,
    pub retried: u64,
}

impl Totals {
    /// Messages whose fate is decided (retries are attempts, not messages).
    pub fn handled(&self) -> u64 {
        self.ok + self.skipped + self.duplicate + self.dlq
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let messages = IntCounterVec::new(
            Opts::new(
                "outbox_consumer_messages_total",
                "Kafka messages by result: ok (applied), skipped (unknown event type, recorded), \
                 duplicate (already applied), dlq (sent to the dead-letter topic), retried (attempts \
                 repeated after an error)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let processing = Histogram::with_opts(
            HistogramOpts::new(
                "outbox_consumer_processing_seconds",
                "Time from receiving a message to committing its database transaction",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.5, 12).expect("valid buckets")),
        )
        .expect("valid metric");
        let lag = IntGaugeVec::new(
            Opts::new(
                "outbox_consumer_lag_messages",
                "Messages in the partition after the last stored offset (from librdkafka statistics)",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        for c in [
            Box::new(messages.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(processing.clone()),
            Box::new(lag.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            ok: messages.with_label_values(&["ok"]),
            skipped: messages.with_label_values(&["skipped"]),
            duplicate: messages.with_label_values(&["duplicate"]),
            dlq: messages.with_label_values(&["dlq"]),
            retried: messages.with_label_values(&["retried"]),
            registry,
            processing,
            lag,
        }
    }

    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// Counts a committed batch.
    pub fn record(&self, o: &Outcome, latencies: impl Iterator<Item = Duration>) {
        self.ok.inc_by(o.ok);
        self.skipped.inc_by(o.skipped);
        self.duplicate.inc_by(o.duplicate);
        self.dlq.inc_by(o.dlq);
        for l in latencies {
            self.processing.observe(l.as_secs_f64());
        }
    }

    pub fn add_retried(&self, n: u64) {
        self.retried.inc_by(n);
    }

    pub fn totals(&self) -> Totals {
        Totals {
            ok: self.ok.get(),
            skipped: self.skipped.get(),
            duplicate: self.duplicate.get(),
            dlq: self.dlq.get(),
            retried: self.retried.get(),
        }
    }

    /// The seed's summary line. `ok` counts every newly recorded event, skipped ones included
    /// (`outbox_consumer_messages_total` tells them apart).
    pub fn summary_line(&self) -> String {
        let t = self.totals();
        format!(
            "[metrics] ok={} dup={} dlq={} retry={}",
            t.ok + t.skipped,
            t.duplicate,
            t.dlq,
            t.retried
        )
    }

    /// Lag per assigned partition from a librdkafka statistics report.
    pub fn set_lag(&self, stats: &Statistics) {
        self.lag.reset();
        for (name, topic) in &stats.topics {
            for (partition, p) in &topic.partitions {
                // Unassigned partitions and the internal -1 partition report -1.
                if *partition >= 0 && p.consumer_lag_stored >= 0 {
                    self.lag
                        .with_label_values(&[name.as_str(), &partition.to_string()])
                        .set(p.consumer_lag_stored);
                }
            }
        }
    }
}

/// Logs the summary line every `interval` until the task is dropped.
pub async fn log_periodically(metrics: Metrics, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        tracing::info!("{}", metrics.summary_line());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_has_the_seed_shape() {
        let m = Metrics::new();
        m.record(
            &Outcome {
                ok: 2,
                skipped: 1,
                duplicate: 3,
                dlq: 1,
            },
            [Duration::from_millis(5)].into_iter(),
        );
        m.add_retried(4);
        assert_eq!(m.summary_line(), "[metrics] ok=3 dup=3 dlq=1 retry=4");
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&m.registry().gather())
            .unwrap();
        assert!(
            text.contains("outbox_consumer_messages_total{result=\"skipped\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("outbox_consumer_processing_seconds_count 1"),
            "{text}"
        );
    }
}
