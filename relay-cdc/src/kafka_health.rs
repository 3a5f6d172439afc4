//! Is Kafka taking our events right now? Drives `/readyz` while the relay streams.
//!
//! librdkafka retries forever (`message.timeout.ms = 0`), so an outage produces no error, only
//! silence: events handed to the producer get no delivery report. That silence is the signal.
//! With nothing in flight there is nothing to be silent about, so then a metadata request
//! probes the broker every few seconds instead.
//!
//! Silence for [`RESTART_AFTER`] ends the term with an error (logged); the next term waits
//! until Kafka answers, then starts a new producer from the slot's confirmed position. An
//! outage then costs nothing more, and a stuck producer is replaced: after a restart of a
//! single broker, librdkafka 2.12 was seen to keep every message queued for good, logging only
//! `METADATAUPDATE ... new leader-1 not found in cache` while the broker answered everyone else
//! (the 160-s silent stall of issue 9; only a new producer recovers). Nothing can stall silently
//! for longer than [`RESTART_AFTER`].

use std::time::{Duration, Instant};

use outbox::http::Readiness;

use crate::producer::EventProducer;

/// No delivery report for this long while events wait: Kafka is not taking them.
pub const STALLED_AFTER: Duration = Duration::from_secs(5);
/// How often an idle or stalled relay probes the broker.
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// Silence for this long while events wait: recreate the producer once Kafka answers.
pub const RESTART_AFTER: Duration = Duration::from_secs(20);

pub struct KafkaHealth {
    ready: Readiness,
    /// The last delivery report, or the moment events started waiting after an idle spell.
    last_progress: Instant,
    last_probe: Instant,
    probe_ok: bool,
    /// What `/readyz` says now; transitions are logged once each.
    healthy: bool,
}

impl KafkaHealth {
    /// Readiness is left as it is until the first [`Self::check`].
    pub fn new(ready: Readiness) -> Self {
        Self {
            ready,
            last_progress: Instant::now(),
            last_probe: Instant::now(),
            probe_ok: true,
            healthy: true,
        }
    }

    /// A delivery report arrived (success or failure: the broker answered).
    pub fn delivered(&mut self) {
        self.last_progress = Instant::now();
    }

    /// An event was handed to the producer; `waiting_before` events were already waiting.
    pub fn produced(&mut self, waiting_before: usize) {
        if waiting_before == 0 {
            self.last_progress = Instant::now();
        }
    }

    /// Is Kafka healthy as far as we know (what `/readyz` says)?
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Re-evaluates readiness; `waiting` is the number of events handed to the producer and
    /// not yet reported on. Cheap unless an idle probe is due. An error means the producer has
    /// been silent too long: end the term (the next one starts a new producer).
    pub fn check(&mut self, waiting: usize, producer: &EventProducer) -> anyhow::Result<()> {
        let silent = self.last_progress.elapsed();
        let stalled = waiting > 0 && silent >= STALLED_AFTER;
        if stalled && silent >= RESTART_AFTER {
            anyhow::bail!(
                "Kafka has acknowledged none of {waiting} waiting events for {} s; starting a new producer once Kafka answers",
                silent.as_secs()
            );
        }
        // Only when truly idle (no report for a while either): the probe blocks the loop.
        if waiting == 0 && silent >= PROBE_EVERY && self.last_probe.elapsed() >= PROBE_EVERY {
            self.last_probe = Instant::now();
            self.probe_ok = tokio::task::block_in_place(|| producer.check(Duration::from_secs(1)).is_ok());
        }
        let healthy = !stalled && (waiting > 0 || self.probe_ok);
        if healthy != self.healthy {
            if healthy {
                tracing::info!("Kafka acknowledges again; ready");
            } else if stalled {
                tracing::warn!(
                    waiting,
                    silent_s = silent.as_secs(),
                    "Kafka has not acknowledged any event for {} s; not ready until it does",
                    silent.as_secs()
                );
            } else {
                tracing::warn!("Kafka does not answer a metadata request; not ready until it does");
            }
            self.healthy = healthy;
        }
        if waiting > 0 {
            // Events in flight give a fresher signal than the last probe.
            self.probe_ok = true;
        }
        self.ready.set(healthy);
        Ok(())
    }
}
