//! `bot console` with piped stdin: a 3-player game from /startgame to finished, played by the
//! real binary against a real database.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

const CHAT: i64 = -4004;

/// The game, as a person would type it (refusals included).
pub const SCRIPT: &str = "\
# lobby
alice /start
alice /startgame 2
bob /joingame
carol /joingame
dave /ready
bob /begin_round
alice /begin_round
# round 1: world arena
alice /bid 20
bob /bid 3 influence
carol /bid lots
alice /ready
bob /ready
carol /ready
# negotiations
bob /give @carol 15
carol /give @zed 5
alice /ready
bob /ready
carol /ready
# orders
alice /orders invest
alice /orders sanctions @bob
bob /orders security
carol /orders espionage @alice
carol /orders stimulus
carol /orders invest
alice /status
alice /ready
bob /ready
carol /ready
# round 2: a vote of no confidence that fails, then the chair pushes on
alice /votum
bob /votum
carol /votum_result
alice /vote no
carol /vote no
alice /next_phase
bob /ready
alice /next_phase
bob /endgame
bob /ready
alice /next_phase
bob /ready
alice /next_phase
alice /gameinfo
carol /leaderboard
";

#[tokio::test]
async fn a_three_player_game_through_the_console() {
    let db = outbox::testkit::TestDb::new().await.unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bot"))
        .args([
            "console",
            "--database-url",
            &db.url,
            "--chat-id",
            &CHAT.to_string(),
            "--seed",
            "7",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(SCRIPT.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let expect = [
        "> alice /startgame 2",
        "🌍 A new World Council is open! Alice chairs it.",
        "👋 Bob joins as the head of Sudmark (2/8).",
        "You are not in this game.",
        "Only the chair can do that.",
        "🔔 Round 1 of 2.",
        "[to alice] Your bid: 20 coins (worth 20).",
        "[to bob] Your bid: 3 influence (worth 15).",
        "“lots” is not an amount: use a whole number, like 20.",
        "✅ Carol is ready. Everyone is ready!",
        "🤝 Negotiations",
        "💸 Bob (Sudmark) sent 15 coins to Carol (Ostrava).",
        "[to carol] Bob (Sudmark) sent you 15 coins",
        "No player “@zed” in this game.",
        "📜 Alice issued a secret decree (1/2).",
        "You already gave 2 orders this round.",
        "[to alice] 🔒 Nordavia:",
        "[to alice] Your decrees: Invest, Sanctions → Sudmark.",
        "📊 Round 1 resolved:",
        "🔔 Round 2 of 2.",
        "You chair the council: a vote of no confidence is for the others to call.",
        "🗳 Bob calls a vote of no confidence",
        "  buttons: [👍 Yes, remove the chair] /vote yes · [👎 No] /vote no",
        "The vote stays open until everyone has voted or this phase ends (1 of 3 voted).",
        "🗳 The vote fails: 1 yes, 2 no of 3. Alice (Nordavia) keeps the chair.",
        "Not yet: 1 of 3 ready, counting you; /next_phase needs a majority (2) or the phase's deadline.",
        "⏭ Alice moves on (2 of 3 ready); passive: Carol.",
        "Only the chair can propose to end the game; the others then agree with /endgame.",
        "🏁 Game over after 2 rounds!",
        "🏆 No finished games on the leaderboard yet.",
    ];
    let mut from = 0;
    for line in expect {
        let at = stdout[from..]
            .find(line)
            .unwrap_or_else(|| panic!("missing (in order) {line:?} in:\n{stdout}"));
        from += at + line.len();
    }
    // Secret decrees never show in public lines.
    for l in stdout
        .lines()
        .filter(|l| !l.starts_with("[to ") && !l.starts_with('>'))
    {
        assert!(!l.contains("Decree 1: Invest"), "a decree leaked: {l}");
    }

    // The database saw the same game: finished, with its events in the outbox.
    let (phase, round): (String, i32) = sqlx::query_as("SELECT phase, round FROM games WHERE chat_id = $1")
        .bind(CHAT)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!((phase.as_str(), round), ("finished", 2));
    let finished: Value =
        sqlx::query_scalar("SELECT payload FROM outbox_events WHERE event_type = 'game.finished'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let standings = finished["standings"].as_array().unwrap();
    assert_eq!(standings.len(), 3);
    assert_eq!(finished["winner_id"], standings[0]["player_id"]);
    let winner = standings[0]["name"].as_str().unwrap();
    assert!(stdout.contains(&format!("🏆 {winner} of ")), "{stdout}");
    assert_eq!(
        scalar_i64(
            &db.pool,
            "SELECT count(*) FROM game_audit WHERE source = 'console'"
        )
        .await,
        scalar_i64(&db.pool, "SELECT max(version)::bigint FROM games").await
    );
}
