//! Snapshot replay: the state rebuilt from a game's first snapshot plus its audited commands
//! equals its final snapshot, because every accepted command is audited and the engine is pure.

mod common;

use bot::app::Status;
use bot::game::{self, Actor, Command, Game};
use bot::store::ReplayError;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const CHAT: i64 = -3003;

/// Plays a game of random commands (many refused) from four players, then finishes it.
async fn random_game(app: &bot::app::App, seed: u64) -> Vec<Actor> {
    let players: Vec<Actor> = ["Ann", "Ben", "Cid", "Dee"]
        .iter()
        .zip(11..)
        .map(|(n, id)| actor(id, n))
        .collect();
    ok(app, CHAT, &players[0], "/startgame 3").await;
    for p in &players[1..] {
        ok(app, CHAT, p, "/joingame").await;
    }
    ok(app, CHAT, &players[0], "/begin_round").await;
    let mut rng = StdRng::seed_from_u64(seed);
    let templates = [
        "/ready",
        "/bid {n}",
        "/bid {s} influence",
        "/give @{p} {n}",
        "/orders invest",
        "/orders sanctions @{p}",
        "/orders espionage @{p}",
        "/orders trade_pact @{p}",
        "/orders propaganda",
        "/orders clear",
        "/votum",
        "/vote yes",
        "/vote no",
        "/votum_result",
        "/status",
        "/next_phase",
    ];
    let mut accepted = 0;
    for _ in 0..250 {
        let who = &players[rng.random_range(0..players.len())];
        let target = players[rng.random_range(0..players.len())]
            .username
            .clone()
            .unwrap();
        let text = templates[rng.random_range(0..templates.len())]
            .replace("{n}", &rng.random_range(1..40).to_string())
            .replace("{s}", &rng.random_range(1..4).to_string())
            .replace("{p}", &target);
        if say(app, CHAT, who, &text).await.status == Status::Accepted {
            accepted += 1;
        }
        if latest(app, CHAT).await.is_finished() {
            break;
        }
    }
    assert!(
        accepted > 40,
        "the random game did something: {accepted} accepted"
    );
    let chair = latest(app, CHAT).await.chair;
    if !latest(app, CHAT).await.is_finished() {
        let chair = players.iter().find(|p| p.id == chair).unwrap();
        finish(app, CHAT, chair).await;
    }
    players
}

#[tokio::test]
async fn first_snapshot_plus_audited_commands_equals_the_final_snapshot() {
    let (db, app) = app().await;
    random_game(&app, 42).await;
    let game_id = latest(&app, CHAT).await.id;

    // Rebuilt here from the raw rows, independently of Store::replay.
    let snapshots: Vec<(i32, String, Value)> =
        sqlx::query_as("SELECT seq, reason, state FROM game_snapshots WHERE game_id = $1 ORDER BY seq")
            .bind(game_id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(
        snapshots.len() >= 10,
        "a snapshot per phase change: {}",
        snapshots.len()
    );
    let (first_seq, first_reason, first) = snapshots.first().unwrap().clone();
    let (last_seq, last_reason, last) = snapshots.last().unwrap().clone();
    assert_eq!((first_seq, first_reason.as_str()), (1, "created"));
    assert_eq!(last_reason, "finished");
    assert!(
        snapshots.iter().any(|s| s.1 == "resolve"),
        "resolves are snapshotted"
    );
    let audit: Vec<(i32, Value, Value)> =
        sqlx::query_as("SELECT seq, actor, command FROM game_audit WHERE game_id = $1 ORDER BY seq")
            .bind(game_id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(audit.len() as i32, last_seq, "one audit row per version");
    let mut state: Game = serde_json::from_value(first).unwrap();
    for (seq, actor, command) in audit.into_iter().filter(|a| a.0 > first_seq) {
        let actor: Actor = serde_json::from_value(actor).unwrap();
        let command: Command = serde_json::from_value(command).unwrap();
        state = game::apply(Some(&state), &actor, command)
            .unwrap_or_else(|r| panic!("command {seq} refused on replay: {r}"))
            .state;
    }
    let last: Game = serde_json::from_value(last).unwrap();
    assert_eq!(state, last);
    assert!(last.is_finished());
    assert_eq!(state, latest(&app, CHAT).await);

    // The store's own replay agrees and checks every snapshot on the way.
    let replay = app.store().replay(game_id).await.unwrap();
    assert_eq!(replay.state, last);
    assert_eq!(replay.snapshots_checked, snapshots.len() - 1);
}

#[tokio::test]
async fn a_tampered_audit_trail_does_not_replay() {
    let (db, app) = app().await;
    random_game(&app, 7).await;
    let game_id = latest(&app, CHAT).await.id;
    app.store().replay(game_id).await.unwrap();

    // Forge who joined second: the rebuilt game no longer matches its snapshots.
    sqlx::query(
        "UPDATE game_audit SET actor = jsonb_set(actor, '{name}', '\"Eve\"') WHERE game_id = $1 AND seq = 2",
    )
    .bind(game_id)
    .execute(&db.pool)
    .await
    .unwrap();
    let err = app.store().replay(game_id).await.unwrap_err();
    assert!(matches!(err, ReplayError::SnapshotDiffers { .. }), "{err}");

    // A missing command is a gap.
    sqlx::query("DELETE FROM game_audit WHERE game_id = $1 AND seq = 5")
        .bind(game_id)
        .execute(&db.pool)
        .await
        .unwrap();
    let err = app.store().replay(game_id).await.unwrap_err();
    assert!(matches!(err, ReplayError::Gap { .. }), "{err}");
}
