//! Which LSN the slot may be confirmed to.
//!
//! Transactions arrive in commit order. Each holds some events; an event is *done* when Kafka
//! has acknowledged it and (for table rows) the row is marked `sent`, or when it was skipped
//! (already sent) or parked as `failed`. The slot may be confirmed up to the end LSN of the last
//! transaction whose events, and those of every transaction before it, are all done: a crash
//! then makes the server resend exactly the transactions that may not have reached Kafka.

use std::collections::VecDeque;
use std::time::Instant;

use crate::lsn::Lsn;

/// Identifies a transaction in the tracker (monotonic, never reused).
pub type TxnId = u64;

#[derive(Debug)]
struct Pending {
    end_lsn: Lsn,
    remaining: usize,
    /// When the transaction committed on the server (for the lag-in-seconds gauge).
    commit_time: Option<chrono::DateTime<chrono::Utc>>,
    received: Instant,
}

/// Tracks transactions in commit order and computes the confirmable LSN.
#[derive(Debug, Default)]
pub struct AckTracker {
    queue: VecDeque<Pending>,
    /// Id of `queue[0]`.
    front: TxnId,
    /// Highest LSN every transaction up to which is done.
    confirmed: Lsn,
    events_in_flight: usize,
}

impl AckTracker {
    /// Starts confirming from `start` (the slot's confirmed flush LSN).
    pub fn new(start: Lsn) -> Self {
        Self {
            confirmed: start,
            ..Self::default()
        }
    }

    /// Registers a committed transaction with `events` outstanding events.
    pub fn push(
        &mut self,
        end_lsn: Lsn,
        events: usize,
        commit_time: Option<chrono::DateTime<chrono::Utc>>,
    ) -> TxnId {
        let id = self.front + self.queue.len() as TxnId;
        self.queue.push_back(Pending {
            end_lsn,
            remaining: events,
            commit_time,
            received: Instant::now(),
        });
        self.events_in_flight += events;
        self.advance();
        id
    }

    /// One event of `txn` is done.
    pub fn done(&mut self, txn: TxnId) {
        let index = txn
            .checked_sub(self.front)
            .expect("event of an already confirmed transaction") as usize;
        let p = &mut self.queue[index];
        assert!(
            p.remaining > 0,
            "more completions than events in transaction {txn}"
        );
        p.remaining -= 1;
        self.events_in_flight -= 1;
        if index == 0 {
            self.advance();
        }
    }

    fn advance(&mut self) {
        while let Some(p) = self.queue.front() {
            if p.remaining > 0 {
                break;
            }
            self.confirmed = self.confirmed.max(p.end_lsn);
            self.queue.pop_front();
            self.front += 1;
        }
    }

    /// Nothing is waiting: every received transaction is done.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// When idle, the server's WAL end can be confirmed too (an idle outbox pins no WAL).
    pub fn confirm_idle(&mut self, wal_end: Lsn) {
        if self.is_idle() {
            self.confirmed = self.confirmed.max(wal_end);
        }
    }

    pub fn confirmed(&self) -> Lsn {
        self.confirmed
    }

    pub fn events_in_flight(&self) -> usize {
        self.events_in_flight
    }

    pub fn transactions_in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Age of the oldest transaction not yet confirmable, from its commit time when known.
    pub fn oldest_age_seconds(&self) -> f64 {
        match self.queue.front() {
            None => 0.0,
            Some(p) => match p.commit_time {
                Some(t) => (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0,
                None => p.received.elapsed().as_secs_f64(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_in_commit_order_only() {
        let mut t = AckTracker::new(Lsn(100));
        let a = t.push(Lsn(200), 2, None);
        let b = t.push(Lsn(300), 1, None);
        t.done(b);
        assert_eq!(t.confirmed(), Lsn(100), "b is done but a is not");
        t.done(a);
        assert_eq!(t.confirmed(), Lsn(100));
        t.done(a);
        assert_eq!(t.confirmed(), Lsn(300));
        assert!(t.is_idle());
        assert_eq!(t.events_in_flight(), 0);
    }

    #[test]
    fn empty_transactions_confirm_when_everything_before_is_done() {
        let mut t = AckTracker::new(Lsn(0));
        let a = t.push(Lsn(10), 1, None);
        t.push(Lsn(20), 0, None);
        assert_eq!(t.confirmed(), Lsn(0));
        t.done(a);
        assert_eq!(t.confirmed(), Lsn(20));
        t.push(Lsn(30), 0, None);
        assert_eq!(t.confirmed(), Lsn(30));
    }

    #[test]
    fn idle_confirms_the_wal_end_but_never_goes_back() {
        let mut t = AckTracker::new(Lsn(50));
        let a = t.push(Lsn(60), 1, None);
        t.confirm_idle(Lsn(1000));
        assert_eq!(t.confirmed(), Lsn(50), "not idle");
        t.done(a);
        t.confirm_idle(Lsn(1000));
        assert_eq!(t.confirmed(), Lsn(1000));
        t.confirm_idle(Lsn(900));
        assert_eq!(t.confirmed(), Lsn(1000));
    }

    #[test]
    fn random_completion_orders_confirm_exactly_the_done_prefix() {
        use proptest::prelude::*;
        proptest!(|(sizes in prop::collection::vec(0usize..4, 1..30), seed in any::<u64>())| {
            let mut t = AckTracker::new(Lsn(0));
            let mut events = Vec::new();
            for (i, &n) in sizes.iter().enumerate() {
                let id = t.push(Lsn((i as u64 + 1) * 10), n, None);
                events.extend(std::iter::repeat_n(id, n));
            }
            // Deterministic shuffle from the seed.
            let mut s = seed;
            for i in (1..events.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                events.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut left: Vec<usize> = sizes.clone();
            for id in events {
                t.done(id);
                left[id as usize] -= 1;
                let prefix = left.iter().take_while(|&&n| n == 0).count();
                prop_assert_eq!(t.confirmed(), Lsn(prefix as u64 * 10));
            }
            prop_assert_eq!(t.confirmed(), Lsn(sizes.len() as u64 * 10));
        });
    }
}
