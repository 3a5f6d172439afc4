//! NeMonopolia: a Telegram strategy game whose every domain change goes out through the outbox.
//!
//! - [`game`]: the pure engine (state machine, rules, domain events).
//! - [`commands`]: chat text → commands, shared by every front end.
//! - [`store`]: persistence; one transaction per command: row lock, state, audit, snapshots,
//!   outbox events.
//! - [`app`]: what the bot does with a message, whatever carries it.
//! - [`telegram`]: the Telegram adapter (`bot run`); [`console`]: the terminal one (`bot console`).

pub mod app;
pub mod commands;
pub mod console;
pub mod game;
pub mod store;
pub mod telegram;
