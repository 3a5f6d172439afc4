//! relay-cdc end to end: real PostgreSQL, real Kafka, the real binary, kcat as the reader.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::Fixture;
use outbox::testkit::{SEED_STEP4_INSERT, wait_until};

/// id, event_type, aggregate_type, aggregate_id, payload, idempotency_key, attempts, published.
type StoredRow = (
    uuid::Uuid,
    String,
    String,
    String,
    serde_json::Value,
    Option<String>,
    i32,
    bool,
);

#[tokio::test(flavor = "multi_thread")]
async fn backlog_and_live_events_arrive_as_written() {
    let f = Fixture::new(3).await;
    // Backlog: written before the relay (and its slot) ever existed.
    f.insert("agg-backlog", 1, 3).await;
    sqlx::raw_sql(SEED_STEP4_INSERT)
        .execute(&f.db.pool)
        .await
        .unwrap();
    let relay = f.relay(&[]);
    f.wait_all_sent(Duration::from_secs(60)).await;

    // Live: rows, and an envelope emitted as a logical message (no table row).
    f.insert("agg-live", 1, 5).await;
    let msg_id = uuid::Uuid::new_v4();
    sqlx::query("SELECT pg_logical_emit_message(true, 'outbox', $1)")
        .bind(
            serde_json::json!({
                "id": msg_id, "event_type": "player.joined", "aggregate_type": "game",
                "aggregate_id": "agg-msg", "payload": {"player": "alice"},
                "created_at": "2026-11-26T10:00:00Z", "idempotency_key": "msg-1"
            })
            .to_string(),
        )
        .execute(&f.db.pool)
        .await
        .unwrap();
    // A rolled-back transaction publishes nothing.
    let mut tx = f.db.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, idempotency_key) VALUES ('x', 'game', 'agg-rollback', 'rb')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    f.wait_all_sent(Duration::from_secs(60)).await;

    let records = f.wait_records(10).await;
    assert_eq!(
        records.len(),
        10,
        "3 backlog + 1 seed + 5 live + 1 message, nothing else: {records:#?}"
    );

    // Every row arrives with its envelope, key and headers, exactly as stored.
    let rows: Vec<StoredRow> = sqlx::query_as(
        "SELECT id, event_type, aggregate_type, aggregate_id, payload, idempotency_key, publish_attempts, published_at IS NOT NULL FROM outbox_events",
    )
    .fetch_all(&f.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 9);
    let by_id: HashMap<String, &outbox::testkit::KcatRecord> = records
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.value).unwrap();
            (v["id"].as_str().unwrap().to_string(), r)
        })
        .collect();
    for (id, event_type, aggregate_type, aggregate_id, payload, key, attempts, published) in rows {
        let r = by_id
            .get(&id.to_string())
            .unwrap_or_else(|| panic!("row {id} not in Kafka"));
        let v: serde_json::Value = serde_json::from_str(&r.value).unwrap();
        assert_eq!(v["event_type"], event_type.as_str());
        assert_eq!(v["aggregate_type"], aggregate_type.as_str());
        assert_eq!(v["aggregate_id"], aggregate_id.as_str());
        assert_eq!(v["payload"], payload);
        assert_eq!(v["idempotency_key"].as_str(), key.as_deref());
        assert!(
            v["created_at"]
                .as_str()
                .unwrap()
                .parse::<chrono::DateTime<chrono::Utc>>()
                .is_ok()
        );
        assert_eq!(r.key, aggregate_id);
        assert!(r.headers.contains(&format!("id={id}")), "headers {}", r.headers);
        assert!(
            r.headers.contains(&format!("event_type={event_type}")),
            "headers {}",
            r.headers
        );
        assert!(r.headers.contains("aggregate_type=game"), "headers {}", r.headers);
        assert_eq!(attempts, 1);
        assert!(published);
    }
    let m = by_id
        .get(&msg_id.to_string())
        .expect("logical message event in Kafka");
    assert_eq!(m.key, "agg-msg");
    assert!(m.headers.contains("idempotency_key=msg-1"));
    assert!(!records.iter().any(|r| r.key == "agg-rollback"));

    // Idle: the slot is confirmed up to the end of the WAL that concerned it.
    wait_until(
        Duration::from_secs(30),
        "slot confirmed to the current WAL",
        || async {
            let (confirmed, _) = f.slot_position().await;
            let behind: i64 = sqlx::query_scalar("SELECT (pg_current_wal_lsn() - $1::text::pg_lsn)::bigint")
                .bind(confirmed)
                .fetch_one(&f.db.pool)
                .await?;
            Ok(behind < 1024 * 1024)
        },
    )
    .await
    .unwrap();
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn per_aggregate_order_holds_under_concurrent_writers() {
    let f = Fixture::new(4).await;
    let relay = f.relay(&[]);
    // 50 aggregates x 200 events, written by concurrent transactions of 10 events each.
    let mut tasks = Vec::new();
    for a in 0..50 {
        let pool = f.db.pool.clone();
        tasks.push(tokio::spawn(async move {
            for batch in 0..20 {
                sqlx::query(
                    "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload, idempotency_key)
                     SELECT 'test.event', 'game', $1, jsonb_build_object('seq', s), $1 || '-' || s
                       FROM generate_series($2::bigint, $2::bigint + 9) s",
                )
                .bind(format!("agg-{a}"))
                .bind(batch * 10)
                .execute(&pool)
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    f.wait_all_sent(Duration::from_secs(120)).await;
    let records = f.wait_records(10_000).await;
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut partitions: HashMap<String, HashSet<i32>> = HashMap::new();
    let mut ordered = records.clone();
    ordered.sort_by_key(|r| (r.partition, r.offset));
    for r in &ordered {
        let v: serde_json::Value = serde_json::from_str(&r.value).unwrap();
        let seq = v["payload"]["seq"].as_i64().unwrap();
        let prev = last.insert(r.key.clone(), seq);
        assert_eq!(prev.map_or(0, |p| p + 1), seq, "aggregate {} out of order", r.key);
        partitions.entry(r.key.clone()).or_default().insert(r.partition);
    }
    assert_eq!(last.len(), 50);
    assert!(last.values().all(|&s| s == 199));
    assert!(partitions.values().all(|p| p.len() == 1));
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_ten_thousand_event_transaction_is_delivered() {
    let f = Fixture::new(3).await;
    let relay = f.relay(&[]);
    f.insert("agg-big", 0, 10_000).await;
    f.wait_all_sent(Duration::from_secs(120)).await;
    f.wait_records(10_000).await;
    let ids: HashSet<String> = f.kafka_ids().into_iter().collect();
    assert_eq!(ids.len(), 10_000);
    drop(relay);
}
