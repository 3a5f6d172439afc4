//! End to end with the real relay-cdc: N `game.finished` events inserted into the outbox reach
//! the leaderboard as exactly N games, through the WAL, Kafka and this consumer.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use outbox::testkit::{self, TestDb, unique_name};

use crate::common::{Running, config};

/// The relay binary of this workspace (built by `scripts/test`'s `cargo build --workspace`).
fn relay_binary() -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/relay-cdc");
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

/// A relay child process; dropping it kills it and drops its slot.
struct Relay {
    child: Child,
    db_url: String,
    slot: String,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        testkit::drop_slot(&self.db_url, &self.slot);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn n_finished_games_in_the_outbox_are_n_games_in_the_leaderboard() {
    const N: i64 = 300;
    let db = TestDb::new().await.unwrap();
    let topic = testkit::create_topic("e2e", 3).await.unwrap();
    let slot = unique_name("slot");
    let _relay = Relay {
        child: Command::new(relay_binary())
            .args(["run", "--database-url", &db.url, "--slot-name", &slot])
            .args([
                "--kafka-bootstrap-servers",
                &testkit::kafka_bootstrap(),
                "--kafka-topic",
                &topic,
            ])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        db_url: db.url.clone(),
        slot,
    };
    let consumer = Running::start(config(&db.url, &topic, &unique_name("e2e")))
        .await
        .unwrap();

    // N games in 30 transactions; every game has two players and a winner.
    sqlx::query(
        "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload, idempotency_key)
         SELECT 'game.finished', 'game', 'game-' || g,
                jsonb_build_object('game_id', 'game-' || g, 'chat_id', -100 - g % 7,
                  'standings', jsonb_build_array(
                     jsonb_build_object('player_id', 'p' || (g % 5), 'name', 'P' || (g % 5), 'coins', 200, 'rank', 1),
                     jsonb_build_object('player_id', 'p' || (g % 5 + 5), 'name', 'Q' || (g % 5), 'coins', 100, 'rank', 2)),
                  'winner_id', 'p' || (g % 5)),
                'game-' || g || ':game.finished'
           FROM generate_series($1::bigint, $2::bigint) g",
    )
    .bind(1i64)
    .bind(N / 2)
    .execute(&db.pool)
    .await
    .unwrap();
    for g in (N / 2 + 1..=N).step_by(10) {
        sqlx::query(
            "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload, idempotency_key)
             SELECT 'game.finished', 'game', 'game-' || g,
                    jsonb_build_object('game_id', 'game-' || g, 'chat_id', -100,
                      'standings', jsonb_build_array(
                         jsonb_build_object('player_id', 'p' || (g % 5), 'name', 'P' || (g % 5), 'coins', 200, 'rank', 1),
                         jsonb_build_object('player_id', 'p' || (g % 5 + 5), 'name', 'Q' || (g % 5), 'coins', 100, 'rank', 2)),
                      'winner_id', 'p' || (g % 5)),
                    'game-' || g || ':game.finished'
               FROM generate_series($1::bigint, $1::bigint + 9) g",
        )
        .bind(g)
        .execute(&db.pool)
        .await
        .unwrap();
    }

    consumer
        .wait_handled(N as u64, Duration::from_secs(120))
        .await
        .unwrap();
    let games: i64 = sqlx::query_scalar("SELECT count(*) FROM leaderboard_games")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(games, N);
    let (played, wins): (i64, i64) =
        sqlx::query_as("SELECT sum(games)::bigint, sum(wins)::bigint FROM leaderboard")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((played, wins), (2 * N, N), "two seats and one win per game");
    let consumed: i64 = sqlx::query_scalar("SELECT count(*) FROM consumed_events WHERE result = 'ok'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(consumed, N);
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_events WHERE status <> 'sent'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(unsent, 0);
    consumer.stop().await;
}
