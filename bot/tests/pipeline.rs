//! The loop the product closes: a game played through the bot's handler writes its events to the
//! outbox; the real relay-cdc streams them to Kafka; the real consumer turns `game.finished` into
//! the leaderboard; `/leaderboard` shows it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bot::app::Status;
use common::*;
use outbox::testkit::{TestDb, create_topic, kafka_bootstrap, unique_name, wait_until};

const CHAT: i64 = -5005;

/// The relay and the consumer as child processes; dropping kills them, then drops the
/// replication slot (a slot left behind pins WAL on the shared server).
struct Pipeline {
    children: Vec<(&'static str, Child, std::path::PathBuf)>,
    db_url: String,
    slot: String,
}

impl Pipeline {
    fn start(db: &TestDb, topic: &str) -> Self {
        let slot = unique_name("botslot");
        let mut p = Self {
            children: Vec::new(),
            db_url: db.url.clone(),
            slot: slot.clone(),
        };
        let group = unique_name("botgroup");
        p.spawn(
            "relay-cdc",
            &[
                "run",
                "--database-url",
                &db.url,
                "--slot-name",
                &slot,
                "--kafka-bootstrap-servers",
                &kafka_bootstrap(),
                "--kafka-topic",
                topic,
                "--metrics-addr",
                "127.0.0.1:0",
            ],
        );
        p.spawn(
            "consumer",
            &[
                "run",
                "--database-url",
                &db.url,
                "--kafka-bootstrap-servers",
                &kafka_bootstrap(),
                "--kafka-topic",
                topic,
                "--kafka-consumer-group",
                &group,
                "--metrics-addr",
                "127.0.0.1:0",
            ],
        );
        p
    }

    fn spawn(&mut self, name: &'static str, args: &[&str]) {
        let log = std::env::temp_dir().join(format!("{}.log", unique_name(name)));
        let child = Command::new(workspace_binary(name))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.children.push((name, child, log));
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for (name, child, log) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!(
                    "--- {name} log ---\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
        outbox::testkit::drop_slot(&self.db_url, &self.slot);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_game_shows_up_in_the_leaderboard() {
    let (db, app) = app().await;
    let topic = create_topic("bot-events", 1).await.unwrap();
    let pipeline = Pipeline::start(&db, &topic);

    let (ann, ben, cid) = (actor(201, "Ann"), actor(202, "Ben"), actor(203, "Cid"));
    ok(&app, CHAT, &ann, "/startgame 1").await;
    ok(&app, CHAT, &ben, "/joingame").await;
    ok(&app, CHAT, &cid, "/joingame").await;
    ok(&app, CHAT, &ann, "/begin_round").await;
    ok(&app, CHAT, &ben, "/bid 30").await;
    everyone_ready(&app, CHAT).await;
    ok(&app, CHAT, &ben, "/give @cid 25").await;
    everyone_ready(&app, CHAT).await;
    ok(&app, CHAT, &cid, "/orders invest").await;
    let end = finish(&app, CHAT, &ann).await;
    assert!(end.contains("🏁 Game over after 1 round"), "{end}");
    let game = latest(&app, CHAT).await;
    let winner = &game.standings[0];

    // Every event reaches Kafka (the relay marks it sent) and the consumer applies the finish.
    let pool = db.pool.clone();
    wait_until(Duration::from_secs(90), "the relay to send every event", || {
        let pool = pool.clone();
        async move {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_events WHERE status <> 'sent'")
                .fetch_one(&pool)
                .await?;
            Ok(left == 0)
        }
    })
    .await
    .unwrap();
    let pool = db.pool.clone();
    wait_until(Duration::from_secs(90), "the consumer to count the game", || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM leaderboard")
                .fetch_one(&pool)
                .await?;
            Ok(n == 3)
        }
    })
    .await
    .unwrap();
    assert_eq!(
        scalar_i64(
            &db.pool,
            "SELECT count(*) FROM consumed_events WHERE event_type = 'game.finished'"
        )
        .await,
        1
    );

    let rows = app.store().leaderboard(10).await.unwrap();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row.games, 1, "{row:?}");
        let won = row.player_id == winner.player_id.to_string();
        assert_eq!(row.wins, i32::from(won), "{row:?}");
    }
    assert_eq!(rows[0].player_id, winner.player_id.to_string());

    let r = say(&app, CHAT, &cid, "/leaderboard").await;
    assert_eq!(r.status, Status::Answered);
    let text = all_text(&r);
    assert!(text.starts_with("🏆 Leaderboard (all chats):"), "{text}");
    assert!(
        text.contains(&format!("1. {} — 1 win, 1 game", winner.name)),
        "{text}"
    );
    for p in &game.standings[1..] {
        assert!(text.contains(&format!("{} — 0 wins, 1 game", p.name)), "{text}");
    }
    drop(pipeline);
}
