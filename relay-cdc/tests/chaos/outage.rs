//! Kafka and PostgreSQL outages mid-stream (private instances: the shared ones are never stopped).

use std::time::Duration;

use outbox::testkit::PrivateServices;

use crate::common::*;
use crate::report::case;

/// Kafka down for 20 s while a writer inserts: every event delivered once the broker is back.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_down_20s_mid_stream() {
    case("kafka-down-20s", async {
        let svc = PrivateServices::new();
        svc.services("kafka-up");
        let f = Fixture::on(&outbox::testkit::database_url(), &svc.kafka_bootstrap(), 3, &[]).await;
        let relay = f.relay(&[]);
        let writer = spawn_writer(f.db.pool.clone(), 300, 20, 10, Duration::from_millis(100));
        tokio::time::sleep(Duration::from_secs(3)).await;
        svc.services("kafka-down");
        tokio::time::sleep(Duration::from_secs(20)).await;
        svc.services("kafka-up");
        writer.await?;
        f.wait_all_sent(Duration::from_secs(120)).await;
        let rows = f.row_ids().await;
        f.wait_records(rows.len()).await;
        let duplicates = assert_delivered(&f, &rows);
        drop(relay);
        Ok(format!("{} events: 0 lost, {duplicates} duplicates", rows.len()))
    })
    .await;
}

/// PostgreSQL stopped for 3 s and started again mid-run: nothing lost.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_restart_mid_stream() {
    case("postgres-restart", async {
        let svc = PrivateServices::new();
        svc.services("pg-up");
        let f = Fixture::on(&svc.database_url(), &outbox::testkit::kafka_bootstrap(), 3, &[]).await;
        let relay = f.relay(&[]);
        let writer = spawn_writer(f.db.pool.clone(), 200, 20, 10, Duration::from_millis(20));
        tokio::time::sleep(Duration::from_secs(2)).await;
        svc.services("pg-down");
        tokio::time::sleep(Duration::from_secs(3)).await;
        svc.services("pg-up");
        writer.await?;
        f.wait_all_sent(Duration::from_secs(120)).await;
        let rows = f.row_ids().await;
        anyhow::ensure!(rows.len() == 4000, "{} rows in the outbox", rows.len());
        f.wait_records(rows.len()).await;
        let duplicates = assert_delivered(&f, &rows);
        drop(relay);
        Ok(format!("{} events: 0 lost, {duplicates} duplicates", rows.len()))
    })
    .await;
}
