//! Exactly-once effects: duplicates, replays and rebalances change nothing already applied.

use std::time::Duration;

use outbox::testkit::{self, TestDb};
use serde_json::json;
use uuid::Uuid;

use crate::common::*;

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn the_same_event_delivered_twice_is_applied_once() {
    let db = TestDb::new().await.unwrap();
    let topic = testkit::create_topic("dup", 3).await.unwrap();
    // E twice in one burst (the second copy may share E's batch), F once now and again once
    // F is committed (the second copy meets F's consumed_events row).
    let e = game_finished("game-e", &[("1001", "Ann"), ("p2", "Bob")]);
    let f = game_finished("game-f", &[("p2", "Bob"), ("1001", "Ann")]);
    kcat_produce(&topic, &[record(&e), record(&e), record(&f)]).unwrap();

    let c = Running::start(config(&db.url, &topic, "dup")).await.unwrap();
    c.wait_handled(3, T).await.unwrap();
    kcat_produce(&topic, &[record(&f)]).unwrap();
    c.wait_handled(4, T).await.unwrap();
    let totals = c.metrics.totals();
    c.stop().await;

    assert_eq!((totals.ok, totals.duplicate, totals.dlq), (2, 2, 0), "{totals:?}");
    // Each event's row points at its first delivery.
    let written = testkit::kcat_read_all(&topic).unwrap();
    assert_eq!(written.len(), 4, "four deliveries on Kafka");
    for ev in [&e, &f] {
        let json = String::from_utf8(ev.to_json()).unwrap();
        let first = written
            .iter()
            .filter(|r| r.value == json)
            .min_by_key(|r| r.offset)
            .unwrap();
        let rows: Vec<(i32, i64, String)> =
            sqlx::query_as("SELECT partition, kafka_offset, result FROM consumed_events WHERE event_id = $1")
                .bind(ev.id)
                .fetch_all(&db.pool)
                .await
                .unwrap();
        assert_eq!(rows, [(first.partition, first.offset, "ok".to_string())]);
    }
    assert_eq!(count(&db.pool, "SELECT count(*) FROM consumed_events").await, 2);
    assert_eq!(
        leaderboard(&db.pool).await,
        [("1001".to_string(), 2, 1), ("p2".to_string(), 2, 1)]
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM leaderboard_games").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_event_counts_a_game_unknown_types_are_skipped_and_ops_endpoints_answer() {
    let db = TestDb::new().await.unwrap();
    let topic = testkit::create_topic("seed", 1).await.unwrap();
    // The seed's demo event: game_id and chat_id only.
    let seed = envelope(
        "game.finished",
        "11111111-1111-1111-1111-111111111111",
        json!({"game_id": "11111111-1111-1111-1111-111111111111", "chat_id": -5056821738i64}),
    );
    let unknown = envelope("player.joined", "g1", json!({"player_id": 5}));
    kcat_produce(&topic, &[record(&seed), record(&unknown)]).unwrap();

    let c = Running::start(config(&db.url, &topic, "seed")).await.unwrap();
    c.wait_handled(2, T).await.unwrap();

    let rows: Vec<(Uuid, String, String, i64, bool)> = sqlx::query_as(
        "SELECT event_id, event_type, result, kafka_offset, created_at = $1 FROM consumed_events ORDER BY kafka_offset",
    )
    .bind(seed.created_at)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (seed.id, "game.finished".into(), "ok".into(), 0, true),
            (unknown.id, "player.joined".into(), "skipped".into(), 1, false)
        ]
    );
    let game: (i64, Option<String>, i32, Uuid) =
        sqlx::query_as("SELECT chat_id, winner_id, players, event_id FROM leaderboard_games")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(game, (-5056821738, None, 0, seed.id));
    assert!(leaderboard(&db.pool).await.is_empty());

    let (status, body) = http_get(c.metrics_addr, "/healthz").await.unwrap();
    assert_eq!((status, body.trim()), (200, "ok"));
    assert_eq!(http_get(c.metrics_addr, "/readyz").await.unwrap().0, 200);
    let (status, body) = http_get(c.metrics_addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    for line in [
        "outbox_consumer_messages_total{result=\"ok\"} 1",
        "outbox_consumer_messages_total{result=\"skipped\"} 1",
        "outbox_consumer_messages_total{result=\"duplicate\"} 0",
        "outbox_consumer_processing_seconds_count 2",
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line:?} in:\n{body}");
    }
    // The lag comes from librdkafka's statistics, every 5 s.
    let lag = format!("outbox_consumer_lag_messages{{partition=\"0\",topic=\"{topic}\"}} 0");
    let addr = c.metrics_addr;
    testkit::wait_until(Duration::from_secs(20), "lag 0 in /metrics", || {
        let lag = lag.clone();
        async move { Ok(http_get(addr, "/metrics").await?.1.lines().any(|l| l == lag)) }
    })
    .await
    .unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_with_a_new_group_changes_nothing() {
    let db = TestDb::new().await.unwrap();
    let topic = testkit::create_topic("replay", 3).await.unwrap();
    let w = Workload::new(1500, 10, 7);
    kcat_produce(&topic, &w.records).unwrap();
    let n = w.records.len() as u64;

    let first = Running::start(config(&db.url, &topic, "first")).await.unwrap();
    first.wait_handled(n, T).await.unwrap();
    first.stop().await;
    assert_ground_truth(&db.pool, &w).await;
    let snapshot = |pool: sqlx::PgPool| async move {
        let rows: Vec<(Uuid, i64, String, String)> = sqlx::query_as(
            "SELECT event_id, kafka_offset, result, consumed_at::text FROM consumed_events ORDER BY event_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let players: Vec<(String, i32, i32, String)> = sqlx::query_as(
            "SELECT player_id, games_played, wins, updated_at::text FROM leaderboard_players ORDER BY player_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        (rows, players)
    };
    let before = snapshot(db.pool.clone()).await;

    // The seed's recipe: a new consumer group re-reads the topic from the beginning.
    let replay = Running::start(config(&db.url, &topic, "replay-1")).await.unwrap();
    replay.wait_handled(n, T).await.unwrap();
    let totals = replay.metrics.totals();
    replay.stop().await;

    assert_eq!((totals.ok, totals.duplicate), (0, n), "{totals:?}");
    // Not even rewritten: consumed_at and updated_at are those of the first pass.
    assert_eq!(snapshot(db.pool.clone()).await, before);
    assert_ground_truth(&db.pool, &w).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebalance_mid_stream_applies_every_event_once() {
    let db = TestDb::new().await.unwrap();
    let topic = testkit::create_topic("rebalance", 4).await.unwrap();
    let w = Workload::new(6000, 7, 11);
    let mut cfg = config(&db.url, &topic, "shared");
    cfg.batch_size = 200;
    // The stream keeps arriving while consumers join and leave the group.
    let producer = kcat_trickle(&topic, w.records.clone(), 250, Duration::from_millis(150));

    let a = Running::start(cfg.clone()).await.unwrap();
    a.wait_handled(500, T).await.unwrap();
    let b = Running::start(cfg.clone()).await.unwrap();
    b.wait_handled(500, T).await.unwrap();
    // a leaves: its partitions are revoked and taken over by b.
    a.stop().await;
    let pool = db.pool.clone();
    let expected = w.ids.len() as i64;
    testkit::wait_until(Duration::from_secs(90), "every event consumed", || {
        let pool = pool.clone();
        async move { Ok(count(&pool, "SELECT count(*) FROM consumed_events").await >= expected) }
    })
    .await
    .unwrap();
    producer.await.unwrap();
    b.stop().await;
    assert_ground_truth(&db.pool, &w).await;
}
