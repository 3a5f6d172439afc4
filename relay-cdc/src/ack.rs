//! Which LSN the slot may be confirmed to.
//!
//! Transactions arrive in commit order. Each holds some events; an event is *done* when Kafka
//! has acknowledged it and (for table rows) the row is marked `sent`, or when it was skipped
//! (already sent) or parked as `failed`. The slot may be confirmed up to the end LSN of the last
//! transaction whose events, and those of every transaction before it, are all done: a crash
//! then makes the server resend exactly the transactions that may not have reached Kafka.
//!
//! A transaction is *open* while its events still arrive (the relay produces them as they
//! come, so memory does not grow with the transaction): events are added in chunks, some may
//! be done before the next chunk is added, and it is confirmable only once *sealed* at its
//! Commit with its end LSN.

use std::collections::VecDeque;
use std::time::Instant;

use crate::lsn::Lsn;

/// Identifies a transaction in the tracker (monotonic, never reused).
pub type TxnId = u64;

#[derive(Debug)]
struct Pending {
    /// `None` while the transaction is open (its Commit not yet received).
    end_lsn: Option<Lsn>,
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
        let id = self.open(commit_time);
        self.add(id, events);
        self.seal(id, end_lsn);
        id
    }

    /// Registers a transaction whose events are still arriving (from its Begin); it holds back
    /// confirmation until [`Self::seal`].
    pub fn open(&mut self, commit_time: Option<chrono::DateTime<chrono::Utc>>) -> TxnId {
        let id = self.front + self.queue.len() as TxnId;
        self.queue.push_back(Pending {
            end_lsn: None,
            remaining: 0,
            commit_time,
            received: Instant::now(),
        });
        id
    }

    /// `events` more outstanding events of the open transaction `txn`.
    pub fn add(&mut self, txn: TxnId, events: usize) {
        let p = self.pending(txn);
        assert!(p.end_lsn.is_none(), "events added to sealed transaction {txn}");
        p.remaining += events;
        self.events_in_flight += events;
    }

    /// The open transaction `txn` has committed at `end_lsn`: no more events will be added, and
    /// once they are all done it is confirmable.
    pub fn seal(&mut self, txn: TxnId, end_lsn: Lsn) {
        let p = self.pending(txn);
        assert!(p.end_lsn.is_none(), "transaction {txn} sealed twice");
        p.end_lsn = Some(end_lsn);
        self.advance();
    }

    fn pending(&mut self, txn: TxnId) -> &mut Pending {
        let index = txn
            .checked_sub(self.front)
            .expect("event of an already confirmed transaction") as usize;
        &mut self.queue[index]
    }

    /// One event of `txn` is done.
    pub fn done(&mut self, txn: TxnId) {
        let front = txn == self.front;
        let p = self.pending(txn);
        assert!(
            p.remaining > 0,
            "more completions than events in transaction {txn}"
        );
        p.remaining -= 1;
        self.events_in_flight -= 1;
        if front {
            self.advance();
        }
    }

    fn advance(&mut self) {
        while let Some(p) = self.queue.front() {
            let Some(end_lsn) = p.end_lsn.filter(|_| p.remaining == 0) else {
                break;
            };
            self.confirmed = self.confirmed.max(end_lsn);
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
    fn an_open_transaction_holds_confirmation_until_sealed() {
        let mut t = AckTracker::new(Lsn(100));
        let a = t.push(Lsn(150), 1, None);
        let b = t.open(None);
        t.add(b, 2);
        t.done(b);
        t.done(b);
        t.done(a);
        assert_eq!(t.confirmed(), Lsn(150), "b's events are done but b is still open");
        assert!(!t.is_idle(), "an open transaction is not idle");
        t.confirm_idle(Lsn(1000));
        assert_eq!(t.confirmed(), Lsn(150));
        t.add(b, 1);
        assert_eq!(t.events_in_flight(), 1);
        t.seal(b, Lsn(300));
        assert_eq!(t.confirmed(), Lsn(150), "sealed, one event still outstanding");
        t.done(b);
        assert_eq!(t.confirmed(), Lsn(300));
        assert!(t.is_idle());
    }

    #[test]
    fn an_empty_open_transaction_confirms_at_its_seal() {
        let mut t = AckTracker::new(Lsn(0));
        let a = t.open(None);
        assert_eq!(t.confirmed(), Lsn(0));
        t.seal(a, Lsn(40));
        assert_eq!(t.confirmed(), Lsn(40));
        assert!(t.is_idle());
    }

    #[test]
    #[should_panic(expected = "sealed transaction")]
    fn adding_to_a_sealed_transaction_is_a_bug() {
        let mut t = AckTracker::new(Lsn(0));
        let a = t.open(None);
        t.add(a, 1);
        t.seal(a, Lsn(10));
        t.add(a, 1);
    }

    /// Transactions streamed in chunks: each is opened, gets its events in random chunks with
    /// completions interleaved anywhere (even before later chunks are added), then sealed. The
    /// confirmed LSN is always exactly the end of the longest prefix of sealed transactions
    /// whose events are all done.
    #[test]
    fn streamed_transactions_confirm_exactly_the_sealed_done_prefix() {
        use proptest::prelude::*;
        proptest!(|(sizes in prop::collection::vec(0usize..6, 1..20), seed in any::<u64>())| {
            let mut t = AckTracker::new(Lsn(0));
            let mut s = seed;
            let mut rand = move |n: usize| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 33) as usize % n.max(1)
            };
            // Per transaction: events added so far, done so far, sealed.
            let mut added = vec![0usize; sizes.len()];
            let mut done = vec![0usize; sizes.len()];
            let mut sealed = vec![false; sizes.len()];
            let mut ids = Vec::new();
            let mut next = 0; // next transaction to open (they open in commit order)
            loop {
                let expected = (0..ids.len())
                    .take_while(|&i| sealed[i] && done[i] == added[i])
                    .count();
                prop_assert_eq!(t.confirmed(), Lsn(expected as u64 * 10));
                // Pick an action: open the next transaction, add a chunk or seal the newest
                // open one, or complete any outstanding event.
                let open = (0..ids.len()).find(|&i| !sealed[i]);
                let outstanding: Vec<usize> = (0..ids.len()).filter(|&i| done[i] < added[i]).collect();
                let mut actions = Vec::new();
                match open {
                    Some(i) if added[i] < sizes[i] => actions.push(0),
                    Some(_) => actions.push(1),
                    None if next < sizes.len() => actions.push(2),
                    None => {}
                }
                if !outstanding.is_empty() {
                    actions.push(3);
                }
                if actions.is_empty() {
                    break;
                }
                match actions[rand(actions.len())] {
                    0 => {
                        let i = open.unwrap();
                        let chunk = 1 + rand(sizes[i] - added[i]);
                        t.add(ids[i], chunk);
                        added[i] += chunk;
                    }
                    1 => {
                        let i = open.unwrap();
                        t.seal(ids[i], Lsn((i as u64 + 1) * 10));
                        sealed[i] = true;
                    }
                    2 => {
                        ids.push(t.open(None));
                        next += 1;
                    }
                    _ => {
                        let i = outstanding[rand(outstanding.len())];
                        t.done(ids[i]);
                        done[i] += 1;
                    }
                }
                let in_flight: usize = (0..ids.len()).map(|i| added[i] - done[i]).sum();
                prop_assert_eq!(t.events_in_flight(), in_flight);
            }
            prop_assert_eq!(t.confirmed(), Lsn(sizes.len() as u64 * 10));
            prop_assert!(t.is_idle());
        });
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
