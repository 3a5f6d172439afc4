//! `bot console`: the same game and database from a terminal, without a Telegram token. Each
//! line is `<player> /command [args]` (`alice /joingame`, `bob /give @alice 10`); the players
//! share one group chat. Public replies print as they are, private ones as `[to alice] ...`,
//! buttons as the commands they would send. Works interactively and with piped stdin.

use std::collections::HashMap;
use std::io::IsTerminal;

use anyhow::Context;
use clap::Args;
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::app::{App, ChatKind, Dest, Incoming, Reply, Response};
use crate::game::{Actor, PlayerId};
use crate::store::{Origin, Store};

/// No `Debug`: it holds the database password.
#[derive(Args, Clone)]
pub struct ConsoleArgs {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// The group chat id the console plays in (a game per chat, as in Telegram).
    #[arg(long, env = "BOT_CONSOLE_CHAT_ID", default_value_t = -100, allow_hyphen_values = true)]
    pub chat_id: i64,
    /// Deck seed for new games (reproducible demos); random when unset.
    #[arg(long)]
    pub seed: Option<u64>,
}

const HELP: &str = "Type `<player> /command [args]`, e.g. `alice /startgame 2`, `bob /joingame`, \
                    `bob /give @alice 10`. Players are created on first use. /help lists the commands.";

/// A stable id per console name, so the same name is the same player across games (and on the
/// leaderboard). Console ids are negative: they never collide with Telegram user ids.
pub fn player_id(name: &str) -> PlayerId {
    // FNV-1a, folded into 48 bits.
    let hash = name
        .to_lowercase()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    -(((hash >> 16) as i64) | 1)
}

pub async fn run(args: ConsoleArgs) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&args.database_url)
        .await
        .context("connecting to DATABASE_URL")?;
    let store = Store::new(pool);
    store.check_schema().await?;
    let app = App::new(store).with_seed(args.seed);
    let interactive = std::io::stdin().is_terminal();
    let mut out = tokio::io::stdout();
    if interactive {
        out.write_all(format!("NeMonopolia console, chat {}. {HELP}\n", args.chat_id).as_bytes())
            .await?;
    }
    let mut players: HashMap<String, Actor> = HashMap::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        if interactive {
            out.write_all(b"> ").await?;
            out.flush().await?;
        }
        let Some(line) = lines.next_line().await? else {
            break;
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !interactive {
            // Piped input: echo it, so the transcript reads as a conversation.
            out.write_all(format!("> {line}\n").as_bytes()).await?;
        }
        let Some((name, text)) = line
            .split_once(char::is_whitespace)
            .filter(|(n, _)| !n.starts_with('/'))
        else {
            out.write_all(format!("{HELP}\n").as_bytes()).await?;
            continue;
        };
        let actor = players
            .entry(name.to_lowercase())
            .or_insert_with(|| Actor {
                id: player_id(name),
                name: capitalize(name),
                username: Some(name.to_lowercase()),
            })
            .clone();
        let msg = Incoming {
            chat_id: args.chat_id,
            chat_kind: ChatKind::Group,
            actor,
            text: text.trim(),
            origin: Origin {
                source: "console",
                update_id: None,
            },
            via_button: false,
        };
        let _span = tracing::info_span!("console", chat_id = args.chat_id, player = name).entered();
        match app.handle(msg).await? {
            Some(response) => print(&mut out, &response, &players).await?,
            None => out.write_all(format!("{HELP}\n").as_bytes()).await?,
        }
    }
    out.flush().await?;
    Ok(())
}

fn capitalize(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

async fn print(
    out: &mut (impl AsyncWrite + Unpin),
    response: &Response,
    players: &HashMap<String, Actor>,
) -> std::io::Result<()> {
    for reply in &response.replies {
        out.write_all(render(reply, players).as_bytes()).await?;
    }
    out.flush().await
}

fn render(reply: &Reply, players: &HashMap<String, Actor>) -> String {
    let mut s = match reply.to {
        Dest::Chat => format!("{}\n", reply.text),
        Dest::Player { id, ref name } => {
            let name = players
                .values()
                .find(|a| a.id == id)
                .and_then(|a| a.username.clone())
                .unwrap_or_else(|| name.clone());
            let body = reply.text.replace('\n', &format!("\n[to {name}] "));
            format!("[to {name}] {body}\n")
        }
    };
    for row in &reply.buttons {
        let labels: Vec<String> = row
            .iter()
            .map(|b| format!("[{}] {}", b.label, b.command))
            .collect();
        s.push_str(&format!("  buttons: {}\n", labels.join(" · ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_ids_are_stable_negative_and_distinct() {
        assert_eq!(player_id("Alice"), player_id("alice"));
        let ids: Vec<PlayerId> = ["alice", "bob", "carol", "dave"].map(player_id).to_vec();
        assert!(ids.iter().all(|&id| id < 0));
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
    }

    #[test]
    fn private_replies_are_marked_line_by_line() {
        let alice = Actor {
            id: player_id("alice"),
            name: "Alice".into(),
            username: Some("alice".into()),
        };
        let players = HashMap::from([("alice".to_owned(), alice.clone())]);
        let reply = Reply {
            to: Dest::Player {
                id: alice.id,
                name: alice.name.clone(),
            },
            text: "one\ntwo".into(),
            buttons: vec![],
        };
        assert_eq!(render(&reply, &players), "[to alice] one\n[to alice] two\n");
    }
}
