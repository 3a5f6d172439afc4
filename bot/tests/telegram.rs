//! `bot run` against a fake Bot API on 127.0.0.1: a 3-player game from /startgame to finished
//! through the real binary, with typed commands, inline buttons (menu, decrees, the votum), private
//! figures by direct message, a player who never started the bot, and a redelivered update.

#[path = "support/fake_bot_api.rs"]
mod fake_bot_api;

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::scalar_i64;
use fake_bot_api::{BOT_USERNAME, FakeBotApi, User};
use serde_json::Value;

const GROUP: i64 = -100_777;

struct BotProcess {
    child: Child,
    log: std::path::PathBuf,
}

impl BotProcess {
    fn start(fake: &FakeBotApi, database_url: &str) -> Self {
        let log = std::env::temp_dir().join(format!("{}.log", outbox::testkit::unique_name("bot")));
        let child = Command::new(env!("CARGO_BIN_EXE_bot"))
            .arg("run")
            .env("TELEGRAM_BOT_TOKEN", "123:TEST")
            .env("TELEGRAM_API_URL", fake.url())
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "info,bot=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// SIGTERM, then the exit status (within 15 s). Async: the fake API on this runtime must
    /// keep answering while the bot shuts down.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..150 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the bot did not stop within 15 s of SIGTERM");
    }
}

impl Drop for BotProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- bot log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// Sends a message and waits for a reply containing `expect` in `chat`.
async fn step(fake: &FakeBotApi, who: &User, chat: i64, text: &str, expect: &str) -> fake_bot_api::Call {
    let mark = fake.calls().len();
    fake.message(who, chat, text);
    fake.wait_text(mark, chat, expect).await
}

/// Presses a button and waits for the callback's answer; returns the notice shown.
async fn press(fake: &FakeBotApi, who: &User, message_id: i64, data: &str) -> String {
    let mark = fake.calls().len();
    let id = fake.press(who, GROUP, message_id, data);
    let i = fake
        .wait_for(mark, &format!("the answer to button {data}"), |c| {
            c.method == "answerCallbackQuery" && c.body["callback_query_id"] == format!("cb{id}")
        })
        .await;
    fake.calls()[i].body["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn with_button(call: &fake_bot_api::Call, data: &str) -> i64 {
    assert!(
        call.buttons().iter().any(|b| b == data),
        "no button {data} in {:?}",
        call.buttons()
    );
    call.message_id.unwrap()
}

#[tokio::test]
async fn a_three_player_game_through_the_telegram_adapter() {
    let db = outbox::testkit::TestDb::new().await.unwrap();
    let (alice, bob, carol) = (
        User {
            id: 101,
            name: "Alice",
        },
        User { id: 102, name: "Bob" },
        User {
            id: 103,
            name: "Carol",
        },
    );
    // Carol never opened a private chat with the bot.
    let fake = FakeBotApi::start(&[carol.id]).await;
    let mut bot = BotProcess::start(&fake, &db.url);
    fake.wait_for(0, "setMyCommands", |c| c.method == "setMyCommands")
        .await;

    // Private chat: alive; games belong in groups.
    step(
        &fake,
        &alice,
        alice.id,
        "/start",
        "Your private figures will arrive in this chat",
    )
    .await;
    step(&fake, &bob, bob.id, "/start", "NeMonopolia is alive").await;
    step(
        &fake,
        &alice,
        alice.id,
        "/startgame",
        "Games are played in group chats",
    )
    .await;

    // Lobby.
    step(
        &fake,
        &alice,
        GROUP,
        "/startgame 2",
        "A new World Council is open! Alice chairs it.",
    )
    .await;
    step(
        &fake,
        &bob,
        GROUP,
        "/joingame",
        "Bob joins as the head of Sudmark",
    )
    .await;
    step(
        &fake,
        &carol,
        GROUP,
        "/joingame@nemo_test_bot",
        "Carol joins as the head of Ostrava",
    )
    .await;
    step(
        &fake,
        &carol,
        GROUP,
        "/begin_round",
        "Only the chair can do that.",
    )
    .await;
    let menu = step(&fake, &alice, GROUP, "/menu", "🎛 Lobby: 3 player(s).").await;
    let menu_id = with_button(&menu, "/begin_round");
    assert_eq!(
        press(&fake, &bob, menu_id, "/begin_round").await,
        "Only the chair can do that."
    );
    let mark = fake.calls().len();
    assert_eq!(press(&fake, &alice, menu_id, "/begin_round").await, "✅ Done");
    fake.wait_text(mark, GROUP, "🔔 Round 1 of 2.").await;
    // Income figures go privately; Carol cannot be reached, so the group is told how to fix it.
    let income = fake.wait_text(mark, alice.id, "Round 1 income").await;
    assert!(income.text().contains("Nordavia:"), "{}", income.text());
    fake.wait_text(mark, bob.id, "Round 1 income").await;
    fake.wait_text(
        mark,
        GROUP,
        &format!("I cannot message Carol privately: open a private chat with @{BOT_USERNAME}"),
    )
    .await;

    // World arena.
    step(&fake, &alice, GROUP, "/bid 20", "Alice placed a sealed bid").await;
    fake.wait_text(0, alice.id, "Your bid: 20 coins").await;
    step(&fake, &bob, GROUP, "/bid 3 influence", "Bob placed a sealed bid").await;
    step(&fake, &carol, GROUP, "/bid lots", "“lots” is not an amount").await;
    step(&fake, &alice, GROUP, "/ready", "Alice is ready (1/3").await;
    step(&fake, &bob, GROUP, "/ready", "Bob is ready (2/3").await;
    step(&fake, &carol, GROUP, "/ready", "Negotiations").await;

    // Negotiations, and a redelivered update that must not pay twice.
    let give = fake.calls().len();
    let give_update = fake.message(&bob, GROUP, "/give @carol 15");
    fake.wait_text(give, GROUP, "Bob (Sudmark) sent 15 coins to Carol (Ostrava).")
        .await;
    step(&fake, &carol, GROUP, "/give @bob abc", "“abc” is not an amount").await;
    let mark = fake.calls().len();
    fake.redeliver(give_update);
    step(&fake, &alice, GROUP, "/gameinfo", "Nordavia — Alice 👑").await;
    let sent_twice = fake.calls()[mark..]
        .iter()
        .any(|c| c.text().contains("sent 15 coins"));
    assert!(!sent_twice, "the redelivered /give was applied again");
    for who in [&alice, &bob, &carol] {
        step(&fake, who, GROUP, "/ready", "ready").await;
    }
    fake.wait_text(give, GROUP, "📜 Orders:").await;

    // Orders from the decree buttons.
    let decrees = step(&fake, &alice, GROUP, "/orders", "📜 Decrees for round 1").await;
    let decrees_id = with_button(&decrees, "/orders invest");
    let mark = fake.calls().len();
    assert_eq!(
        press(&fake, &alice, decrees_id, "/orders invest").await,
        "✅ Done"
    );
    fake.wait_text(mark, GROUP, "Alice issued a secret decree (1/2)")
        .await;
    fake.wait_text(mark, alice.id, "Decree 1: Invest").await;
    assert_eq!(
        press(&fake, &alice, decrees_id, "/orders invest").await,
        "You already gave that order this round; pick a different one."
    );
    with_button(&decrees, "/orders sanctions 101");
    assert_eq!(
        press(&fake, &bob, decrees_id, "/orders sanctions 101").await,
        "✅ Done"
    );
    assert_eq!(
        press(&fake, &carol, decrees_id, "/orders espionage 102").await,
        "✅ Done"
    );
    assert_eq!(
        press(&fake, &carol, decrees_id, "/orders espionage 103").await,
        "You cannot target yourself."
    );
    for who in [&alice, &bob, &carol] {
        step(&fake, who, GROUP, "/ready", "ready").await;
    }
    fake.wait_text(give, GROUP, "📊 Round 1 resolved:").await;
    fake.wait_text(give, GROUP, "🔔 Round 2 of 2.").await;

    // A vote of no confidence, answered with the ballot buttons; the ballot message is edited.
    let ballot = step(&fake, &bob, GROUP, "/votum", "Bob calls a vote of no confidence").await;
    let ballot_id = with_button(&ballot, "/vote no");
    let mark = fake.calls().len();
    assert_eq!(press(&fake, &alice, ballot_id, "/vote no").await, "✅ Done");
    let edit = fake
        .wait_for(mark, "the ballot's tally", |c| c.method == "editMessageText")
        .await;
    let edit = &fake.calls()[edit];
    assert_eq!(edit.body["message_id"], ballot_id);
    assert!(edit.text().contains("1 yes, 1 no of 3"), "{}", edit.text());
    assert_eq!(
        press(&fake, &alice, ballot_id, "/vote yes").await,
        "You have already voted."
    );
    let mark = fake.calls().len();
    press(&fake, &carol, ballot_id, "/vote no").await;
    fake.wait_text(mark, GROUP, "The vote fails: 1 yes, 2 no of 3")
        .await;
    let closed = fake
        .wait_for(mark, "the closed ballot", |c| {
            c.method == "editMessageText" && c.text().contains("closed")
        })
        .await;
    assert!(
        fake.calls()[closed].buttons().is_empty(),
        "a closed ballot has no buttons"
    );

    // The chair pushes through round 2; the final standings are posted.
    step(
        &fake,
        &alice,
        GROUP,
        "/next_phase",
        "Not yet: 1 of 3 ready, counting you",
    )
    .await;
    step(&fake, &bob, GROUP, "/ready", "Bob is ready").await;
    step(&fake, &alice, GROUP, "/next_phase", "Negotiations").await;
    step(&fake, &bob, GROUP, "/next_phase", "Only the chair can do that.").await;
    step(&fake, &bob, GROUP, "/ready", "Bob is ready").await;
    step(&fake, &alice, GROUP, "/next_phase", "📜 Orders:").await;
    step(&fake, &bob, GROUP, "/ready", "Bob is ready").await;
    let end = step(
        &fake,
        &alice,
        GROUP,
        "/next_phase",
        "🏁 Game over after 2 rounds!",
    )
    .await;
    assert!(end.text().contains("wins!"), "{}", end.text());
    step(
        &fake,
        &bob,
        GROUP,
        "/ready",
        "The game is finished. Start a new one with /startgame.",
    )
    .await;
    step(
        &fake,
        &carol,
        GROUP,
        "/leaderboard",
        "No finished games on the leaderboard yet",
    )
    .await;

    // Telegram saw only methods it knows, every button press was answered, and the group
    // never saw a secret decree.
    let calls = fake.calls();
    let unknown: Vec<&str> = calls
        .iter()
        .map(|c| c.method.as_str())
        .filter(|m| {
            ![
                "getMe",
                "getWebhookInfo",
                "deleteWebhook",
                "setMyCommands",
                "sendMessage",
                "editMessageText",
                "answerCallbackQuery",
            ]
            .contains(m)
        })
        .collect();
    assert!(unknown.is_empty(), "{unknown:?}");
    let commands = calls.iter().find(|c| c.method == "setMyCommands").unwrap();
    assert!(commands.body["commands"].to_string().contains("\"votum_result\""));
    assert!(
        calls
            .iter()
            .filter(|c| c.chat() == GROUP)
            .all(|c| !c.text().contains("Decree 1:")),
        "a decree leaked into the group"
    );

    // The game is finished in the database and its end is in the outbox.
    let finished: Value =
        sqlx::query_scalar("SELECT payload FROM outbox_events WHERE event_type = 'game.finished'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(finished["chat_id"], GROUP);
    assert_eq!(finished["standings"].as_array().unwrap().len(), 3);
    assert_eq!(
        scalar_i64(
            &db.pool,
            "SELECT count(*) FROM outbox_events WHERE event_type = 'coins.transferred'"
        )
        .await,
        1
    );
    assert_eq!(
        scalar_i64(
            &db.pool,
            "SELECT count(*) FROM game_audit WHERE source = 'telegram' AND update_id IS NOT NULL"
        )
        .await,
        scalar_i64(&db.pool, "SELECT max(version)::bigint FROM games").await
    );

    assert!(
        bot.terminate().await.success(),
        "the bot stops cleanly on SIGTERM"
    );
}

#[test]
fn without_a_token_the_bot_stops_with_one_clear_line() {
    for token in [None, Some("")] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bot"));
        cmd.arg("run").env_remove("TELEGRAM_BOT_TOKEN");
        if let Some(t) = token {
            cmd.env("TELEGRAM_BOT_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].starts_with("bot: error: TELEGRAM_BOT_TOKEN is not set"),
            "{stderr}"
        );
    }
}

#[test]
fn help_never_prints_the_token_or_the_database_password() {
    for sub in ["run", "console", "migrate"] {
        let out = Command::new(env!("CARGO_BIN_EXE_bot"))
            .args([sub, "--help"])
            .env("TELEGRAM_BOT_TOKEN", "123:s3cret-token")
            .env("DATABASE_URL", "postgres://u:s3cret-pw@db/x")
            .output()
            .unwrap();
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(help.contains("DATABASE_URL"), "{help}");
        assert!(
            !help.contains("s3cret"),
            "bot {sub} --help leaks a secret:\n{help}"
        );
    }
}
