//! Messages that cannot be handled go to `<topic>.dlq` with headers saying why and where from;
//! `consumer redrive` sends them back.

use std::time::Duration;

use consumer::message::derived_id;
use outbox::testkit::{self, KcatRecord, TestDb};
use serde_json::json;
use uuid::Uuid;

use crate::common::*;

const T: Duration = Duration::from_secs(60);

/// A `dlq.*` header of a record read by kcat (`%h` prints `name=value` pairs joined by commas;
/// error texts may contain commas, so a value runs up to the next `,dlq.`).
fn dlq_header(r: &KcatRecord, name: &str) -> Option<String> {
    let start = r.headers.find(&format!("{name}="))? + name.len() + 1;
    let rest = &r.headers[start..];
    Some(rest[..rest.find(",dlq.").unwrap_or(rest.len())].to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_messages_land_in_the_dlq_with_headers_and_the_consumer_keeps_going() {
    let db = TestDb::new().await.unwrap();
    let topic = testkit::create_topic("poison", 1).await.unwrap();
    // The database rejects games of chat 4242 on every attempt (a handler's permanent error).
    sqlx::query("ALTER TABLE leaderboard_games ADD CONSTRAINT no_chat_4242 CHECK (chat_id <> 4242)")
        .execute(&db.pool)
        .await
        .unwrap();
    let invalid_payload = envelope(
        "game.finished",
        "g-bad",
        json!({"game_id": "g-bad", "chat_id": 1, "standings": "oops"}),
    );
    let nul_name = game_finished("g-nul", &[("p1", "Ann\u{0}")]);
    let rejected = envelope(
        "game.finished",
        "g-4242",
        json!({"game_id": "g-4242", "chat_id": 4242}),
    );
    let good = game_finished("g-good", &[("p1", "Ann"), ("p2", "Bob")]);
    let records: Vec<Record> = vec![
        ("k".into(), "not json".into()),
        (
            "k".into(),
            json!({"event_type": "game.finished", "payload": {}}).to_string(),
        ),
        record(&invalid_payload),
        record(&nul_name),
        record(&rejected),
        record(&good),
    ];
    kcat_produce(&topic, &records).unwrap();

    let c = Running::start(config(&db.url, &topic, "poison")).await.unwrap();
    c.wait_handled(6, T).await.unwrap();
    let totals = c.metrics.totals();
    c.stop().await;
    // max_attempts is 3: two retries of the rejected event; a retry cannot fix the others.
    assert_eq!((totals.ok, totals.dlq, totals.retried), (1, 5, 2), "{totals:?}");

    let dlq = testkit::kcat_read_all(&format!("{topic}.dlq")).unwrap();
    assert_eq!(dlq.len(), 5, "{dlq:#?}");
    let expected = [
        (0, "1", "value is not JSON"),
        (1, "1", "missing field `id`"),
        (2, "1", "invalid game.finished payload: invalid type"),
        (
            3,
            "1",
            "invalid game.finished payload: name contains a NUL character",
        ),
        (4, "3", "violates check constraint \"no_chat_4242\""),
    ];
    for (r, (offset, attempts, error)) in dlq.iter().zip(expected) {
        assert_eq!(
            r.value, records[offset as usize].1,
            "the original value, unchanged"
        );
        assert_eq!(r.key, records[offset as usize].0);
        assert_eq!(dlq_header(r, "dlq.source.topic").as_deref(), Some(topic.as_str()));
        assert_eq!(dlq_header(r, "dlq.source.partition").as_deref(), Some("0"));
        assert_eq!(dlq_header(r, "dlq.source.offset"), Some(offset.to_string()));
        assert_eq!(dlq_header(r, "dlq.attempts").as_deref(), Some(attempts), "{r:?}");
        let e = dlq_header(r, "dlq.error").unwrap();
        assert!(e.contains(error), "offset {offset}: {e}");
        // The consumed_events row says dlq, under the id the header names.
        let id: Uuid = dlq_header(r, "dlq.event.id").unwrap().parse().unwrap();
        let row: (i64, String, Option<String>) =
            sqlx::query_as("SELECT kafka_offset, result, error FROM consumed_events WHERE event_id = $1")
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!((row.0, row.1.as_str()), (offset, "dlq"));
        assert!(row.2.unwrap().contains(error));
    }
    // Without a usable id, the id is derived from where the message was.
    assert_eq!(
        dlq_header(&dlq[1], "dlq.event.id"),
        Some(derived_id(&topic, 0, 1).to_string())
    );
    assert_eq!(
        dlq_header(&dlq[2], "dlq.event.id"),
        Some(invalid_payload.id.to_string())
    );
    assert_eq!(dlq_header(&dlq[3], "dlq.event.id"), Some(nul_name.id.to_string()));
    assert_eq!(dlq_header(&dlq[4], "dlq.event.id"), Some(rejected.id.to_string()));
    // The good event behind the poison was applied, the rejected one left nothing behind.
    assert_eq!(
        leaderboard(&db.pool).await,
        [("p1".to_string(), 1, 1), ("p2".to_string(), 1, 0)]
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM leaderboard_games").await, 1);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM consumed_events WHERE result = 'ok'"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redrive_sends_dead_letters_back_and_they_apply_once_the_cause_is_fixed() {
    let db = TestDb::new().await.unwrap();
    let topic = testkit::create_topic("redrive", 1).await.unwrap();
    // A constraint the blocked event violates, standing in for a bug fixed later.
    sqlx::query("ALTER TABLE leaderboard_games ADD CONSTRAINT test_block CHECK (chat_id <> 4242)")
        .execute(&db.pool)
        .await
        .unwrap();
    let blocked = envelope(
        "game.finished",
        "g-blocked",
        json!({"game_id": "g-blocked", "chat_id": 4242, "winner_id": 7,
               "standings": [{"player_id": 7, "name": "Eve"}]}),
    );
    let fine = game_finished("g-fine", &[("7", "Eve")]);
    kcat_produce(&topic, &[record(&blocked), record(&fine)]).unwrap();

    let mut cfg = config(&db.url, &topic, "redrive");
    cfg.max_attempts = 2;
    let c = Running::start(cfg).await.unwrap();
    c.wait_handled(2, T).await.unwrap();
    let dlq = testkit::kcat_read_all(&format!("{topic}.dlq")).unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq_header(&dlq[0], "dlq.attempts").as_deref(), Some("2"));
    assert!(dlq_header(&dlq[0], "dlq.error").unwrap().contains("test_block"));
    assert_eq!(leaderboard(&db.pool).await, [("7".to_string(), 1, 1)]);

    sqlx::query("ALTER TABLE leaderboard_games DROP CONSTRAINT test_block")
        .execute(&db.pool)
        .await
        .unwrap();
    let args = kafka_args(&topic, "redrive");
    assert_eq!(consumer::dlq::redrive(&args).await.unwrap(), 1);

    let main = testkit::kcat_read_all(&topic).unwrap();
    assert_eq!(main.len(), 3);
    assert_eq!(main[2].value, record(&blocked).1);
    assert_eq!(main[2].key, "g-blocked");
    assert!(
        !main[2].headers.contains("dlq."),
        "dlq headers stripped: {}",
        main[2].headers
    );

    let pool = db.pool.clone();
    testkit::wait_until(T, "the redriven event applied", || {
        let pool = pool.clone();
        async move {
            Ok(count(
                &pool,
                "SELECT count(*) FROM leaderboard_games WHERE game_id = 'g-blocked'",
            )
            .await
                == 1)
        }
    })
    .await
    .unwrap();
    let row: (i64, String, Option<String>) =
        sqlx::query_as("SELECT kafka_offset, result, error FROM consumed_events WHERE event_id = $1")
            .bind(blocked.id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(row, (2, "ok".to_string(), None));
    assert_eq!(leaderboard(&db.pool).await, [("7".to_string(), 2, 2)]);
    // Already redriven: a second run sends nothing.
    assert_eq!(consumer::dlq::redrive(&args).await.unwrap(), 0);
    c.stop().await;
}
