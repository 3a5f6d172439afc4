//! Startup checks: each problem that would stop the relay later is found at start and
//! reported as one line that names the setting and the fix.

use sqlx::PgPool;

/// A configuration problem; `Display` is the one line the operator reads.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(
        "wal_level is '{0}', logical replication needs 'logical': set wal_level = logical in postgresql.conf (see postgres.conf) and restart PostgreSQL"
    )]
    WalLevel(String),
    #[error("table outbox_events does not exist in this database: run `relay-cdc migrate` first")]
    NoOutboxTable,
    #[error(
        "publication {0} does not exist: run `relay-cdc migrate`, or CREATE PUBLICATION {0} FOR TABLE outbox_events WITH (publish = 'insert')"
    )]
    NoPublication(String),
    #[error("publication {0} does not cover outbox_events: ALTER PUBLICATION {0} ADD TABLE outbox_events")]
    PublicationMissesTable(String),
    #[error("publication {0} does not publish inserts: ALTER PUBLICATION {0} SET (publish = 'insert')")]
    PublicationNoInsert(String),
    #[error(
        "role {0} lacks the REPLICATION attribute: ALTER ROLE {0} REPLICATION (or connect as a role that has it)"
    )]
    NoReplication(String),
    #[error(
        "replication slot {slot} uses plugin {plugin}, not pgoutput: drop it (`relay-cdc slot drop --slot-name {slot}`) or set RELAY_SLOT_NAME to another name"
    )]
    SlotPlugin { slot: String, plugin: String },
    #[error("replication slot {slot} is a physical slot: drop it or set RELAY_SLOT_NAME to another name")]
    SlotPhysical { slot: String },
    #[error(
        "replication slot {slot} belongs to database {database}, not {current}: set RELAY_SLOT_NAME to another name"
    )]
    SlotDatabase {
        slot: String,
        database: String,
        current: String,
    },
    #[error(
        "column outbox_events.processing_since does not exist (the poll mode's claim timestamp): run `relay-cdc migrate`"
    )]
    NoProcessingSince,
    #[error("role {role} may not {privilege} {table}: GRANT {privilege} ON {table} TO {role}")]
    TablePrivilege {
        role: String,
        privilege: &'static str,
        table: &'static str,
    },
    #[error(
        "cannot create index {}: {error}: the role must own outbox_events and have CREATE on its schema, or create the index once as such a role: {}",
        crate::poll::POLL_INDEX,
        crate::poll::POLL_INDEX_DDL
    )]
    PollIndex { error: String },
    #[error("password authentication failed for user {0}: fix the password in DATABASE_URL")]
    Password(String),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    #[error("checking the database: {0}")]
    Query(#[from] sqlx::Error),
}

/// Connects, classifying a wrong password and an unreachable server.
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, CheckError> {
    if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
        let scheme = database_url.split_once("://").map_or("(none)", |(s, _)| s);
        return Err(CheckError::Connect(format!(
            "DATABASE_URL must be a PostgreSQL URL (postgres://user:password@host:port/database), its scheme is {scheme}"
        )));
    }
    let opts: sqlx::postgres::PgConnectOptions = database_url
        .parse()
        .map_err(|e| CheckError::Connect(format!("DATABASE_URL is not a valid URL: {e}")))?;
    let user = opts.get_username().to_owned();
    let server = format!("{}:{}", opts.get_host(), opts.get_port());
    // One connection first: a pool only says "timed out" where the server or the network said why.
    use sqlx::ConnectOptions;
    match tokio::time::timeout(std::time::Duration::from_secs(10), opts.connect()).await {
        Ok(Ok(c)) => drop(c),
        Ok(Err(e)) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("28P01") => {
            return Err(CheckError::Password(user));
        }
        Ok(Err(e)) => {
            return Err(CheckError::Connect(format!("{server} (from DATABASE_URL): {e}")));
        }
        Err(_) => {
            return Err(CheckError::Connect(format!(
                "{server} (from DATABASE_URL): no answer within 10 s"
            )));
        }
    }
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_with(opts)
        .await
        .map_err(
            |e| match e.as_database_error().and_then(|d| d.code()).as_deref() {
                Some("28P01") => CheckError::Password(user),
                _ => CheckError::Connect(e.to_string()),
            },
        )
}

/// Runs every check against the database the relay will stream from (`--source cdc`).
pub async fn run(pool: &PgPool, publication: &str, slot: &str) -> Result<(), CheckError> {
    let wal_level: String = sqlx::query_scalar("SHOW wal_level").fetch_one(pool).await?;
    if wal_level != "logical" {
        return Err(CheckError::WalLevel(wal_level));
    }
    outbox_table(pool).await?;
    let pubinsert: Option<bool> =
        sqlx::query_scalar("SELECT pubinsert FROM pg_publication WHERE pubname = $1")
            .bind(publication)
            .fetch_optional(pool)
            .await?;
    match pubinsert {
        None => return Err(CheckError::NoPublication(publication.into())),
        Some(false) => return Err(CheckError::PublicationNoInsert(publication.into())),
        Some(true) => {}
    }
    let covers: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND tablename = 'outbox_events')",
    )
    .bind(publication)
    .fetch_one(pool)
    .await?;
    if !covers {
        return Err(CheckError::PublicationMissesTable(publication.into()));
    }
    let (role, can): (String, bool) = sqlx::query_as(
        "SELECT rolname::text, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(pool)
    .await?;
    if !can {
        return Err(CheckError::NoReplication(role));
    }
    let existing: Option<(Option<String>, String, Option<String>, String)> = sqlx::query_as(
        "SELECT plugin::text, slot_type, database::text, current_database()::text FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(pool)
    .await?;
    if let Some((plugin, slot_type, database, current)) = existing {
        if slot_type != "logical" {
            return Err(CheckError::SlotPhysical { slot: slot.into() });
        }
        let plugin = plugin.unwrap_or_default();
        if plugin != "pgoutput" {
            return Err(CheckError::SlotPlugin {
                slot: slot.into(),
                plugin,
            });
        }
        let database = database.unwrap_or_default();
        if database != current {
            return Err(CheckError::SlotDatabase {
                slot: slot.into(),
                database,
                current,
            });
        }
    }
    warn_if_poll_index(pool).await?;
    Ok(())
}

/// The checks of `--source poll`: the schema and the privileges a poller uses. Nothing about
/// replication (wal_level, REPLICATION, publication, slot): the poll mode exists for databases
/// that allow none of it.
pub async fn run_poll(pool: &PgPool) -> Result<(), CheckError> {
    outbox_table(pool).await?;
    let column: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute
                         WHERE attrelid = 'outbox_events'::regclass AND attname = 'processing_since'
                           AND NOT attisdropped)",
    )
    .fetch_one(pool)
    .await?;
    if !column {
        return Err(CheckError::NoProcessingSince);
    }
    // One privilege per call: has_table_privilege is true if ANY of a listed set is held.
    for (table, privilege) in [
        ("outbox_events", "SELECT"),
        ("outbox_events", "UPDATE"),
        ("outbox_parked_aggregates", "SELECT"),
        ("outbox_parked_aggregates", "INSERT"),
    ] {
        let (role, ok): (String, bool) =
            sqlx::query_as("SELECT current_user::text, has_table_privilege($1, $2)")
                .bind(table)
                .bind(privilege)
                .fetch_one(pool)
                .await?;
        if !ok {
            return Err(CheckError::TablePrivilege {
                role,
                privilege,
                table,
            });
        }
    }
    Ok(())
}

async fn outbox_table(pool: &PgPool) -> Result<(), CheckError> {
    let table: bool = sqlx::query_scalar("SELECT to_regclass('outbox_events') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !table {
        return Err(CheckError::NoOutboxTable);
    }
    Ok(())
}

/// The poll mode's index, left behind by an earlier `--source poll`, costs the CDC relay: its
/// predicate covers `status`, so every mark-sent becomes a non-HOT update. Say so, once.
async fn warn_if_poll_index(pool: &PgPool) -> Result<(), CheckError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(crate::poll::POLL_INDEX)
        .fetch_one(pool)
        .await?;
    if exists {
        tracing::warn!(
            index = crate::poll::POLL_INDEX,
            "the poll mode's index exists: marking rows sent is not a HOT update while it does; \
             DROP INDEX CONCURRENTLY {} if no poller runs any more",
            crate::poll::POLL_INDEX
        );
    }
    Ok(())
}
