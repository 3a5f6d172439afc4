//! bot: NeMonopolia on Telegram (`run`), in a terminal (`console`), and its schema (`migrate`).

use clap::{Parser, Subcommand};
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "bot",
    version,
    about = "NeMonopolia: a Telegram strategy game played through the outbox"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Play on Telegram (long polling) until SIGTERM or Ctrl-C.
    Run(bot::telegram::TelegramArgs),
    /// Play from the terminal: lines like `alice /joingame` (stdin may be piped).
    Console(bot::console::ConsoleArgs),
    /// Create or upgrade the game's tables; history in _bot_migrations, a second run is a no-op.
    Migrate {
        /// PostgreSQL connection URL.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
    /// Rebuild a game from its first snapshot and audited commands, and check it against
    /// every later snapshot and the stored state.
    Replay {
        /// PostgreSQL connection URL.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// The game's id (games.id).
        game_id: Uuid,
    },
}

#[tokio::main]
async fn main() {
    outbox::telemetry::init();
    if let Err(e) = run(Cli::parse().command).await {
        // One line that names what to fix.
        outbox::telemetry::fatal(&format!("bot: error: {e:#}"));
        std::process::exit(1);
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => bot::telegram::run(args).await,
        Command::Console(args) => bot::console::run(args).await,
        Command::Migrate { database_url } => {
            outbox::migrate::command(&outbox::migrate::BOT, &database_url).await
        }
        Command::Replay {
            database_url,
            game_id,
        } => {
            let pool = sqlx::PgPool::connect(&database_url).await?;
            let replay = bot::store::Store::new(pool).replay(game_id).await?;
            println!(
                "game {game_id}: {} audited command(s) replayed from the snapshot at version {}; \
                 {} later snapshot(s) and the stored state match (phase {}, round {})",
                replay.commands,
                replay.from_seq,
                replay.snapshots_checked,
                replay.state.phase,
                replay.state.round
            );
            Ok(())
        }
    }
}
