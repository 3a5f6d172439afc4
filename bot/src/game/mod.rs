//! NeMonopolia's game engine: pure (no I/O, no clock, no async), so it can be unit- and
//! property-tested, and a game replays from its first snapshot by folding [`apply`] over the
//! audited commands.
//!
//! - [`state`]: the serde state stored as a JSONB snapshot.
//! - [`command`]: what players ask; [`refusal`]: why a command is refused (the chat reply).
//! - [`engine`]: [`apply`] → [`Outcome`] (new state, public and private replies, domain events,
//!   money ledger).
//! - [`rules`]: every number and the resolve order; [`rules_text`] prints them for `/rules`.
//! - [`deck`]: event cards, arena prizes, the seeded shuffle.
//! - [`events`]: domain events and their deterministic idempotency keys.

pub mod command;
pub mod deck;
pub mod engine;
pub mod events;
pub mod refusal;
mod resolve;
pub mod rules;
pub mod state;
pub mod text;

#[cfg(test)]
mod tests;

pub use command::{Actor, Command, parse_amount, parse_whole};
pub use engine::{MoneyMove, MoneyRule, Outcome, PrivateReply, apply};
pub use events::DomainEvent;
pub use refusal::Refusal;
pub use rules::rules_text;
pub use state::{Currency, Game, OrderKind, Phase, Player, PlayerId};
