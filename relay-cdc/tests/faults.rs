//! relay-cdc under faults: kill -9, Kafka and PostgreSQL outages, lost slots, oversize events,
//! standby takeover. Services that a test stops are private to it (`PrivateServices`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use outbox::testkit::{PrivateServices, wait_until};

async fn wait_slot_caught_up(f: &Fixture) {
    wait_until(Duration::from_secs(60), "slot confirmed to the end of the WAL", || async {
        let behind: Option<i64> = sqlx::query_scalar(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&f.slot)
        .fetch_one(&f.db.pool)
        .await?;
        Ok(behind.is_some_and(|b| b < 64 * 1024))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_ten_times_during_50k_events_loses_nothing() {
    let f = Fixture::new(4).await;
    let writer = spawn_writer(f.db.pool.clone(), 500, 100, 20, Duration::from_millis(5));
    let mut relay = f.relay(&[]);
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(400 + 150 * i)).await;
        relay.kill9();
        relay = f.relay(&[]);
    }
    writer.await.unwrap();
    f.wait_all_sent(Duration::from_secs(180)).await;
    wait_slot_caught_up(&f).await;
    let rows = f.row_ids().await;
    assert_eq!(rows.len(), 50_000);
    let records = f.wait_records(50_000).await.len();
    let duplicates = assert_delivered(&f, &rows);
    println!("kill -9 x10 over 50000 events: {records} records in Kafka, {duplicates} duplicates");
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_down_for_20_seconds_then_back_loses_nothing() {
    let svc = PrivateServices::new();
    svc.services("kafka-up");
    let f = Fixture::on(&outbox::testkit::database_url(), &svc.kafka_bootstrap(), 3, &[]).await;
    let relay = f.relay(&[]);
    let writer = spawn_writer(f.db.pool.clone(), 300, 20, 10, Duration::from_millis(100));
    tokio::time::sleep(Duration::from_secs(3)).await;
    svc.services("kafka-down");
    tokio::time::sleep(Duration::from_secs(20)).await;
    svc.services("kafka-up");
    writer.await.unwrap();
    f.wait_all_sent(Duration::from_secs(120)).await;
    let rows = f.row_ids().await;
    f.wait_records(rows.len()).await;
    let duplicates = assert_delivered(&f, &rows);
    println!("Kafka down 20 s: {} events, {duplicates} duplicates", rows.len());
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restart_mid_run_loses_nothing() {
    let svc = PrivateServices::new();
    svc.services("pg-up");
    let f = Fixture::on(&svc.database_url(), &outbox::testkit::kafka_bootstrap(), 3, &[]).await;
    let relay = f.relay(&[]);
    let writer = spawn_writer(f.db.pool.clone(), 200, 20, 10, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(2)).await;
    svc.services("pg-down");
    tokio::time::sleep(Duration::from_secs(3)).await;
    svc.services("pg-up");
    writer.await.unwrap();
    f.wait_all_sent(Duration::from_secs(120)).await;
    let rows = f.row_ids().await;
    assert_eq!(rows.len(), 4000);
    f.wait_records(rows.len()).await;
    let duplicates = assert_delivered(&f, &rows);
    println!(
        "PostgreSQL restarted: {} events, {duplicates} duplicates",
        rows.len()
    );
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_outbox_on_a_busy_database_pins_no_wal() {
    let f = Fixture::new(1).await;
    let relay = f.relay(&[]);
    f.insert("agg", 0, 1).await;
    f.wait_all_sent(Duration::from_secs(60)).await;
    sqlx::query("CREATE TABLE busy (id bigserial primary key, v text)")
        .execute(&f.db.pool)
        .await
        .unwrap();
    let restart_lsn = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&f.slot)
        .fetch_one(&f.db.pool)
        .await
        .unwrap()
    };
    let lsn_bytes = |s: &str| {
        let (hi, lo) = s.split_once('/').unwrap();
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
    };
    let before = lsn_bytes(&restart_lsn().await);
    // Write another table for 15 s: the outbox stays idle.
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        sqlx::query("INSERT INTO busy (v) SELECT repeat('y', 200) FROM generate_series(1, 500)")
            .execute(&f.db.pool)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sqlx::query("CHECKPOINT").execute(&f.db.pool).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after = before;
    while after <= before + 1024 * 1024 {
        assert!(
            Instant::now() < deadline,
            "restart_lsn stuck at {after} (was {before})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = lsn_bytes(&restart_lsn().await);
    }
    println!("idle outbox: restart_lsn advanced by {} bytes", after - before);
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn slot_dropped_while_the_relay_was_down_is_recreated_and_rescanned() {
    let f = Fixture::new(2).await;
    let mut relay = f.relay(&[]);
    f.insert("agg-1", 0, 10).await;
    f.wait_all_sent(Duration::from_secs(60)).await;
    relay.kill9();
    // Rows written while the relay is down, then the slot disappears (an operator, a failover).
    f.insert("agg-1", 10, 10).await;
    f.insert("agg-2", 0, 10).await;
    wait_until(Duration::from_secs(10), "slot inactive", || async {
        let active: bool = sqlx::query_scalar("SELECT active FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&f.slot)
            .fetch_one(&f.db.pool)
            .await?;
        Ok(!active)
    })
    .await
    .unwrap();
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(&f.slot)
        .execute(&f.db.pool)
        .await
        .unwrap();
    let relay = f.relay(&[]);
    f.wait_all_sent(Duration::from_secs(60)).await;
    f.insert("agg-2", 10, 10).await;
    f.wait_all_sent(Duration::from_secs(60)).await;
    let rows = f.row_ids().await;
    f.wait_records(rows.len()).await;
    let duplicates = assert_delivered(&f, &rows);
    assert_eq!(
        duplicates, 0,
        "rows already sent are not re-published by the rescan"
    );
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_slot_is_recreated_and_unsent_rows_rescanned() {
    let svc = PrivateServices::new();
    svc.services("pg-up");
    let f = Fixture::on(&svc.database_url(), &outbox::testkit::kafka_bootstrap(), 2, &[]).await;
    sqlx::query("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        .execute(&f.db.pool)
        .await
        .unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&f.db.pool)
        .await
        .unwrap();
    let mut relay = f.relay(&[]);
    f.insert("agg-1", 0, 10).await;
    f.wait_all_sent(Duration::from_secs(60)).await;
    relay.kill9();
    f.insert("agg-1", 10, 10).await;
    // Push the slot past max_slot_wal_keep_size: it loses WAL it needs.
    sqlx::query("CREATE TABLE filler (v text)")
        .execute(&f.db.pool)
        .await
        .unwrap();
    wait_until(Duration::from_secs(120), "slot wal_status = lost", || async {
        sqlx::query("INSERT INTO filler SELECT repeat('z', 1000) FROM generate_series(1, 20000)")
            .execute(&f.db.pool)
            .await?;
        sqlx::query("SELECT pg_switch_wal()").execute(&f.db.pool).await?;
        sqlx::query("CHECKPOINT").execute(&f.db.pool).await?;
        let status: Option<String> =
            sqlx::query_scalar("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1")
                .bind(&f.slot)
                .fetch_one(&f.db.pool)
                .await?;
        Ok(status.as_deref() == Some("lost"))
    })
    .await
    .unwrap();
    let relay = f.relay(&[]);
    f.wait_all_sent(Duration::from_secs(60)).await;
    let rows = f.row_ids().await;
    assert_eq!(rows.len(), 20);
    f.wait_records(rows.len()).await;
    assert_delivered(&f, &rows);
    assert!(
        relay.log_text().contains("wal_status = lost"),
        "the relay says why it recreated the slot"
    );
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_event_parks_its_aggregate_and_republish_delivers_in_order() {
    let kafka = outbox::testkit::kafka_bootstrap();
    let f = Fixture::on(
        &outbox::testkit::database_url(),
        &kafka,
        2,
        &[("max.message.bytes", "3000")],
    )
    .await;
    let relay = f.relay(&[]);
    let insert = |agg: &'static str, seq: i64, pad: usize| {
        let pool = f.db.pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload, idempotency_key)
                 VALUES ('test.event', 'game', $1, jsonb_build_object('seq', $2::bigint, 'pad', repeat('x', $3)), $1 || '-' || $2)",
            )
            .bind(agg)
            .bind(seq)
            .bind(pad as i32)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    insert("agg-a", 0, 10).await;
    insert("agg-a", 1, 5000).await; // larger than the topic allows
    insert("agg-a", 2, 10).await;
    insert("agg-b", 0, 10).await;
    insert("agg-b", 1, 10).await;
    wait_until(Duration::from_secs(60), "a failed, a parked, b sent", || async {
        let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_events WHERE status = 'failed'")
            .fetch_one(&f.db.pool)
            .await?;
        let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_events WHERE status = 'sent'")
            .fetch_one(&f.db.pool)
            .await?;
        Ok(failed == 2 && sent == 3)
    })
    .await
    .unwrap();
    let (attempts, error): (i32, String) = sqlx::query_as(
        "SELECT publish_attempts, last_error FROM outbox_events WHERE idempotency_key = 'agg-a-1'",
    )
    .fetch_one(&f.db.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    assert!(error.to_lowercase().contains("too large"), "last_error: {error}");
    let parked_error: String =
        sqlx::query_scalar("SELECT last_error FROM outbox_events WHERE idempotency_key = 'agg-a-2'")
            .fetch_one(&f.db.pool)
            .await
            .unwrap();
    assert!(parked_error.contains("parked"), "{parked_error}");
    // A later event of the parked aggregate is parked too; other aggregates flow.
    insert("agg-a", 3, 10).await;
    insert("agg-b", 2, 10).await;
    wait_until(Duration::from_secs(30), "a-3 parked, b-2 sent", || async {
        let s: Vec<String> = sqlx::query_scalar(
            "SELECT status FROM outbox_events WHERE idempotency_key IN ('agg-a-3', 'agg-b-2') ORDER BY idempotency_key",
        )
        .fetch_all(&f.db.pool)
        .await?;
        Ok(s == ["failed", "sent"])
    })
    .await
    .unwrap();

    // Fix the cause: raise the topic's limit. Then republish.
    let out = republish(&f);
    assert!(
        !out.status.success(),
        "republish must fail while the topic still refuses the event"
    );
    raise_topic_limit(&kafka, &f.topic, "100000").await;
    let out = republish(&f);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "republish: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("republished 3 events"), "{stdout}");
    // The aggregate flows again.
    insert("agg-a", 4, 10).await;
    f.wait_all_sent(Duration::from_secs(60)).await;
    let rows = f.row_ids().await;
    f.wait_records(rows.len()).await;
    assert_delivered(&f, &rows);
    drop(relay);
}

fn republish(f: &Fixture) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_relay-cdc"))
        .args(["republish", "--database-url", &f.db.url])
        .args(["--kafka-bootstrap-servers", &f.kafka, "--kafka-topic", &f.topic])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn standby_takes_over_when_the_leader_is_killed() {
    let f = Fixture::new(2).await;
    let mut a = f.relay(&[]);
    f.insert("agg", 0, 10).await;
    f.wait_all_sent(Duration::from_secs(60)).await;
    let mut b = f.relay(&[]);
    wait_until(Duration::from_secs(20), "b standing by", || async {
        Ok(b.log_text().contains("standing by"))
    })
    .await
    .unwrap();
    let writer = spawn_writer(f.db.pool.clone(), 100, 10, 5, Duration::from_millis(30));
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.kill9();
    let killed = Instant::now();
    wait_until(Duration::from_secs(20), "b leading", || async {
        Ok(b.log_text().contains("leading"))
    })
    .await
    .unwrap();
    let takeover = killed.elapsed();
    writer.await.unwrap();
    f.wait_all_sent(Duration::from_secs(60)).await;
    let rows = f.row_ids().await;
    f.wait_records(rows.len()).await;
    let duplicates = assert_delivered(&f, &rows);
    println!("standby took over {takeover:?} after kill -9; {duplicates} duplicates");
    assert!(takeover < Duration::from_secs(15));
    b.kill9();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_confirms_and_exits_zero() {
    let f = Fixture::new(2).await;
    let mut relay = f.relay(&[]);
    f.insert("agg", 0, 2000).await;
    f.wait_all_sent(Duration::from_secs(60)).await;
    wait_slot_caught_up(&f).await;
    let status = relay.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", relay.log_text());
    assert!(relay.log_text().contains("drained"));
}
