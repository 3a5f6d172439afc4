//! Shared pieces of the bot's integration tests: a fresh migrated database per test
//! (outbox::testkit), players, and a way to send commands through [`App::handle`].

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

use bot::app::{App, ChatKind, Dest, Incoming, Response, Status};
use bot::game::{Actor, Game};
use bot::store::{Origin, Store};
use outbox::testkit::TestDb;
use sqlx::PgPool;

pub async fn app() -> (TestDb, App) {
    let db = TestDb::new().await.expect("a fresh test database");
    let app = App::new(Store::new(db.pool.clone())).with_seed(Some(7));
    (db, app)
}

pub fn actor(id: i64, name: &str) -> Actor {
    Actor {
        id,
        name: name.to_owned(),
        username: Some(name.to_lowercase()),
    }
}

/// Sends `text` as `who` in the group `chat`, without an update id (as the console does).
pub async fn say(app: &App, chat: i64, who: &Actor, text: &str) -> Response {
    send(app, chat, ChatKind::Group, who, text, None).await
}

pub async fn send(
    app: &App,
    chat: i64,
    kind: ChatKind,
    who: &Actor,
    text: &str,
    update_id: Option<i64>,
) -> Response {
    let msg = Incoming {
        chat_id: chat,
        chat_kind: kind,
        actor: who.clone(),
        text,
        origin: Origin {
            source: if update_id.is_some() { "telegram" } else { "test" },
            update_id,
        },
        via_button: false,
    };
    app.handle(msg)
        .await
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .unwrap_or_else(|| panic!("{text}: not a command"))
}

/// Sends and requires the command to be accepted; returns everything said, public and private.
pub async fn ok(app: &App, chat: i64, who: &Actor, text: &str) -> String {
    let r = say(app, chat, who, text).await;
    assert_eq!(
        r.status,
        Status::Accepted,
        "{} {text}: {}",
        who.name,
        all_text(&r)
    );
    all_text(&r)
}

/// Sends and requires a refusal; returns the reply.
pub async fn refused(app: &App, chat: i64, who: &Actor, text: &str) -> String {
    let r = say(app, chat, who, text).await;
    assert_eq!(r.status, Status::Refused, "{} {text}: {}", who.name, all_text(&r));
    all_text(&r)
}

pub fn all_text(r: &Response) -> String {
    r.replies
        .iter()
        .map(|reply| match &reply.to {
            Dest::Chat => reply.text.clone(),
            Dest::Player { name, .. } => format!("[to {name}] {}", reply.text),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub async fn scalar_i64(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub async fn latest(app: &App, chat: i64) -> Game {
    app.store()
        .latest_game(chat)
        .await
        .unwrap()
        .expect("a game in the chat")
}

/// Every player not yet ready types /ready, which ends the current phase; returns what was said.
pub async fn everyone_ready(app: &App, chat: i64) -> String {
    let g = latest(app, chat).await;
    let mut said = String::new();
    for p in g.players.iter().filter(|p| !p.ready) {
        said.push_str(&ok(app, chat, &actor(p.id, &p.name), "/ready").await);
        said.push('\n');
    }
    said
}

/// Drives the open game to its end: every phase ends with everyone /ready (the chair of the
/// seed's version forced phases alone; now that needs a majority).
pub async fn finish(app: &App, chat: i64, chair: &Actor) -> String {
    let mut said = String::new();
    if latest(app, chat).await.phase == bot::game::Phase::Lobby {
        said.push_str(&ok(app, chat, chair, "/begin_round").await);
    }
    for _ in 0..100 {
        if latest(app, chat).await.is_finished() {
            return said;
        }
        said.push_str(&everyone_ready(app, chat).await);
    }
    panic!("the game did not finish");
}

/// A binary of another workspace package (`scripts/test` builds the whole workspace first).
pub fn workspace_binary(name: &str) -> PathBuf {
    // The test runs from <target>/debug/deps/<test>-<hash>.
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|deps| deps.parent()).unwrap().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace, as scripts/test does)",
        path.display()
    );
    path
}
