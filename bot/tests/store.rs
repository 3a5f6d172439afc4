//! Persistence against a real PostgreSQL: one transaction per command writes the state, the
//! players, the audit row, the snapshot and the outbox events together; bad input changes
//! nothing; a redelivered Telegram update emits nothing twice; transient errors are retried.

mod common;

use bot::app::{ChatKind, Status};
use bot::game::{self, Command, Phase};
use bot::store::Origin;
use common::*;
use serde_json::Value;

const CHAT: i64 = -1001;

/// Row counts of every table a command may write, to prove a refusal wrote nothing.
async fn footprint(pool: &sqlx::PgPool) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in [
        "games",
        "players",
        "game_audit",
        "game_snapshots",
        "outbox_events",
    ] {
        counts.push(scalar_i64(pool, &format!("SELECT count(*) FROM {table}")).await);
    }
    let state: Option<Value> = sqlx::query_scalar("SELECT state FROM games ORDER BY created_at DESC LIMIT 1")
        .fetch_optional(pool)
        .await
        .unwrap();
    counts.push(state.map_or(0, |s| s.to_string().len() as i64));
    counts
}

#[tokio::test]
async fn a_command_writes_state_players_audit_snapshot_and_its_events_together() {
    let (db, app) = app().await;
    let (alice, bob) = (actor(1, "Alice"), actor(2, "Bob"));
    ok(&app, CHAT, &alice, "/startgame 2").await;
    ok(&app, CHAT, &bob, "/joingame").await;
    let before = latest(&app, CHAT).await;
    let said = ok(&app, CHAT, &alice, "/begin_round").await;
    assert!(said.contains("Round 1 of 2"), "{said}");

    // The stored row and its projection agree with the engine run on the previous state.
    let expected = game::apply(Some(&before), &alice, Command::BeginRound).unwrap();
    let (phase, round, version, state): (String, i32, i32, Value) =
        sqlx::query_as("SELECT phase, round, version, state FROM games WHERE chat_id = $1")
            .bind(CHAT)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((phase.as_str(), round, version), ("world_arena", 1, 3));
    assert_eq!(
        serde_json::from_value::<game::Game>(state).unwrap(),
        expected.state
    );
    let coins: Vec<(i64, i64, bool)> =
        sqlx::query_as("SELECT player_id, coins, is_chair FROM players ORDER BY seat")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let want: Vec<(i64, i64, bool)> = expected
        .state
        .players
        .iter()
        .map(|p| (p.id, p.coins, p.id == 1))
        .collect();
    assert_eq!(coins, want);

    // Audit: who, what, and the outcome summary.
    let (actor_id, command, outcome): (i64, Value, Value) =
        sqlx::query_as("SELECT actor_id, command, outcome FROM game_audit WHERE seq = 3")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(actor_id, 1);
    assert_eq!(command, serde_json::json!({"type": "begin_round"}));
    assert_eq!(outcome["phase_before"], "lobby");
    assert_eq!(outcome["phase_after"], "world_arena");
    let types: Vec<&str> = expected.events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(outcome["events"], serde_json::json!(types));

    // Every event of the command is in the outbox under the engine's key.
    for e in &expected.events {
        let (t, aggregate, payload): (String, String, Value) = sqlx::query_as(
            "SELECT event_type, aggregate_id, payload FROM outbox_events WHERE idempotency_key = $1",
        )
        .bind(&e.idempotency_key)
        .fetch_one(&db.pool)
        .await
        .unwrap_or_else(|_| panic!("{} missing", e.idempotency_key));
        assert_eq!(
            (t.as_str(), aggregate.as_str(), &payload),
            (e.event_type.as_str(), e.aggregate_id.as_str(), &e.payload)
        );
    }
    // Snapshots: at creation and at this phase change.
    let snaps: Vec<(i32, String, String)> =
        sqlx::query_as("SELECT seq, phase, reason FROM game_snapshots ORDER BY seq")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        snaps,
        [
            (1, "lobby".into(), "created".into()),
            (3, "world_arena".into(), "phase".into())
        ]
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_reply_and_changes_nothing() {
    let (db, app) = app().await;
    let (alice, bob, mallory) = (actor(1, "Alice"), actor(2, "Bob"), actor(66, "Mallory"));
    let empty = footprint(&db.pool).await;
    assert_eq!(
        refused(&app, CHAT, &alice, "/joingame").await,
        "No game in this chat. Start one with /startgame."
    );
    assert_eq!(
        refused(&app, CHAT, &alice, "/status").await,
        "No game in this chat. Start one with /startgame."
    );
    assert_eq!(footprint(&db.pool).await, empty);

    ok(&app, CHAT, &alice, "/startgame").await;
    ok(&app, CHAT, &bob, "/joingame").await;
    let lobby = footprint(&db.pool).await;
    let cases = [
        (
            &alice,
            "/startgame",
            "A game is already open in this chat (phase: lobby). The chair can /endgame it.",
        ),
        (&bob, "/begin_round", "Only the chair can do that."),
        (&mallory, "/ready", "You are not in this game."),
        (
            &alice,
            "/ready",
            "Nothing to be ready for in the lobby: the chair starts the game with /begin_round.",
        ),
        (
            &alice,
            "/give @bob 10",
            "Coins can only be given in the negotiations phase; now: lobby",
        ),
        (
            &alice,
            "/give @bob ten",
            "“ten” is not an amount: use a whole number, like 20.",
        ),
        (&alice, "/give @bob -3", "The amount must be positive; got -3."),
        (&alice, "/give @bob", "Usage: /give @player N, e.g. /give @bob 20"),
        (
            &alice,
            "/bid 5 gold",
            "Unknown currency “gold”: bid coins or influence.",
        ),
        (&alice, "/fly", "Unknown command /fly. /help lists the commands."),
        (
            &alice,
            "/orders",
            "Orders can only be given in the orders phase; now: lobby",
        ),
        (
            &alice,
            "/startgame lots",
            "Rounds must be a whole number from 1 to 14; got lots.",
        ),
    ];
    for (who, text, reply) in cases {
        assert_eq!(refused(&app, CHAT, who, text).await, reply, "{text}");
    }
    assert_eq!(footprint(&db.pool).await, lobby);

    ok(&app, CHAT, &alice, "/begin_round").await;
    everyone_ready(&app, CHAT).await;
    let negotiations = footprint(&db.pool).await;
    assert_eq!(
        refused(&app, CHAT, &alice, "/give @zed 5").await,
        "No player “@zed” in this game."
    );
    assert_eq!(
        refused(&app, CHAT, &alice, "/give @alice 5").await,
        "You cannot target yourself."
    );
    // A 4000-character argument comes back cut to 64 characters, never in full.
    let long = "q".repeat(4000);
    for text in [
        format!("/give @{long} 5"),
        format!("/give @bob {long}"),
        format!("/{long}"),
        format!("/orders {long}"),
    ] {
        let reply = refused(&app, CHAT, &alice, &text).await;
        assert!(
            reply.chars().count() < 240,
            "{} chars: {reply}",
            reply.chars().count()
        );
        assert!(reply.contains(&format!("{}…", "q".repeat(60))), "{reply}");
    }
    assert!(
        refused(&app, CHAT, &alice, "/give @bob 100000")
            .await
            .starts_with("Not enough coins")
    );
    assert_eq!(footprint(&db.pool).await, negotiations);

    // Game commands need a group; a private chat gets a pointer instead.
    let r = send(&app, 1, ChatKind::Private, &alice, "/ready", None).await;
    assert_eq!(r.status, Status::Refused);
    assert!(all_text(&r).contains("group"), "{}", all_text(&r));
    let r = send(&app, 1, ChatKind::Private, &alice, "/start", None).await;
    assert_eq!(r.status, Status::Answered);
    assert_eq!(footprint(&db.pool).await, negotiations);
    // Plain chat is not for the bot at all.
    let plain = bot::app::Incoming {
        chat_id: CHAT,
        chat_kind: ChatKind::Group,
        actor: alice.clone(),
        text: "good game everyone",
        origin: Origin {
            source: "test",
            update_id: None,
        },
        via_button: false,
    };
    assert!(app.handle(plain).await.unwrap().is_none());
}

#[tokio::test]
async fn a_redelivered_update_changes_and_emits_nothing() {
    let (db, app) = app().await;
    let (alice, bob) = (actor(1, "Alice"), actor(2, "Bob"));
    ok(&app, CHAT, &alice, "/startgame").await;
    ok(&app, CHAT, &bob, "/joingame").await;
    ok(&app, CHAT, &alice, "/begin_round").await;
    everyone_ready(&app, CHAT).await;
    let coins = |g: &game::Game| g.players.iter().map(|p| p.coins).collect::<Vec<_>>();
    let before = coins(&latest(&app, CHAT).await);

    let first = send(&app, CHAT, ChatKind::Group, &alice, "/give @bob 10", Some(500)).await;
    assert_eq!(first.status, Status::Accepted);
    let events = scalar_i64(&db.pool, "SELECT count(*) FROM outbox_events").await;
    let audit = scalar_i64(&db.pool, "SELECT count(*) FROM game_audit").await;
    for _ in 0..3 {
        let again = send(&app, CHAT, ChatKind::Group, &alice, "/give @bob 10", Some(500)).await;
        assert_eq!(again.status, Status::Duplicate);
        assert!(again.replies.is_empty());
    }
    // The same text as a new update is a new, legitimate transfer.
    let second = send(&app, CHAT, ChatKind::Group, &alice, "/give @bob 10", Some(501)).await;
    assert_eq!(second.status, Status::Accepted);
    let after = coins(&latest(&app, CHAT).await);
    assert_eq!(after, [before[0] - 20, before[1] + 20]);
    assert_eq!(
        scalar_i64(&db.pool, "SELECT count(*) FROM outbox_events").await,
        events + 1
    );
    assert_eq!(
        scalar_i64(&db.pool, "SELECT count(*) FROM game_audit").await,
        audit + 1
    );

    // A refused update is remembered too: redelivered later, it is not re-judged.
    let r = send(&app, CHAT, ChatKind::Group, &bob, "/orders invest", Some(502)).await;
    assert_eq!(r.status, Status::Refused);
    everyone_ready(&app, CHAT).await;
    let r = send(&app, CHAT, ChatKind::Group, &bob, "/orders invest", Some(502)).await;
    assert_eq!(r.status, Status::Duplicate);
    let (accepted, refusal): (bool, Option<String>) =
        sqlx::query_as("SELECT accepted, refusal FROM processed_updates WHERE update_id = 502")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(!accepted);
    assert!(refusal.unwrap().contains("orders phase"));
    assert_eq!(latest(&app, CHAT).await.orders.len(), 0);
}

#[tokio::test]
async fn handled_updates_are_forgotten_after_the_redelivery_window() {
    let (db, app) = app().await;
    sqlx::query(
        "INSERT INTO processed_updates (update_id, chat_id, accepted, processed_at)
         VALUES (1, $1, true, now() - interval '3 days'), (2, $1, true, now() - interval '1 hour')",
    )
    .bind(CHAT)
    .execute(&db.pool)
    .await
    .unwrap();
    let forgotten = app
        .store()
        .forget_updates_older_than(std::time::Duration::from_secs(48 * 3600))
        .await
        .unwrap();
    assert_eq!(forgotten, 1);
    assert_eq!(
        scalar_i64(&db.pool, "SELECT max(update_id) FROM processed_updates").await,
        2
    );
    assert_eq!(
        scalar_i64(&db.pool, "SELECT count(*) FROM processed_updates").await,
        1
    );
}

#[tokio::test]
async fn only_one_game_opens_when_a_chat_starts_many_at_once() {
    let (db, app) = app().await;
    let tasks: Vec<_> = (1..=8)
        .map(|id| {
            let app = app.clone();
            tokio::spawn(async move { say(&app, CHAT, &actor(id, "P"), "/startgame").await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == Status::Accepted).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == Status::Refused).count(), 7);
    assert_eq!(scalar_i64(&db.pool, "SELECT count(*) FROM games").await, 1);
    assert_eq!(
        scalar_i64(
            &db.pool,
            "SELECT count(*) FROM outbox_events WHERE event_type = 'game.created'"
        )
        .await,
        1
    );
    // The partial unique index holds even for writers that skip the lock.
    let dup = sqlx::query(
        "INSERT INTO games (id, chat_id, phase, round, chair_id, seed, version, state)
         VALUES (gen_random_uuid(), $1, 'lobby', 0, 1, 0, 1, '{}')",
    )
    .bind(CHAT)
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert!(dup.to_string().contains("games_one_open_per_chat"), "{dup}");

    // Once finished, the chat may open the next game.
    let chair = latest(&app, CHAT).await.chair;
    ok(&app, CHAT, &actor(chair, "P"), "/endgame").await;
    ok(&app, CHAT, &actor(3, "P"), "/startgame").await;
    assert_eq!(latest(&app, CHAT).await.phase, Phase::Lobby);
    assert_eq!(scalar_i64(&db.pool, "SELECT count(*) FROM games").await, 2);
}

#[tokio::test]
async fn a_serialization_failure_is_retried_and_applied_once() {
    let (db, app) = app().await;
    let (alice, bob) = (actor(1, "Alice"), actor(2, "Bob"));
    ok(&app, CHAT, &alice, "/startgame").await;
    // The next two audit inserts fail as a serialization failure would; the third succeeds. The
    // attempts are counted by a sequence, which a rollback does not undo.
    sqlx::raw_sql(
        "CREATE TABLE fail_budget (n int); INSERT INTO fail_budget VALUES (2);
         CREATE SEQUENCE attempts;
         CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF nextval('attempts') <= (SELECT n FROM fail_budget) THEN
             RAISE EXCEPTION 'injected' USING ERRCODE = '40001';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER flaky BEFORE INSERT ON game_audit FOR EACH ROW EXECUTE FUNCTION flaky();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let r = say(&app, CHAT, &bob, "/joingame").await;
    assert_eq!(r.status, Status::Accepted, "{}", all_text(&r));
    assert_eq!(scalar_i64(&db.pool, "SELECT last_value FROM attempts").await, 3);
    assert_eq!(scalar_i64(&db.pool, "SELECT count(*) FROM game_audit").await, 2);
    assert_eq!(
        scalar_i64(
            &db.pool,
            "SELECT count(*) FROM outbox_events WHERE event_type = 'player.joined'"
        )
        .await,
        2
    );
    assert_eq!(latest(&app, CHAT).await.players.len(), 2);

    // A permanent failure is not retried forever: it surfaces as an error, nothing written.
    sqlx::query("UPDATE fail_budget SET n = 1000")
        .execute(&db.pool)
        .await
        .unwrap();
    let err = app
        .store()
        .execute(
            CHAT,
            &actor(3, "Carol"),
            &Command::JoinGame,
            Origin {
                source: "test",
                update_id: None,
            },
        )
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(latest(&app, CHAT).await.players.len(), 2);
}
