//! Retention (`RELAY_RETAIN_SENT`) and the INSERT-then-DELETE pattern, against the real services.

mod common;

use std::time::{Duration, Instant};

use common::Fixture;
use outbox::testkit::wait_until;
use relay_cdc::retention::delete_batch;

/// Inserts `n` rows with `status` created `age_secs` ago (inserted as sent/failed, the relay
/// publishes nothing for them).
async fn old_rows(f: &Fixture, status: &str, age_secs: i64, n: i64) {
    sqlx::query(
        "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, status, created_at)
         SELECT 'old.event', 'game', 'old-' || s, $1, now() - make_interval(secs => $2)
           FROM generate_series(1, $3) s",
    )
    .bind(status)
    .bind(age_secs as f64)
    .bind(n)
    .execute(&f.db.pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_only_sent_rows_older_than_the_limit_in_batches() {
    let f = Fixture::new(1).await;
    old_rows(&f, "sent", 7200, 5).await;
    old_rows(&f, "sent", 60, 3).await; // younger than the limit
    old_rows(&f, "failed", 7200, 2).await;
    old_rows(&f, "new", 7200, 2).await;
    let hour = Duration::from_secs(3600);
    let (n, from) = delete_batch(&f.db.pool, hour, 2, None).await.unwrap();
    assert_eq!(n, 2);
    let (n, from) = delete_batch(&f.db.pool, hour, 2, from).await.unwrap();
    assert_eq!(n, 2);
    let (n, from) = delete_batch(&f.db.pool, hour, 2, from).await.unwrap();
    assert_eq!(n, 1);
    assert_eq!(delete_batch(&f.db.pool, hour, 2, from).await.unwrap().0, 0);
    assert_eq!(f.count("sent").await, 3);
    assert_eq!(f.count("failed").await, 2);
    assert_eq!(f.count("new").await, 2);

    // A row someone holds (the marker, `republish`) is skipped, not waited for.
    old_rows(&f, "sent", 7200, 1).await;
    let mut tx = f.db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM outbox_events WHERE aggregate_id = 'old-1' AND status = 'sent' AND created_at < now() - interval '1 hour' FOR UPDATE")
        .execute(&mut *tx)
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(delete_batch(&f.db.pool, hour, 10, None).await.unwrap().0, 0);
    assert!(started.elapsed() < Duration::from_secs(5));
    tx.rollback().await.unwrap();
    assert_eq!(delete_batch(&f.db.pool, hour, 10, None).await.unwrap().0, 1);
}

/// Only the leader deletes: a relay standing by leaves old sent rows alone; once it leads, it
/// deletes them and, later, the rows it published itself.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_deletes_and_published_rows_go_after_the_limit() {
    let f = Fixture::new(1).await;
    old_rows(&f, "sent", 7200, 50).await;
    let held = relay_cdc::leader::acquire(&f.db.url, &f.slot, Duration::from_millis(100))
        .await
        .unwrap();
    let relay = f.relay(&[
        "--retain-sent",
        "2s",
        "--retain-interval-secs",
        "1",
        "--retain-batch",
        "20",
    ]);
    wait_until(Duration::from_secs(30), "the relay stands by", || async {
        Ok(relay.log_text().contains("another relay leads this slot"))
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(f.count("sent").await, 50, "a standby must not delete");

    drop(held);
    wait_until(
        Duration::from_secs(60),
        "the leader deletes old sent rows",
        || async { Ok(f.count("sent").await == 0) },
    )
    .await
    .unwrap();

    f.insert("agg", 1, 10).await;
    f.wait_records(10).await;
    wait_until(
        Duration::from_secs(60),
        "published rows deleted after 2 s",
        || async {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_events")
                .fetch_one(&f.db.pool)
                .await?;
            Ok(left == 0)
        },
    )
    .await
    .unwrap();
    assert_eq!(f.kafka_ids().len(), 10);
    let addr = common::metrics_addr(&relay.log_text()).unwrap();
    let (_, body) = common::http_get(&addr, "/metrics").await;
    assert_eq!(
        common::metric(&body, "outbox_relay_rows_retention_deleted_total"),
        60.0
    );
}

/// Debezium's outbox users insert the event and delete it in the same transaction: the table
/// stays empty, the WAL still carries the insert. The relay publishes those events, and the
/// rows it cannot mark (there are none) do not hold up the events after them.
#[tokio::test(flavor = "multi_thread")]
async fn events_inserted_and_deleted_in_one_transaction_are_published() {
    let f = Fixture::new(1).await;
    let _relay = f.relay(&[]);
    // A first event proves the relay streams.
    f.insert("warm", 1, 1).await;
    f.wait_all_sent(Duration::from_secs(60)).await;

    let mut tx = f.db.pool.begin().await.unwrap();
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload)
         SELECT 'order.created', 'order', 'order-' || s, jsonb_build_object('n', s)
           FROM generate_series(1, 20) s RETURNING id",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    sqlx::query("DELETE FROM outbox_events WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let started = Instant::now();
    // An ordinary event right after.
    f.insert("after", 1, 1).await;
    f.wait_all_sent(Duration::from_secs(60)).await;
    let after = started.elapsed();
    let records = f.wait_records(22).await;
    let kafka: Vec<String> = records.iter().map(outbox::testkit::event_id).collect();
    for id in &ids {
        assert!(kafka.contains(&id.to_string()), "{id} not published");
    }
    assert_eq!(kafka.len(), 22, "each event once");
    // The next event is marked without waiting out the deleted rows.
    assert!(
        after < Duration::from_secs(5),
        "the event after the deleted ones took {after:?} to be marked sent"
    );
}
