//! Kafka and PostgreSQL outages mid-stream (private instances: the shared ones are never stopped).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::ensure;
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

/// A private broker restarted 10 times while a writer inserts. Each time: `/readyz` turns false
/// during the outage, and the next event is acknowledged within seconds of the broker being
/// ready again. At the end every row is in Kafka (at least once), `sent`, the slot confirmed.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_restarted_ten_times_mid_stream() {
    case("kafka-restart-x10", async {
        const RESUME_LIMIT: Duration = Duration::from_secs(30);
        let svc = PrivateServices::new();
        start_broker(&svc, None).await?;
        let f = Fixture::on(&outbox::testkit::database_url(), &svc.kafka_bootstrap(), 3, &[]).await;
        let relay = f.relay(&[]);
        let addr = wait_metrics_addr(&relay).await?;
        let addr = addr.as_str();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = spawn_writer_until(f.db.pool.clone(), 5, 10, Duration::from_millis(50), stop.clone());
        let mut resumes = Vec::new();
        let mut not_ready_after = Vec::new();
        for i in 0..10 {
            // Flowing before the outage.
            let before = published(addr).await;
            wait_for(Duration::from_secs(60), || async { published(addr).await > before })
                .await
                .map_err(|_| anyhow::anyhow!("restart {i}: nothing published before the outage"))?;
            svc.services("kafka-down");
            let down = Instant::now();
            let went_unready = wait_for(Duration::from_secs(15), || async { !ready(addr).await }).await;
            ensure!(
                went_unready.is_ok(),
                "restart {i}: /readyz stayed 200 for 15 s with the broker down"
            );
            not_ready_after.push(down.elapsed());
            tokio::time::sleep(Duration::from_secs(3)).await;
            ensure!(!ready(addr).await, "restart {i}: /readyz 200 while the broker is down");
            let up = start_broker(&svc, Some(&f.topic)).await?;
            let base = published(addr).await;
            wait_for(RESUME_LIMIT, || async { published(addr).await > base })
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "restart {i}: nothing published {RESUME_LIMIT:?} after the broker was back (log {})",
                        relay.log.display()
                    )
                })?;
            resumes.push(up.elapsed());
            wait_for(RESUME_LIMIT, || async { ready(addr).await })
                .await
                .map_err(|_| anyhow::anyhow!("restart {i}: /readyz still false {RESUME_LIMIT:?} after the broker was back"))?;
        }
        stop.store(true, Ordering::Relaxed);
        let txns = writer.await?;
        f.wait_all_sent(Duration::from_secs(180)).await;
        f.wait_slot_caught_up().await;
        let rows = f.row_ids().await;
        ensure!(rows.len() as i64 == txns * 5, "{} rows for {txns} transactions", rows.len());
        f.wait_records(rows.len()).await;
        let duplicates = assert_delivered(&f, &rows);
        drop(relay);
        let secs = |v: &[Duration]| {
            v.iter()
                .map(|d| format!("{:.1}", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        Ok(format!(
            "resume after broker ready (s): {}; /readyz false after broker stop (s): {}; {} events, 0 lost, {duplicates} duplicates, all sent, slot confirmed",
            secs(&resumes),
            secs(&not_ready_after),
            rows.len()
        ))
    })
    .await;
}

/// Starts the private broker and returns when it answers metadata requests and leads every
/// partition of `topic` (the moment the broker is ready). `scripts/services` gives up after
/// 60 s; a loaded machine may need more.
async fn start_broker(svc: &PrivateServices, topic: Option<&str>) -> anyhow::Result<Instant> {
    use rdkafka::producer::{BaseProducer, Producer};
    if let Err(e) = svc.try_services("kafka-up") {
        eprintln!("{e}; still waiting for the broker");
    }
    let client: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", svc.kafka_bootstrap())
        .create()?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let probe =
            tokio::task::block_in_place(|| client.client().fetch_metadata(topic, Duration::from_secs(2)));
        if let Ok(m) = probe
            && !m.brokers().is_empty()
            && m.topics().iter().all(|t| {
                t.error().is_none()
                    && !t.partitions().is_empty()
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            })
        {
            return Ok(Instant::now());
        }
        ensure!(
            Instant::now() < deadline,
            "the private broker did not come back within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The relay's /metrics address, once its log names it.
async fn wait_metrics_addr(relay: &Relay) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(addr) = metrics_addr(&relay.log_text()) {
            return Ok(addr);
        }
        ensure!(
            Instant::now() < deadline,
            "the relay never said where it serves /metrics"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn published(addr: &str) -> f64 {
    metric(
        &http_get(addr, "/metrics").await.1,
        "outbox_relay_events_published_total",
    )
}

async fn ready(addr: &str) -> bool {
    http_get(addr, "/readyz").await.0 == 200
}

/// Polls `cond` every 100 ms; `Err` after `timeout`.
async fn wait_for<F, Fut>(timeout: Duration, mut cond: F) -> Result<(), ()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
