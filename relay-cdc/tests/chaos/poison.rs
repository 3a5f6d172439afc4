//! Events Kafka can never take (poison pills): bounded handling, parking, republish, and
//! events whose failure PostgreSQL refuses to record as they are.

use std::time::{Duration, Instant};

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

/// id, status, last_error, idempotency_key length, payload->>'nul', aggregate_id.
type ParkedRow = (uuid::Uuid, String, String, Option<i32>, Option<String>, String);

/// The relay has started streaming (a first row went out and was marked).
async fn streaming(f: &Fixture) {
    f.insert("warm-up", 0, 1).await;
    f.wait_all_sent(Duration::from_secs(60)).await;
}

async fn emit_message(f: &Fixture, envelope: &serde_json::Value) {
    sqlx::query("SELECT pg_logical_emit_message(true, 'outbox', $1)")
        .bind(envelope.to_string())
        .execute(&f.db.pool)
        .await
        .unwrap();
}

async fn current_lsn(f: &Fixture) -> String {
    sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&f.db.pool)
        .await
        .unwrap()
}

/// Waits until the slot is confirmed at or past `lsn`.
async fn wait_confirmed_past(f: &Fixture, lsn: &str, timeout: Duration) {
    wait_until(timeout, "slot confirmed past the poison events", || async {
        let past: Option<bool> = sqlx::query_scalar(
            "SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&f.slot)
        .bind(lsn)
        .fetch_one(&f.db.pool)
        .await?;
        Ok(past == Some(true))
    })
    .await
    .unwrap();
}

/// A logical message too large for Kafka whose parked row PostgreSQL refuses as it is: its
/// payload holds "\u0000" (jsonb refuses it), or its idempotency key is 3000 characters (too long
/// for the unique index). Later rows are published and marked sent, the slot moves past both,
/// both are in outbox_events as `failed` with the reason, their aggregates parked; SIGTERM then
/// stops the relay at once.
#[tokio::test(flavor = "multi_thread")]
async fn unrecordable_message_events_are_recorded_another_way() {
    case("poison-unrecordable-park", async {
    let f = Fixture::new(1).await;
    let mut relay = f.relay(&[]);
    streaming(&f).await;

    let blob = "b".repeat(1_200_000);
    let nul_id = uuid::Uuid::new_v4();
    let key_id = uuid::Uuid::new_v4();
    // Incompressible: a repeated character would be compressed under the index's limit.
    let long_key: String = (0..94)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    let started = Instant::now();
    emit_message(
        &f,
        &serde_json::json!({
            "id": nul_id, "event_type": "x", "aggregate_type": "msg", "aggregate_id": "poison-nul",
            "payload": {"blob": blob, "nul": "\u{0}"}, "created_at": "2026-11-29T03:00:00Z"
        }),
    )
    .await;
    emit_message(
        &f,
        &serde_json::json!({
            "id": key_id, "event_type": "x", "aggregate_type": "msg", "aggregate_id": "poison-key",
            "payload": {"blob": blob}, "created_at": "2026-11-29T03:00:00Z", "idempotency_key": long_key
        }),
    )
    .await;
    f.insert("after", 0, 10).await;
    let lsn = current_lsn(&f).await;

    wait_until(Duration::from_secs(60), "the later rows marked sent", || async {
        let sent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox_events WHERE aggregate_id = 'after' AND status = 'sent'",
        )
        .fetch_one(&f.db.pool)
        .await?;
        Ok(sent == 10)
    })
    .await
    .unwrap();
    let rows_sent_after = started.elapsed();
    wait_confirmed_past(&f, &lsn, Duration::from_secs(30)).await;
    let confirmed_after = started.elapsed();

    let records = f.wait_records(11).await;
    let ids: Vec<String> = records.iter().map(outbox::testkit::event_id).collect();
    assert!(!ids.contains(&nul_id.to_string()) && !ids.contains(&key_id.to_string()));

    // The poison events are findable, with the reason.
    let parked: Vec<ParkedRow> = sqlx::query_as(
        "SELECT id, status, last_error, octet_length(idempotency_key), payload->>'nul', aggregate_id
           FROM outbox_events WHERE id = ANY($1) ORDER BY aggregate_id",
    )
    .bind(vec![nul_id, key_id])
    .fetch_all(&f.db.pool)
    .await
    .unwrap();
    assert_eq!(parked.len(), 2, "both poison events recorded: {parked:?}");
    for (id, status, error, _, _, _) in &parked {
        assert_eq!(status, "failed", "{id}");
        assert!(
            error.contains("Message size too large") || error.contains("too large"),
            "{error}"
        );
        assert!(
            error.contains("refused"),
            "the note says why it was changed: {error}"
        );
    }
    let (_, _, _, key_len, _, _) = &parked[0]; // poison-key
    assert_eq!(
        *key_len,
        Some(1000),
        "the idempotency key ({} chars) was cut",
        long_key.len()
    );
    let (_, _, _, _, nul, _) = &parked[1]; // poison-nul
    assert_eq!(
        nul.as_deref(),
        Some("\\u0000"),
        "the NUL was escaped, the payload kept"
    );
    let parked_aggregates: Vec<String> =
        sqlx::query_scalar("SELECT aggregate_id FROM outbox_parked_aggregates ORDER BY 1")
            .fetch_all(&f.db.pool)
            .await
            .unwrap();
    assert_eq!(parked_aggregates, ["poison-key", "poison-nul"]);

    let t = Instant::now();
    let status = relay.terminate();
    let stop = t.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(stop < Duration::from_secs(10), "SIGTERM took {stop:?}");
    let lines = relay.log_text().lines().count();
    Ok(format!(
        "2 logical messages of 1.2 MB whose park row PostgreSQL refuses (payload \\u0000, 3000-char key): later rows sent {:.1} s after them, slot confirmed past them at {:.1} s, both stored (NUL escaped, key cut to 1000 bytes) with the reason and parked; SIGTERM stopped in {:.2} s; {lines} log lines",
        rows_sent_after.as_secs_f64(),
        confirmed_after.as_secs_f64(),
        stop.as_secs_f64()
    ))
    })
    .await;
}
