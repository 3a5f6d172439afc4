//! Events Kafka can never take (poison pills): bounded handling, parking, republish.

use std::time::Duration;

use outbox::testkit::wait_until;

use crate::common::*;
use crate::report::case;

/// An event larger than the topic's limit is marked failed, its aggregate parked (later events
/// of it too), other aggregates flow; `republish` after raising the limit delivers in order.
#[tokio::test(flavor = "multi_thread")]
async fn oversize_event_parks_its_aggregate() {
    case("oversize-parks-aggregate", async {
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
        Ok(format!(
            "1 event over max.message.bytes: failed with attempts 1, 2 later events of its aggregate parked, other aggregate sent; republish refused until the limit was raised, then re-sent 3 in order; {} rows delivered",
            rows.len()
        ))
    })
    .await;
}

fn republish(f: &Fixture) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_relay-cdc"))
        .args(["republish", "--database-url", &f.db.url])
        .args(["--kafka-bootstrap-servers", &f.kafka, "--kafka-topic", &f.topic])
        .output()
        .unwrap()
}
