//! relay-cdc: publishes outbox_events inserts from the WAL to Kafka.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "relay-cdc",
    version,
    about = "Streams outbox_events inserts from a pgoutput slot to Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the SQL migrations in migrations/ (a second run is a no-op).
    Migrate {
        /// PostgreSQL connection URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    outbox::telemetry::init();
    match Cli::parse().command {
        Command::Migrate { database_url } => outbox::migrate::command(&database_url).await,
    }
}
