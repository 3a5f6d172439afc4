//! 8 players, each sending /ready and /orders 100 times at once from their own task and their
//! own database connection: the row lock keeps the state consistent, every phase advances
//! exactly once per round, no event is emitted twice, and the audit matches the accepted actions.

mod common;

use std::collections::HashMap;

use bot::app::{App, ChatKind, Status};
use bot::game::{Game, Phase};
use bot::store::Store;
use common::*;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;

const CHAT: i64 = -2002;
const PLAYERS: i64 = 8;
const TIMES: i64 = 100;
const ORDERS: [&str; 6] = [
    "/orders invest",
    "/orders security",
    "/orders sanctions @p1",
    "/orders diplomacy",
    "/orders espionage @p2",
    "/orders stimulus",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_players_racing_ready_and_orders_keep_the_game_consistent() {
    let (db, app) = app().await;
    let players: Vec<_> = (1..=PLAYERS).map(|id| actor(id, &format!("P{id}"))).collect();
    ok(&app, CHAT, &players[0], "/startgame 5").await;
    for p in &players[1..] {
        ok(&app, CHAT, p, "/joingame").await;
    }
    ok(&app, CHAT, &players[0], "/begin_round").await;
    let setup_audit = scalar_i64(&db.pool, "SELECT count(*) FROM game_audit").await;

    let mut tasks = Vec::new();
    for (i, p) in players.iter().cloned().enumerate() {
        // Each player has its own connection.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&db.url)
            .await
            .unwrap();
        let app = App::new(Store::new(pool));
        tasks.push(tokio::spawn(async move {
            let mut accepted: HashMap<&'static str, i64> = HashMap::new();
            for n in 0..TIMES {
                let update = (i as i64 + 1) * 10_000 + n * 2;
                let order = ORDERS[(n as usize + i) % ORDERS.len()];
                for (kind, text, update) in [("ready", "/ready", update), ("submit_order", order, update + 1)]
                {
                    let r = send(&app, CHAT, ChatKind::Group, &p, text, Some(update)).await;
                    match r.status {
                        Status::Accepted => *accepted.entry(kind).or_default() += 1,
                        Status::Refused => {}
                        other => panic!("{text}: {other:?}"),
                    }
                }
            }
            (p.id, accepted)
        }));
    }
    let mut accepted: HashMap<(i64, &str), i64> = HashMap::new();
    for t in tasks {
        let (id, counts) = t.await.unwrap();
        for (kind, n) in counts {
            accepted.insert((id, kind), n);
        }
    }
    let total_accepted: i64 = accepted.values().sum();
    assert!(
        accepted
            .iter()
            .filter(|((_, k), _)| *k == "ready")
            .all(|(_, n)| *n >= 3),
        "every player got through at least the first round's phases: {accepted:?}"
    );

    // Audit rows are exactly the accepted actions, per player and kind.
    assert_eq!(
        scalar_i64(&db.pool, "SELECT count(*) FROM game_audit").await,
        setup_audit + total_accepted
    );
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT actor_id, command->>'type', count(*) FROM game_audit WHERE seq > $1 GROUP BY 1, 2",
    )
    .bind(setup_audit as i32)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let audited: HashMap<(i64, String), i64> = rows.into_iter().map(|(a, k, n)| ((a, k), n)).collect();
    for ((id, kind), n) in &accepted {
        assert_eq!(
            audited.get(&(*id, kind.to_string())),
            Some(n),
            "player {id} {kind}"
        );
    }
    // Every update was recorded once, accepted or refused.
    assert_eq!(
        scalar_i64(&db.pool, "SELECT count(*) FROM processed_updates").await,
        PLAYERS * TIMES * 2
    );
    assert_eq!(
        scalar_i64(&db.pool, "SELECT count(*) FROM processed_updates WHERE accepted").await,
        total_accepted
    );

    // The phase changes: never twice for the same (round, phase), and complete for each round.
    let changes: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT (payload->>'round')::bigint, payload->>'to', count(*) FROM outbox_events
         WHERE event_type = 'phase.changed' GROUP BY 1, 2 ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(changes.iter().all(|c| c.2 == 1), "{changes:?}");
    let game: Game = latest(&app, CHAT).await;
    let full_rounds = if game.is_finished() {
        game.round
    } else {
        game.round - 1
    };
    assert!(full_rounds >= 1, "at least one round completed: {game:?}");
    for round in 1..=full_rounds as i64 {
        let mut phases: Vec<&str> = changes
            .iter()
            .filter(|c| c.0 == round)
            .map(|c| c.1.as_str())
            .collect();
        phases.sort();
        let mut want = vec![
            "event",
            "income",
            "negotiations",
            "orders",
            "resolve",
            "world_arena",
        ];
        if round == i64::from(game.round) && game.is_finished() {
            want.push("finished");
            want.sort();
        }
        assert_eq!(phases, want, "round {round}");
    }
    // One ready per player per phase, at most two decrees per player per round.
    assert_eq!(
        scalar_i64(
            &db.pool,
            "SELECT count(*) FROM (SELECT 1 FROM outbox_events WHERE event_type = 'player.ready'
             GROUP BY payload->>'round', payload->>'phase', payload->>'player_id' HAVING count(*) > 1) d"
        )
        .await,
        0
    );
    assert_eq!(
        scalar_i64(
            &db.pool,
            "SELECT count(*) FROM (SELECT 1 FROM outbox_events WHERE event_type = 'orders.submitted'
             GROUP BY payload->>'round', payload->>'player_id' HAVING count(*) > 2) d"
        )
        .await,
        0
    );
    // Nothing was swallowed as a duplicate key: the outbox holds exactly the audited events.
    assert_eq!(
        scalar_i64(&db.pool, "SELECT count(*) FROM outbox_events").await,
        scalar_i64(
            &db.pool,
            "SELECT sum(jsonb_array_length(outcome->'events'))::bigint FROM game_audit"
        )
        .await
    );

    // The state is whole: the players projection agrees, and a replay lands on it.
    ok_to_finish(&app, &players[0]).await;
    let game = latest(&app, CHAT).await;
    assert_eq!(game.phase, Phase::Finished);
    let projection: Vec<(i64, i64, i64)> =
        sqlx::query_as("SELECT player_id, coins, stability FROM players ORDER BY seat")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let state: Vec<(i64, i64, i64)> = game
        .players
        .iter()
        .map(|p| (p.id, p.coins, p.stability))
        .collect();
    assert_eq!(projection, state);
    let replay = app
        .store()
        .replay(game.id)
        .await
        .expect("replay matches every snapshot");
    assert_eq!(replay.state, game);
    let finished: Value =
        sqlx::query_scalar("SELECT payload FROM outbox_events WHERE event_type = 'game.finished'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(finished["standings"].as_array().unwrap().len(), PLAYERS as usize);
}

/// The racing players may have stopped short of the end; the chair finishes the game.
async fn ok_to_finish(app: &App, chair: &bot::game::Actor) {
    if !latest(app, CHAT).await.is_finished() {
        finish(app, CHAT, chair).await;
    }
}
