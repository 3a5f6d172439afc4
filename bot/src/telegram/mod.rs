//! The Telegram adapter (teloxide, long polling): turns messages and button presses into
//! [`crate::app::Incoming`] and delivers the [`crate::app::Response`]: group replies, private
//! figures by direct message (with a note in the group when a player never started the bot),
//! inline keyboards, edits and button notices.

mod deliver;
mod handlers;

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use sqlx::postgres::PgPoolOptions;
use teloxide::dispatching::{Dispatcher, UpdateFilterExt};
use teloxide::error_handlers::LoggingErrorHandler;
use teloxide::prelude::{Requester, Update};
use teloxide::types::BotCommand;
use teloxide::{Bot, dptree};
use tokio::signal::unix::{SignalKind, signal};
use url::Url;

use crate::app::App;
use crate::commands::COMMANDS;
use crate::store::Store;

/// No `Debug`: it holds the bot token and the database password.
#[derive(Args, Clone)]
pub struct TelegramArgs {
    /// The bot's token from @BotFather (required).
    #[arg(
        long,
        env = "TELEGRAM_BOT_TOKEN",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub telegram_bot_token: String,
    /// Another Bot API server (a local telegram-bot-api, a test double); empty: Telegram's.
    #[arg(long, env = "TELEGRAM_API_URL", default_value = "", hide_default_value = true)]
    pub telegram_api_url: String,
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

/// Everything a handler needs besides the bot itself.
#[derive(Clone)]
struct Shared {
    app: App,
    /// Our @username, for the "start a private chat with me" note.
    username: Option<String>,
}

/// Builds the Bot API client; fails on a missing token or a bad URL, before any I/O.
fn client(args: &TelegramArgs) -> anyhow::Result<Bot> {
    let token = args.telegram_bot_token.trim();
    if token.is_empty() {
        bail!(
            "TELEGRAM_BOT_TOKEN is not set: get a token from @BotFather and set TELEGRAM_BOT_TOKEN \
             (or --telegram-bot-token); `bot console` plays without Telegram"
        );
    }
    let bot = Bot::new(token);
    let api = args.telegram_api_url.trim();
    if api.is_empty() {
        return Ok(bot);
    }
    // The client appends `bot<token>/<method>` to this URL: keep its path as a directory.
    let base = if api.ends_with('/') {
        api.to_owned()
    } else {
        format!("{api}/")
    };
    let url = Url::parse(&base).with_context(|| format!("TELEGRAM_API_URL `{api}` is not a URL"))?;
    Ok(bot.set_api_url(url))
}

/// `bot run`: polls Telegram until SIGTERM or Ctrl-C.
pub async fn run(args: TelegramArgs) -> anyhow::Result<()> {
    let bot = client(&args)?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&args.database_url)
        .await
        .context("connecting to DATABASE_URL")?;
    let store = Store::new(pool);
    store.check_schema().await?;
    let me = bot
        .get_me()
        .await
        .context("calling getMe (is TELEGRAM_BOT_TOKEN right and the Bot API reachable?)")?;
    let username = me.user.username.clone();
    tracing::info!(bot = ?username, "connected to the Bot API");
    let commands = COMMANDS.iter().map(|c| BotCommand::new(c.name, c.about));
    if let Err(e) = bot.set_my_commands(commands).await {
        tracing::warn!(error = %e, "could not publish the command list; commands still work");
    }
    tokio::spawn(forget_old_updates(store.clone()));
    let shared = Shared {
        app: App::new(store).with_bot_username(username.clone()),
        username,
    };
    let handler = dptree::entry()
        .branch(Update::filter_message().endpoint(handlers::on_message))
        .branch(Update::filter_callback_query().endpoint(handlers::on_callback));
    let mut dispatcher = Dispatcher::builder(bot, handler)
        .dependencies(dptree::deps![shared])
        .default_handler(|_| async {})
        .error_handler(LoggingErrorHandler::with_custom_text("a Telegram update failed"))
        .build();
    let shutdown = dispatcher.shutdown_token();
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested: finishing the updates in hand");
        if let Ok(done) = shutdown.shutdown() {
            done.await;
        }
    });
    dispatcher.dispatch().await;
    tracing::info!("stopped");
    Ok(())
}

/// How long a handled update is remembered for redelivery checks: Telegram's 24 hours, doubled.
const REMEMBER_UPDATES: Duration = Duration::from_secs(48 * 3600);

async fn forget_old_updates(store: Store) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        match store.forget_updates_older_than(REMEMBER_UPDATES).await {
            Ok(n) => tracing::debug!(forgotten = n, "pruned processed updates"),
            Err(e) => tracing::warn!(error = %e, "could not prune processed updates"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(token: &str, url: &str) -> TelegramArgs {
        TelegramArgs {
            telegram_bot_token: token.into(),
            telegram_api_url: url.into(),
            database_url: String::new(),
        }
    }

    #[test]
    fn a_missing_or_empty_token_is_one_clear_error() {
        for token in ["", "   "] {
            let e = client(&args(token, "")).unwrap_err().to_string();
            assert!(e.starts_with("TELEGRAM_BOT_TOKEN is not set"), "{e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn the_api_url_is_optional_and_checked() {
        let bot = client(&args("1:x", "")).unwrap();
        assert_eq!(bot.api_url().as_str(), "https://api.telegram.org/");
        let bot = client(&args("1:x", "http://127.0.0.1:8081/tg")).unwrap();
        assert_eq!(bot.api_url().as_str(), "http://127.0.0.1:8081/tg/");
        let e = client(&args("1:x", "not a url")).unwrap_err().to_string();
        assert!(e.contains("TELEGRAM_API_URL"), "{e}");
    }
}
