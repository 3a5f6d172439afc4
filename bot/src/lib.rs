//! NeMonopolia: a Telegram strategy game whose every domain change goes out through the outbox.

pub mod game;
