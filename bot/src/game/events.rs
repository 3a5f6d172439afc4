//! Domain events: plain data the persistence layer writes into `outbox_events` in the same
//! transaction as the new state.
//!
//! Idempotency keys are deterministic, `<game id>:...:<event type>`:
//! - events that happen once per game, round or vote name only that:
//!   `<game>:r2:orders:phase.changed`, `<game>:r2:round.resolved`,
//!   `<game>:votum1:votum.resolved`, `<game>:p42:player.joined`, `<game>:game.finished`;
//!   whichever command triggers them, the key is the same, so a phase can never be announced
//!   twice;
//! - events of commands that may legitimately repeat carry round, phase, actor, the command and
//!   the actor's action count: `<game>:r2:negotiations:p42:give:7:20:a5:coins.transferred`.
//!
//! Applying the same command to the same state therefore always yields the same keys.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const AGGREGATE_TYPE: &str = "game";

pub const GAME_CREATED: &str = "game.created";
pub const PLAYER_JOINED: &str = "player.joined";
pub const PLAYER_READY: &str = "player.ready";
pub const ROUND_STARTED: &str = "round.started";
pub const PHASE_CHANGED: &str = "phase.changed";
pub const CARD_DRAWN: &str = "card.drawn";
pub const BID_PLACED: &str = "bid.placed";
pub const ARENA_RESOLVED: &str = "arena.resolved";
pub const COINS_TRANSFERRED: &str = "coins.transferred";
pub const ORDERS_SUBMITTED: &str = "orders.submitted";
pub const ORDERS_CLEARED: &str = "orders.cleared";
pub const ROUND_RESOLVED: &str = "round.resolved";
pub const VOTUM_OPENED: &str = "votum.opened";
pub const VOTUM_VOTED: &str = "votum.voted";
pub const VOTUM_RESOLVED: &str = "votum.resolved";
pub const CHAIR_CHANGED: &str = "chair.changed";
pub const GAME_FINISHED: &str = "game.finished";
/// A player agreed to end the game early (the chair's proposal is the first).
pub const END_VOTED: &str = "game.end_voted";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainEvent {
    pub event_type: String,
    pub aggregate_type: String,
    /// The game id.
    pub aggregate_id: String,
    pub payload: Value,
    pub idempotency_key: String,
}

impl DomainEvent {
    /// The row to hand to [`outbox::emit`].
    pub fn as_new_event(&self) -> outbox::NewEvent<'_> {
        outbox::NewEvent {
            event_type: &self.event_type,
            aggregate_type: &self.aggregate_type,
            aggregate_id: &self.aggregate_id,
            payload: self.payload.clone(),
            idempotency_key: &self.idempotency_key,
        }
    }
}
