//! consumer: applies game-events from Kafka to PostgreSQL exactly once.

use clap::{Parser, Subcommand};
use consumer::{KafkaArgs, RunConfig, Service};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "consumer",
    version,
    about = "Applies game-events from Kafka to PostgreSQL exactly once, with a dead-letter topic"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the topic until SIGTERM or Ctrl-C.
    Run(RunConfig),
    /// Send the messages of `<topic>.dlq` back to their source topic (once per message).
    Redrive(KafkaArgs),
    /// Create or upgrade consumed_events and the handlers' tables (the leaderboard); history in
    /// _consumer_migrations, a second run is a no-op.
    Migrate {
        /// PostgreSQL connection URL.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
}

#[tokio::main]
async fn main() {
    outbox::telemetry::init();
    if let Err(e) = run(Cli::parse().command).await {
        // One line that names what to fix.
        outbox::telemetry::fatal(&format!("consumer: error: {e:#}"));
        std::process::exit(1);
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    outbox::kafka::log_build();
    match command {
        Command::Run(cfg) => {
            let mut term = signal(SignalKind::terminate())?;
            let service = Service::start(cfg).await?;
            service
                .run(async move {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                    tracing::info!("shutdown requested: finishing the batch in hand");
                })
                .await;
            Ok(())
        }
        Command::Redrive(args) => {
            let sent = consumer::dlq::redrive(&args).await?;
            println!(
                "redrove {sent} message(s) from {} to their source topic",
                args.dlq_topic()
            );
            Ok(())
        }
        Command::Migrate { database_url } => {
            outbox::migrate::command(&outbox::migrate::CONSUMER, &database_url).await
        }
    }
}
