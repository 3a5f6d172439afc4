//! relay-cdc under faults: idle WAL, dropped and lost slots, standby takeover, SIGTERM. (Kill -9,
//! outages and poison events are chaos cases: `tests/chaos`.) Services that a test stops are
//! private to it (`PrivateServices`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use outbox::testkit::{PrivateServices, wait_until};

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
    f.wait_slot_caught_up().await;
    let status = relay.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", relay.log_text());
    assert!(relay.log_text().contains("drained"));
}
