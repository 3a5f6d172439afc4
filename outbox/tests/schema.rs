//! The schema contract, against a real PostgreSQL started by scripts/services.

use outbox::testkit::TestDb;
use sqlx::Row;

use outbox::testkit::SEED_STEP4_INSERT;

/// The seed's read-only checks (steps 2, 4, 5, 6 and its game section), verbatim.
const SEED_SELECTS: &[&str] = &[
    "SELECT tablename FROM pg_tables WHERE schemaname='public' ORDER BY 1;",
    "SELECT table_name FROM information_schema.views WHERE table_schema='public' ORDER BY 1;",
    "SELECT id, status, created_at, idempotency_key FROM outbox_events ORDER BY created_at DESC LIMIT 5;",
    "SELECT id, status, publish_attempts, last_error, published_at FROM outbox_events ORDER BY created_at DESC LIMIT 1;",
    "SELECT event_id, event_type, topic, partition, kafka_offset, consumed_at FROM consumed_events ORDER BY consumed_at DESC NULLS LAST LIMIT 10;",
    "SELECT id, event_type, status, published_at, idempotency_key
FROM outbox_events
ORDER BY created_at DESC
LIMIT 20;",
    "SELECT event_id, event_type, kafka_offset, created_at
FROM consumed_events
ORDER BY created_at DESC
LIMIT 20;",
];

#[tokio::test]
async fn server_runs_with_logical_wal_and_our_postgres_conf() {
    let db = TestDb::new().await.unwrap();
    let wal_level: String = sqlx::query_scalar("SHOW wal_level")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(wal_level, "logical");
    let keep: String = sqlx::query_scalar("SHOW max_slot_wal_keep_size")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_ne!(
        keep, "-1",
        "max_slot_wal_keep_size must bound the WAL a slot can hold"
    );
    let enc: String = sqlx::query_scalar("SHOW password_encryption")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(enc, "scram-sha-256");
}

#[tokio::test]
async fn seed_sql_runs_verbatim_against_the_migrated_schema() {
    let db = TestDb::new().await.unwrap();
    let done = sqlx::raw_sql(SEED_STEP4_INSERT).execute(&db.pool).await.unwrap();
    assert_eq!(done.rows_affected(), 1, "INSERT 0 1");

    // Rows written by a consumer, so the step-6 SELECT returns what the seed expects to see.
    sqlx::query(
        "INSERT INTO consumed_events (event_id, event_type, topic, partition, kafka_offset)
         SELECT id, event_type, 'game-events', 0, 0 FROM outbox_events",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    for sql in SEED_SELECTS {
        sqlx::raw_sql(sql)
            .fetch_all(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    let row = sqlx::query("SELECT status, publish_attempts, last_error, published_at IS NULL AS unpublished, idempotency_key, payload FROM outbox_events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("status"), "new");
    assert_eq!(row.get::<i32, _>("publish_attempts"), 0);
    assert!(row.get::<Option<String>, _>("last_error").is_none());
    assert!(row.get::<bool, _>("unpublished"));
    assert!(row.get::<String, _>("idempotency_key").starts_with("demo-"));
    assert_eq!(
        row.get::<serde_json::Value, _>("payload")["chat_id"],
        -5056821738i64
    );

    let step6 = sqlx::raw_sql(SEED_SELECTS[4]).fetch_all(&db.pool).await.unwrap();
    assert_eq!(step6.len(), 1);
    assert_eq!(step6[0].get::<String, _>("topic"), "game-events");
    assert_eq!(step6[0].get::<String, _>("event_type"), "game.finished");

    let tables: Vec<String> = sqlx::raw_sql(SEED_SELECTS[0])
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.contains(&"outbox_events".to_string()) && tables.contains(&"consumed_events".to_string()));
}

#[tokio::test]
async fn schema_rejects_bad_rows_with_named_constraints() {
    let db = TestDb::new().await.unwrap();
    let err = sqlx::query(
        "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, status) VALUES ('x', 'y', 'z', 'done')",
    )
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("outbox_events_status_check"), "{err}");

    let insert = "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, idempotency_key) VALUES ('x', 'y', 'z', 'k1')";
    sqlx::query(insert).execute(&db.pool).await.unwrap();
    let err = sqlx::query(insert).execute(&db.pool).await.unwrap_err();
    assert!(
        err.to_string().contains("outbox_events_idempotency_key_key"),
        "{err}"
    );
}

#[tokio::test]
async fn operator_views_report_pending_and_counts() {
    let db = TestDb::new().await.unwrap();
    for status in ["new", "new", "sent", "failed"] {
        sqlx::query("INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, status, created_at) VALUES ('e', 'a', '1', $1, now() - interval '1 hour')")
            .bind(status)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_pending")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(pending, 3);
    let counts: Vec<(String, i64)> = sqlx::query_as("SELECT status, events FROM outbox_status_counts")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        counts,
        [
            ("failed".into(), 1),
            ("new".into(), 2),
            ("processing".into(), 0),
            ("sent".into(), 1)
        ]
    );
    let age_secs: f64 =
        sqlx::query_scalar("SELECT extract(epoch FROM oldest_age)::float8 FROM outbox_oldest_pending")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(age_secs >= 3600.0, "oldest pending age {age_secs}");
    sqlx::query("INSERT INTO consumed_events (event_id, event_type, topic, partition, kafka_offset, result) VALUES (gen_random_uuid(), 'e', 'game-events', 0, 1, 'dlq')")
        .execute(&db.pool)
        .await
        .unwrap();
    let results: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT topic, result, events FROM consumer_results")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(results, [("game-events".into(), "dlq".into(), 1)]);
}

#[tokio::test]
async fn publication_streams_outbox_inserts_only() {
    let db = TestDb::new().await.unwrap();
    let (ins, upd, del, trunc): (bool, bool, bool, bool) = sqlx::query_as(
        "SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = 'outbox_pub'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((ins, upd, del, trunc), (true, false, false, false));
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_publication_tables WHERE pubname = 'outbox_pub'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(tables, ["outbox_events"]);
}

/// Marking rows sent must be a HOT update: no index covers the updated columns and pages keep
/// free space (fillfactor). Measured through the server's own statistics.
#[tokio::test]
async fn marking_rows_sent_is_a_hot_update() {
    let db = TestDb::new().await.unwrap();
    sqlx::query(
        "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload, idempotency_key)
         SELECT 'game.finished', 'game', (i % 10)::text, jsonb_build_object('i', i, 'pad', repeat('x', 150)), 'k' || i FROM generate_series(1, 2000) i",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM outbox_events")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE outbox_events SET status = 'sent', published_at = now() WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&db.pool)
        .await
        .unwrap();
    // Statistics reach the cumulative stats system at transaction end; force a flush snapshot.
    let (upd, hot): (i64, i64) = loop {
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&db.pool)
            .await
            .unwrap();
        let r: (i64, i64) = sqlx::query_as(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'outbox_events'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if r.0 >= 2000 {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(upd, 2000);
    assert!(
        hot as f64 >= 0.95 * upd as f64,
        "only {hot} of {upd} updates were HOT"
    );
}

#[tokio::test]
async fn migrating_twice_is_a_no_op() {
    let db = TestDb::new().await.unwrap();
    for owner in outbox::migrate::ALL {
        let applied = outbox::migrate::run(owner, &db.url).await.unwrap();
        assert!(
            applied.is_empty(),
            "{}: second run applied {applied:?}",
            owner.name
        );
        let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", owner.table))
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(total as usize, owner.migrator.iter().count());
    }
}
