//! The relay: leadership, slot lifecycle, the backlog, and the streaming apply loop that turns
//! WAL into Kafka records and acknowledgements.
//!
//! Kept apart as in a replication client / codec / apply-loop split: [`crate::replication`]
//! moves bytes, [`crate::pgoutput`] decodes them, [`crate::event`] builds envelopes, and this
//! module decides what to produce, when a row is done ([`crate::mark`]) and how far the slot may
//! be confirmed ([`crate::ack`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use outbox::Envelope;
use outbox::http::Readiness;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::ack::{AckTracker, TxnId};
use crate::event::{self, OutboxRow};
use crate::kafka_health::KafkaHealth;
use crate::lsn::Lsn;
use crate::mark::{self, MarkDone, MarkRequest};
use crate::metrics::Metrics;
use crate::pgoutput::{self, LogicalMessage, RelationCache};
use crate::producer::{self, Delivery, EventProducer, ProducerConfig, SendError, Token};
use crate::replication::{ReplicationClient, ReplicationEvent, ReplicationStream};
use crate::{checks, leader, slot};

/// Everything `relay-cdc run` is configured with.
/// No `Debug`: the database URL holds a password.
#[derive(Clone)]
pub struct RelayConfig {
    pub database_url: String,
    pub slot: String,
    pub publication: String,
    pub message_prefix: String,
    pub producer: ProducerConfig,
    /// Stop reading the stream while this many events are not yet confirmed.
    pub max_in_flight: usize,
    /// ...or while the events handed to Kafka and not yet acknowledged hold this many bytes.
    pub max_in_flight_bytes: usize,
    /// Mark delivered rows `sent` once this many are waiting...
    pub mark_batch: usize,
    /// ...or this long after the first of them was delivered.
    pub mark_interval: Duration,
}

/// Runs until `shutdown` turns true: checks, then leads whenever this instance holds the lock.
pub async fn run(
    cfg: RelayConfig,
    metrics: Metrics,
    ready: Readiness,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let pool = checks::connect(&cfg.database_url, 4).await?;
    checks::run(&pool, &cfg.publication, &cfg.slot).await?;
    tokio::spawn(sample_rows_not_sent(pool.clone(), metrics.clone()));
    let terms = Terms {
        database_url: &cfg.database_url,
        slot: &cfg.slot,
        metrics: &metrics,
        ready: &ready,
        drain_timeout: DRAIN_TIMEOUT,
    };
    terms
        .run(
            shutdown,
            "relay stopped; restarting from the slot's confirmed position",
            |shutdown| lead(&cfg, &pool, &metrics, &ready, shutdown),
            async || {},
        )
        .await
}

/// What every relay source shares: lead whenever this instance holds the slot's lock (the others
/// stand by), and after a failed term back off and lead again.
pub(crate) struct Terms<'a> {
    pub database_url: &'a str,
    pub slot: &'a str,
    pub metrics: &'a Metrics,
    pub ready: &'a Readiness,
    /// After shutdown, how long a term may take to drain before it is dropped where it stands
    /// (whatever it waits on: Kafka, a mark, a slot's consistent point). Nothing is lost: what
    /// is not confirmed is sent again by the next leader.
    pub drain_timeout: Duration,
}

/// How long SIGTERM waits for the CDC relay's in-flight events to be acknowledged and marked.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves `timeout` after shutdown was asked for (never, without shutdown).
async fn drain_expired(mut shutdown: watch::Receiver<bool>, timeout: Duration) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        // The sender is gone: that is a shutdown too.
    }
    tokio::time::sleep(timeout).await;
}

impl Terms<'_> {
    /// Runs `term` once per leadership term until it returns `Ok` (it drained after shutdown) or
    /// `shutdown` turns true. A term ends with an error, or when the lock's session is lost (the
    /// term is then dropped); `after_term` runs after every term either way.
    pub async fn run<Fut>(
        &self,
        mut shutdown: watch::Receiver<bool>,
        stopped: &str,
        mut term: impl FnMut(watch::Receiver<bool>) -> Fut,
        mut after_term: impl AsyncFnMut(),
    ) -> anyhow::Result<()>
    where
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let mut backoff = Backoff::default();
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let acquired = tokio::select! {
                l = leader::acquire(self.database_url, self.slot, Duration::from_secs(1)) => l,
                _ = shutdown.changed() => return Ok(()),
            };
            let mut leadership = match acquired {
                Ok(l) => l,
                Err(e) => {
                    outbox::warn_throttled!(Duration::from_secs(5), error = %format!("{e:#}"), "cannot reach PostgreSQL for the relay lock; retrying");
                    backoff.wait(&mut shutdown).await;
                    continue;
                }
            };
            self.metrics.leader.set(1);
            let started = Instant::now();
            let result = tokio::select! {
                r = term(shutdown.clone()) => r,
                _ = leadership.lost() => Err(anyhow::anyhow!("lost the relay lock")),
                _ = drain_expired(shutdown.clone(), self.drain_timeout) => {
                    tracing::warn!(in_flight = self.metrics.in_flight.get(), timeout = ?self.drain_timeout,
                        "drain timed out (Kafka or PostgreSQL slow or unavailable); stopping, what is not confirmed will be sent again");
                    Ok(())
                }
            };
            self.metrics.leader.set(0);
            self.metrics.in_flight.set(0);
            self.ready.set(false);
            after_term().await;
            match result {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = Backoff::default();
                    }
                    tracing::error!(error = %format!("{e:#}"), "{stopped}");
                    backoff.wait(&mut shutdown).await;
                }
            }
        }
    }
}

/// Exponential backoff, 200 ms to 10 s (or a shorter maximum), cut short by shutdown.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::with_max(Duration::from_secs(10))
    }
}

impl Backoff {
    pub(crate) fn with_max(max: Duration) -> Self {
        Self {
            next: Duration::from_millis(200).min(max),
            max,
        }
    }

    pub(crate) async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(self.next) => {}
            _ = shutdown.changed() => {}
        }
        self.next = (self.next * 2).min(self.max);
    }
}

/// One leadership term: connect Kafka, make sure the slot exists (publishing the backlog of a new
/// slot), then stream until shutdown or an error.
#[tracing::instrument(name = "lead", skip_all, fields(slot = %cfg.slot))]
async fn lead(
    cfg: &RelayConfig,
    pool: &PgPool,
    metrics: &Metrics,
    ready: &Readiness,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (mut producer, deliveries) =
        EventProducer::new(&cfg.producer).context("creating the Kafka producer")?;
    wait_for_kafka(&producer, &cfg.producer.bootstrap_servers, &mut shutdown).await?;
    if *shutdown.borrow() {
        return Ok(());
    }
    producer
        .refresh_topic_limits()
        .await
        .context("reading the topics' max.message.bytes")?;
    let mut repl = ReplicationClient::connect(&cfg.database_url)
        .await
        .context("opening the replication connection")?;
    let mut pipeline = Pipeline::new(
        cfg,
        pool.clone(),
        producer,
        deliveries,
        metrics.clone(),
        ready.clone(),
    )
    .await?;

    let existing = slot::inspect(pool, &cfg.slot).await?;
    if let Some(reason) = existing.needs_recreate() {
        tracing::warn!(slot = %cfg.slot, reason, "creating the slot and publishing every row not yet sent");
        if existing.exists {
            repl.drop_slot(&cfg.slot, true)
                .await
                .context("dropping the old slot")?;
        }
        let created = {
            let create = repl.create_logical_slot(&cfg.slot, "pgoutput", true);
            tokio::pin!(create);
            let mut every = tokio::time::interval_at(
                tokio::time::Instant::now() + Duration::from_secs(3),
                Duration::from_secs(5),
            );
            loop {
                tokio::select! {
                    created = &mut create => break created?,
                    _ = every.tick() => log_consistent_point_wait(pool).await,
                    _ = shutdown.changed() => return Ok(()),
                }
            }
        };
        let snapshot = created.snapshot_name.context("the server exported no snapshot")?;
        slot::record_created(pool, &cfg.slot, created.consistent_point).await?;
        let rows = pipeline
            .publish_backlog(&snapshot, created.consistent_point)
            .await?;
        slot::record_backlog_done(pool, &cfg.slot, rows).await?;
        tracing::info!(slot = %cfg.slot, rows, consistent_point = %created.consistent_point, "backlog published");
    }
    let start = slot::confirmed_flush(pool, &cfg.slot).await?;
    // Transactions up to here may have been produced by an earlier run: their rows' status is
    // checked so rows already sent are not produced again.
    let recheck_until: Lsn = slot::current_wal_lsn(pool).await?;
    let options = [
        ("proto_version", "1"),
        ("publication_names", cfg.publication.as_str()),
        ("messages", "true"),
    ];
    let stream = repl.start_replication(&cfg.slot, Lsn::INVALID, &options).await?;
    tracing::info!(slot = %cfg.slot, from = %start, recheck_until = %recheck_until, "streaming");
    ready.set(true);
    pipeline.stream(stream, start, recheck_until, shutdown).await
}

/// A new slot waits for a consistent point: every transaction running when it was asked for
/// must end first. Names the oldest one, so an operator can see what a first start waits for.
async fn log_consistent_point_wait(pool: &PgPool) {
    let oldest: Result<Option<(i32, f64, String, String)>, _> = sqlx::query_as(
        "SELECT pid, extract(epoch FROM now() - xact_start)::float8, coalesce(state, ''), left(query, 200)
           FROM pg_stat_activity
          WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() AND backend_type = 'client backend'
          ORDER BY xact_start LIMIT 1",
    )
    .fetch_optional(pool)
    .await;
    match oldest {
        Ok(Some((pid, age, state, query))) => tracing::warn!(
            pid,
            age_secs = age.round(),
            state,
            query,
            "creating the slot waits for transactions that were running to end (a consistent point); the oldest is pid {pid}; not ready until then"
        ),
        Ok(None) => tracing::warn!("creating the slot waits for a consistent point; not ready until then"),
        Err(e) => tracing::warn!(error = %e, "creating the slot waits for a consistent point"),
    }
}

/// Kafka unreachable at start is not fatal: wait (readiness stays false) and say so.
pub(crate) async fn wait_for_kafka(
    producer: &EventProducer,
    servers: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Short: once the broker is back, leading resumes within about two seconds.
    let mut backoff = Backoff::with_max(Duration::from_secs(2));
    loop {
        let check = tokio::task::block_in_place(|| producer.check(Duration::from_secs(2)));
        match check {
            Ok(()) => return Ok(()),
            Err(e) => {
                outbox::warn_throttled!(Duration::from_secs(10), servers, error = %e, "Kafka is unreachable; retrying");
                backoff.wait(shutdown).await;
                if *shutdown.borrow() {
                    return Ok(());
                }
            }
        }
    }
}

/// How an event reaches Kafka, which decides how it is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// An `outbox_events` row: finished when marked `sent`.
    Row,
    /// A `pg_logical_emit_message` record: finished when Kafka acknowledges it.
    Message,
}

/// An event of a committed transaction (or of one whose Begin has arrived: pgoutput protocol 1
/// sends only committed transactions), ready to produce.
struct Outgoing {
    txn: TxnId,
    envelope: Envelope,
    source: Source,
    commit_time: Option<DateTime<Utc>>,
}

/// An event handed to the producer, awaiting its delivery report.
struct InFlight {
    txn: TxnId,
    id: Uuid,
    aggregate_id: String,
    source: Source,
    commit_time: Option<DateTime<Utc>>,
    /// Kept for message events only: parking one writes it as a row.
    envelope: Option<Box<Envelope>>,
    /// Size of the record's value, counted in [`Pipeline::bytes_in_flight`].
    bytes: usize,
}

/// A chunk of a transaction is produced once it holds this many events...
const CHUNK_EVENTS: usize = 1000;
/// ...or this many bytes of envelope, whichever comes first.
const CHUNK_BYTES: usize = 1 << 20;

/// The transaction being received (between Begin and Commit). pgoutput protocol 1 sends a
/// transaction only once it has committed, and its Begin carries the commit time, so its
/// events are produced in chunks as they arrive: memory does not grow with the transaction.
/// It is registered in the ack tracker at Begin and sealed there at Commit (with the end LSN
/// the slot may then be confirmed to).
struct OpenTxn {
    id: TxnId,
    commit_time: Option<DateTime<Utc>>,
    /// Its commit precedes the position streaming started from: an earlier run may have sent
    /// some of its rows, so each chunk is checked against the table first.
    recheck: bool,
    chunk: Vec<(Envelope, Source)>,
    chunk_bytes: usize,
}

struct Pipeline {
    producer: EventProducer,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    marks: mpsc::Sender<MarkRequest>,
    marked: mpsc::UnboundedReceiver<MarkDone>,
    pool: PgPool,
    metrics: Metrics,
    ack: AckTracker,
    in_flight: HashMap<Token, InFlight>,
    /// Bytes of the records in `in_flight` (handed to Kafka, not yet acknowledged).
    bytes_in_flight: usize,
    next_token: Token,
    /// Delivered rows waiting for the next mark batch.
    to_mark: (Vec<Uuid>, Vec<TxnId>),
    first_unmarked: Option<Instant>,
    /// Events waiting because the producer queue was full; order is kept by sending these first.
    queued: VecDeque<Outgoing>,
    /// Aggregates held back behind a failed event; `true` once the park is committed (only
    /// then can the database say whether `republish` lifted it).
    parked: HashMap<String, bool>,
    message_prefix: String,
    max_in_flight: usize,
    max_in_flight_bytes: usize,
    mark_batch: usize,
    mark_interval: Duration,
    /// Readiness while streaming: false while Kafka does not acknowledge.
    health: KafkaHealth,
}

impl Pipeline {
    async fn new(
        cfg: &RelayConfig,
        pool: PgPool,
        producer: EventProducer,
        deliveries: mpsc::UnboundedReceiver<Delivery>,
        metrics: Metrics,
        ready: Readiness,
    ) -> anyhow::Result<Self> {
        let (marks, requests) = mpsc::channel(4);
        let (done_tx, marked) = mpsc::unbounded_channel();
        tokio::spawn(mark::run(pool.clone(), requests, done_tx));
        let parked: Vec<String> = sqlx::query_scalar("SELECT aggregate_id FROM outbox_parked_aggregates")
            .fetch_all(&pool)
            .await
            .context("loading parked aggregates")?;
        if !parked.is_empty() {
            tracing::warn!(
                count = parked.len(),
                "aggregates parked behind failed events; run `relay-cdc republish` once the cause is fixed"
            );
        }
        Ok(Self {
            producer,
            deliveries,
            marks,
            marked,
            pool,
            metrics,
            ack: AckTracker::new(Lsn::INVALID),
            in_flight: HashMap::new(),
            bytes_in_flight: 0,
            next_token: 0,
            to_mark: (Vec::new(), Vec::new()),
            first_unmarked: None,
            queued: VecDeque::new(),
            parked: parked.into_iter().map(|a| (a, true)).collect(),
            message_prefix: cfg.message_prefix.clone(),
            max_in_flight: cfg.max_in_flight,
            max_in_flight_bytes: cfg.max_in_flight_bytes,
            mark_batch: cfg.mark_batch,
            mark_interval: cfg.mark_interval,
            health: KafkaHealth::new(ready),
        })
    }

    /// Publishes every row the slot's exported snapshot sees that is not sent yet (they were
    /// committed before the slot's consistent point, so the stream will never carry them).
    async fn publish_backlog(&mut self, snapshot: &str, at: Lsn) -> anyhow::Result<u64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "SET TRANSACTION SNAPSHOT '{}'",
            snapshot.replace('\'', "''")
        ))
        .execute(&mut *tx)
        .await
        .context("importing the slot's snapshot")?;
        sqlx::query(&format!(
            "DECLARE backlog NO SCROLL CURSOR FOR
             SELECT {} FROM outbox_events WHERE status IN ('new', 'processing') ORDER BY seq",
            OutboxRow::COLUMNS
        ))
        .execute(&mut *tx)
        .await?;
        let mut total = 0u64;
        loop {
            let rows: Vec<OutboxRow> = sqlx::query_as("FETCH 2000 FROM backlog")
                .fetch_all(&mut *tx)
                .await?;
            if rows.is_empty() {
                break;
            }
            total += rows.len() as u64;
            let txn = self.ack.push(at, rows.len(), None);
            for r in rows {
                self.submit(Outgoing {
                    txn,
                    envelope: r.into_envelope(),
                    source: Source::Row,
                    commit_time: None,
                })
                .await;
            }
            self.drive_until_idle().await?;
            tracing::info!(published = total, "backlog progress");
        }
        tx.commit().await?;
        Ok(total)
    }

    /// Processes deliveries and marks until every event handed out so far is finished.
    async fn drive_until_idle(&mut self) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(self.mark_interval);
        while !self.ack.is_idle() {
            self.send_queued();
            tokio::select! {
                Some(d) = self.deliveries.recv() => self.on_delivery(d).await?,
                Some(done) = self.marked.recv() => self.on_marked(done),
                _ = tick.tick() => self.flush_marks(true).await?,
            }
            self.flush_marks(false).await?;
        }
        Ok(())
    }

    /// The streaming loop.
    async fn stream(
        mut self,
        mut stream: ReplicationStream,
        start: Lsn,
        recheck_until: Lsn,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        self.ack = AckTracker::new(start);
        let mut relations = RelationCache::new();
        let mut open: Option<OpenTxn> = None;
        let mut server_wal_end = start;
        let mut reported = start;
        let mut stopping = false;
        let mut tick = tokio::time::interval(self.mark_interval.min(Duration::from_millis(100)));
        let mut last_log = Instant::now();
        let mut last_limits = Instant::now();
        let mut published_at_log = self.metrics.published.get();
        loop {
            self.send_queued();
            // Backpressure: the stream waits (in the server and the socket) rather than in memory.
            let can_read = !stopping
                && self.queued.is_empty()
                && self.ack.events_in_flight() < self.max_in_flight
                && self.bytes_in_flight < self.max_in_flight_bytes;
            tokio::select! {
                Some(d) = self.deliveries.recv() => self.on_delivery(d).await?,
                Some(done) = self.marked.recv() => self.on_marked(done),
                event = stream.next(), if can_read => match event? {
                    Some(ReplicationEvent::XLogData { wal_end, data, .. }) => {
                        server_wal_end = server_wal_end.max(wal_end);
                        self.on_wal(&data, &mut relations, &mut open, recheck_until).await?;
                    }
                    Some(ReplicationEvent::PrimaryKeepalive { wal_end, .. }) => {
                        server_wal_end = server_wal_end.max(wal_end);
                        if open.is_none() {
                            self.ack.confirm_idle(wal_end);
                        }
                    }
                    None => bail!("the server ended the replication stream"),
                },
                _ = tick.tick() => {
                    self.flush_marks(true).await?;
                    self.health.check(self.in_flight.len(), &self.producer)?;
                    self.metrics.lag_seconds.set(self.ack.oldest_age_seconds());
                    // Not while Kafka is down: the request would hold up the loop for its timeout.
                    if last_limits.elapsed() >= Duration::from_secs(30) && self.health.healthy() {
                        // An operator may raise a topic's limit; new events then pass.
                        if let Err(e) = self.producer.refresh_topic_limits().await {
                            tracing::warn!(error = %e, "could not refresh topic size limits");
                        }
                        last_limits = Instant::now();
                    }
                    if last_log.elapsed() >= Duration::from_secs(10) {
                        let published = self.metrics.published.get();
                        if published != published_at_log {
                            tracing::info!(published = published - published_at_log, confirmed = %self.ack.confirmed(),
                                in_flight = self.ack.events_in_flight(), "progress");
                        }
                        published_at_log = published;
                        last_log = Instant::now();
                    }
                }
                // Once stopping, never polled again: a closed channel is always ready, and
                // select! would spin on it.
                changed = shutdown.changed(), if !stopping => {
                    if changed.is_err() || *shutdown.borrow() {
                        tracing::info!(in_flight = self.ack.events_in_flight(), "shutting down: draining in-flight events");
                        stopping = true;
                    }
                }
            }
            self.flush_marks(false).await?;
            let confirmed = self.ack.confirmed();
            self.metrics.in_flight.set(self.ack.events_in_flight() as i64);
            self.metrics
                .lag_bytes
                .set(server_wal_end.0.saturating_sub(confirmed.0) as i64);
            if confirmed > reported {
                stream.send_status(confirmed, confirmed, confirmed, false).await?;
                self.metrics.confirmed_lsn.set(confirmed.0 as i64);
                reported = confirmed;
            }
            // Every produced event is finished. A transaction still open (its Commit not read) is
            // not confirmed, so the server sends it again next time.
            if stopping && self.ack.events_in_flight() == 0 && self.queued.is_empty() {
                self.producer.flush(Duration::from_secs(10))?;
                tracing::info!(confirmed = %reported, "drained; confirmed and stopping");
                drop(stream);
                return Ok(());
            }
        }
    }

    /// One pgoutput message.
    async fn on_wal(
        &mut self,
        data: &[u8],
        relations: &mut RelationCache,
        open: &mut Option<OpenTxn>,
        recheck_until: Lsn,
    ) -> anyhow::Result<()> {
        match pgoutput::decode(data).context("decoding pgoutput")? {
            LogicalMessage::Begin(b) => {
                if open.is_some() {
                    bail!("Begin inside a transaction");
                }
                let commit_time = pgoutput::pg_timestamp_to_utc(b.commit_time);
                *open = Some(OpenTxn {
                    id: self.ack.open(commit_time),
                    commit_time,
                    recheck: b.final_lsn < recheck_until,
                    chunk: Vec::new(),
                    chunk_bytes: 0,
                });
            }
            LogicalMessage::Relation(r) => relations.insert(r),
            LogicalMessage::Insert(insert) => {
                let row = relations.row(&insert)?;
                if row.relation().name != "outbox_events" {
                    return Ok(());
                }
                let txn = open.as_mut().context("Insert outside a transaction")?;
                match event::from_row(&row) {
                    Ok(e) if e.status == "new" || e.status == "processing" => {
                        self.add_to_chunk(txn, e.envelope, Source::Row).await?
                    }
                    Ok(_) => {} // inserted as sent or failed: nothing to publish
                    Err(err) => match event::row_id(&row) {
                        Some(id) => {
                            tracing::error!(event_id = %id, error = %err, "outbox row cannot be published; marking it failed");
                            self.metrics
                                .publish_errors
                                .with_label_values(&["invalid_row"])
                                .inc();
                            self.marks
                                .send(MarkRequest::Failed {
                                    id,
                                    aggregate_id: None,
                                    error: err.to_string(),
                                    txn: None,
                                })
                                .await?;
                        }
                        None => bail!("outbox row without a readable id: {err}"),
                    },
                }
            }
            LogicalMessage::Message(m) if m.prefix == self.message_prefix => {
                match event::from_message(m.content) {
                    Ok(envelope) if m.transactional => match open.as_mut() {
                        Some(txn) => self.add_to_chunk(txn, envelope, Source::Message).await?,
                        None => bail!("transactional message outside a transaction"),
                    },
                    Ok(envelope) => {
                        let txn = self.ack.push(m.lsn, 1, None);
                        self.submit(Outgoing {
                            txn,
                            envelope,
                            source: Source::Message,
                            commit_time: None,
                        })
                        .await;
                    }
                    Err(err) => {
                        // Nothing to mark: the message has no row. Say it loudly and count it.
                        tracing::error!(lsn = %m.lsn, error = %err, "logical message with prefix {} is not an envelope; skipped", m.prefix);
                        self.metrics
                            .publish_errors
                            .with_label_values(&["invalid_message"])
                            .inc();
                    }
                }
            }
            LogicalMessage::Message(_) | LogicalMessage::Skipped(_) => {}
            LogicalMessage::Commit(c) => {
                let mut txn = open.take().context("Commit without Begin")?;
                self.produce_chunk(&mut txn).await?;
                self.ack.seal(txn.id, c.end_lsn);
                tracing::trace!(lsn = %c.end_lsn, "transaction committed");
            }
        }
        Ok(())
    }

    /// Adds an event to the open transaction's chunk, producing the chunk when it is full.
    async fn add_to_chunk(
        &mut self,
        txn: &mut OpenTxn,
        envelope: Envelope,
        source: Source,
    ) -> anyhow::Result<()> {
        // Payload and fields dominate the record; an estimate is enough to bound the chunk.
        txn.chunk_bytes += approx_json_len(&envelope.payload) + envelope.aggregate_id.len() + 200;
        txn.chunk.push((envelope, source));
        if txn.chunk.len() >= CHUNK_EVENTS || txn.chunk_bytes >= CHUNK_BYTES {
            self.produce_chunk(txn).await?;
        }
        Ok(())
    }

    /// Produces the open transaction's chunk (rows an earlier run already finished skipped).
    async fn produce_chunk(&mut self, txn: &mut OpenTxn) -> anyhow::Result<()> {
        let mut events = std::mem::take(&mut txn.chunk);
        txn.chunk_bytes = 0;
        if events.is_empty() {
            return Ok(());
        }
        if txn.recheck {
            let done = self.already_finished(&events).await?;
            if !done.is_empty() {
                self.metrics.skipped.inc_by(done.len() as u64);
                events.retain(|(e, s)| *s == Source::Message || !done.contains(&e.id));
            }
        }
        self.ack.add(txn.id, events.len());
        for (envelope, source) in events {
            self.submit(Outgoing {
                txn: txn.id,
                envelope,
                source,
                commit_time: txn.commit_time,
            })
            .await;
        }
        Ok(())
    }

    /// Rows of a resent transaction that an earlier run already sent (or failed).
    async fn already_finished(&self, events: &[(Envelope, Source)]) -> anyhow::Result<HashSet<Uuid>> {
        let ids: Vec<Uuid> = events
            .iter()
            .filter(|(_, s)| *s == Source::Row)
            .map(|(e, _)| e.id)
            .collect();
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let done: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM outbox_events WHERE id = ANY($1) AND status IN ('sent', 'failed')",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(done.into_iter().collect())
    }

    /// Produces one event, or parks it behind its aggregate's failed event, or queues it when
    /// the producer is full.
    async fn submit(&mut self, out: Outgoing) {
        if !self.queued.is_empty() {
            self.queued.push_back(out);
            return;
        }
        if self.is_parked(&out.envelope.aggregate_id).await {
            let reason = format!(
                "parked: an earlier event of aggregate {} failed to publish",
                out.envelope.aggregate_id
            );
            self.fail(out.txn, out.envelope, out.source, reason).await;
            return;
        }
        if !self.try_send(&out) {
            self.queued.push_back(out);
        }
    }

    /// Sends queued events while the producer accepts them.
    fn send_queued(&mut self) {
        while let Some(out) = self.queued.pop_front() {
            if !self.try_send(&out) {
                self.queued.push_front(out);
                return;
            }
        }
    }

    /// Hands an event to the producer. `false`: the producer queue is full, keep the event.
    fn try_send(&mut self, out: &Outgoing) -> bool {
        let token = self.next_token;
        let value = out.envelope.to_json();
        match self.producer.send(token, &out.envelope, &value) {
            Ok(()) => {
                self.next_token += 1;
                self.health.produced(self.in_flight.len());
                self.bytes_in_flight += value.len();
                tracing::trace!(event_id = %out.envelope.id, aggregate_id = %out.envelope.aggregate_id, "produced");
                self.in_flight.insert(
                    token,
                    InFlight {
                        txn: out.txn,
                        id: out.envelope.id,
                        source: out.source,
                        commit_time: out.commit_time,
                        envelope: (out.source == Source::Message).then(|| Box::new(out.envelope.clone())),
                        aggregate_id: out.envelope.aggregate_id.clone(),
                        bytes: value.len(),
                    },
                );
                true
            }
            Err(SendError::QueueFull) => false,
            Err(SendError::Permanent(e)) => {
                self.metrics
                    .publish_errors
                    .with_label_values(&[error_kind(&e)])
                    .inc();
                let envelope = &out.envelope;
                self.parked.insert(envelope.aggregate_id.clone(), false);
                tracing::error!(event_id = %envelope.id, aggregate_id = %envelope.aggregate_id, error = %e, "event failed permanently; parking its aggregate");
                let request = failure_request(
                    out.txn,
                    envelope.clone(),
                    out.source,
                    format!("Kafka refused the event: {e}"),
                );
                if let Err(mpsc::error::TrySendError::Full(request)) = self.marks.try_send(request) {
                    // The marker is busy: hand it over from a task; the event's transaction
                    // is not confirmed until the marker reports it done.
                    let marks = self.marks.clone();
                    tokio::spawn(async move { marks.send(request).await });
                }
                true
            }
        }
    }

    async fn on_delivery(&mut self, d: Delivery) -> anyhow::Result<()> {
        let f = self
            .in_flight
            .remove(&d.token)
            .context("delivery report for an unknown event")?;
        self.health.delivered();
        self.bytes_in_flight -= f.bytes;
        match d.result {
            Ok((partition, offset)) => {
                self.metrics.published.inc();
                if let Some(t) = f.commit_time {
                    let secs = (Utc::now() - t).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                    self.metrics.commit_to_ack.observe(secs);
                }
                tracing::trace!(event_id = %f.id, partition, offset, "acknowledged");
                match f.source {
                    Source::Row => {
                        self.to_mark.0.push(f.id);
                        self.to_mark.1.push(f.txn);
                        self.first_unmarked.get_or_insert_with(Instant::now);
                    }
                    Source::Message => self.ack.done(f.txn),
                }
                Ok(())
            }
            Err(e) if producer::is_permanent(&e) => {
                self.metrics
                    .publish_errors
                    .with_label_values(&[error_kind(&e)])
                    .inc();
                tracing::error!(event_id = %f.id, aggregate_id = %f.aggregate_id, error = %e, "Kafka rejected the event; parking its aggregate");
                self.parked.insert(f.aggregate_id.clone(), false);
                let request = match f.envelope {
                    Some(envelope) => MarkRequest::ParkMessage {
                        envelope,
                        error: e.to_string(),
                        txn: f.txn,
                    },
                    None => MarkRequest::Failed {
                        id: f.id,
                        aggregate_id: Some(f.aggregate_id),
                        error: format!("Kafka rejected the event: {e}"),
                        txn: Some(f.txn),
                    },
                };
                self.marks.send(request).await?;
                Ok(())
            }
            // Not confirmed, so the server resends it: reconnect rather than reorder.
            Err(e) => bail!("Kafka delivery failed ({e}); restarting from the slot's confirmed position"),
        }
    }

    fn on_marked(&mut self, done: MarkDone) {
        self.metrics.marked.inc_by(done.rows as u64);
        for aggregate in done.parked {
            self.parked.insert(aggregate, true);
        }
        for txn in done.txns {
            self.ack.done(txn);
        }
    }

    /// Sends the waiting delivered rows to the marker when the batch is full, or (with `due`)
    /// when its first row has waited a mark interval.
    async fn flush_marks(&mut self, due: bool) -> anyhow::Result<()> {
        let waited = self
            .first_unmarked
            .is_some_and(|t| t.elapsed() >= self.mark_interval);
        let full = self.to_mark.0.len() >= self.mark_batch;
        // Every outstanding event is delivered and only awaits the mark: no reason to wait.
        let all_delivered = !self.to_mark.0.is_empty() && self.ack.events_in_flight() == self.to_mark.0.len();
        if full || (due && (waited || all_delivered)) {
            let (ids, txns) = std::mem::take(&mut self.to_mark);
            self.first_unmarked = None;
            self.marks.send(MarkRequest::Sent { ids, txns }).await?;
        }
        Ok(())
    }

    /// Is this aggregate held back? A committed park is re-checked against the database, where
    /// `republish` lifts it (a primary-key lookup, and only for events of parked aggregates).
    async fn is_parked(&mut self, aggregate_id: &str) -> bool {
        match self.parked.get(aggregate_id) {
            None => return false,
            Some(false) => return true,
            Some(true) => {}
        }
        let still: Result<bool, _> = sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM outbox_parked_aggregates WHERE aggregate_id = {})",
            mark::park_key_sql("$1")
        ))
        .bind(aggregate_id)
        .fetch_one(&self.pool)
        .await;
        match still {
            Ok(false) => {
                tracing::info!(
                    aggregate_id,
                    "aggregate no longer parked; publishing its events again"
                );
                self.parked.remove(aggregate_id);
                false
            }
            // Parked, or unsure: keep it parked, which never breaks order.
            Ok(true) | Err(_) => true,
        }
    }

    async fn fail(&mut self, txn: TxnId, envelope: Envelope, source: Source, reason: String) {
        self.metrics.publish_errors.with_label_values(&["parked"]).inc();
        outbox::warn_throttled!(Duration::from_secs(1), event_id = %envelope.id, aggregate_id = %envelope.aggregate_id, "{reason}");
        // The marker finishes the event once the failure is recorded.
        let _ = self
            .marks
            .send(failure_request(txn, envelope, source, reason))
            .await;
    }
}

/// Roughly the serialized size of a JSON value, without serializing it.
fn approx_json_len(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 12,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => 2 + a.iter().map(|v| approx_json_len(v) + 1).sum::<usize>(),
        Value::Object(o) => {
            2 + o
                .iter()
                .map(|(k, v)| k.len() + 4 + approx_json_len(v))
                .sum::<usize>()
        }
    }
}

fn failure_request(txn: TxnId, envelope: Envelope, source: Source, error: String) -> MarkRequest {
    match source {
        Source::Row => MarkRequest::Failed {
            id: envelope.id,
            aggregate_id: Some(envelope.aggregate_id),
            error,
            txn: Some(txn),
        },
        Source::Message => MarkRequest::ParkMessage {
            envelope: Box::new(envelope),
            error,
            txn,
        },
    }
}

pub(crate) fn error_kind(e: &rdkafka::error::KafkaError) -> &'static str {
    use rdkafka::types::RDKafkaErrorCode::*;
    match e.rdkafka_error_code() {
        Some(MessageSizeTooLarge | InvalidMessageSize | MessageBatchTooLarge) => "message_too_large",
        Some(TopicAuthorizationFailed) => "authorization",
        Some(UnknownTopic | UnknownTopicOrPartition | InvalidTopic) => "topic",
        _ => "other",
    }
}

/// Samples `outbox_relay_rows_not_sent` every 30 s (a sequential scan: cheap on a table whose
/// sent rows are pruned, and kept off the hot path either way).
pub(crate) async fn sample_rows_not_sent(pool: PgPool, metrics: Metrics) {
    loop {
        if let Ok(n) =
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox_events WHERE status <> 'sent'")
                .fetch_one(&pool)
                .await
        {
            metrics.rows_not_sent.set(n);
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}
