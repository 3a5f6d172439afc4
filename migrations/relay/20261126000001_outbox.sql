-- The transactional outbox, owned by relay-cdc (`relay-cdc migrate`; `relay-cdc schema` prints this
-- SQL for teams that migrate with their own tool). Column names are the seed's: its manual INSERT
-- and SELECTs run verbatim.
--
-- Marking a row `sent` is the relay's main write. To keep it a HOT update (no new index entries,
-- about half the WAL), no index covers the columns the relay updates (status, published_at,
-- publish_attempts, last_error), and pages keep free space for the new row versions: a row is
-- updated about once, so half of each page is left for its second version (measured: with
-- fillfactor 70 only 42% of a 5000-row batch mark is HOT, with 50 all of it is).
CREATE TABLE outbox_events (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    event_type       text        NOT NULL CHECK (event_type <> ''),
    aggregate_type   text        NOT NULL CHECK (aggregate_type <> ''),
    aggregate_id     text        NOT NULL CHECK (aggregate_id <> ''),
    payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    publish_attempts integer     NOT NULL DEFAULT 0 CHECK (publish_attempts >= 0),
    last_error       text,
    published_at     timestamptz,
    idempotency_key  text,
    status           text        NOT NULL DEFAULT 'new'
                     CONSTRAINT outbox_events_status_check
                     CHECK (status IN ('new', 'processing', 'sent', 'failed')),
    -- Insertion order. Rows of one transaction share created_at; the backlog scan and
    -- `republish` replay rows in this order so per-aggregate order holds.
    seq              bigint      GENERATED ALWAYS AS IDENTITY,
    CONSTRAINT outbox_events_idempotency_key_key UNIQUE (idempotency_key)
) WITH (fillfactor = 50);

COMMENT ON TABLE outbox_events IS
    'Transactional outbox: rows are inserted with domain changes; relay-cdc publishes them to Kafka and marks them sent.';
COMMENT ON COLUMN outbox_events.status IS 'new | processing | sent | failed (not indexed, so marking sent stays a HOT update)';

-- The seed's "latest events" queries order by created_at; created_at never changes after insert,
-- so this index does not prevent HOT updates.
CREATE INDEX outbox_events_created_at_idx ON outbox_events (created_at);

-- Operator views.
CREATE VIEW outbox_pending AS
    SELECT id, event_type, aggregate_type, aggregate_id, status, publish_attempts, last_error,
           created_at, now() - created_at AS age
    FROM outbox_events
    WHERE status <> 'sent'
    ORDER BY created_at;

CREATE VIEW outbox_status_counts AS
    SELECT s.status, count(e.id) AS events
    FROM (VALUES ('new'), ('processing'), ('sent'), ('failed')) AS s(status)
    LEFT JOIN outbox_events e ON e.status = s.status
    GROUP BY s.status
    ORDER BY s.status;

CREATE VIEW outbox_oldest_pending AS
    SELECT min(created_at) AS oldest_created_at,
           coalesce(now() - min(created_at), interval '0') AS oldest_age,
           count(*) AS pending
    FROM outbox_events
    WHERE status <> 'sent';

-- relay-cdc streams inserts only: marking rows sent must not come back through the slot.
CREATE PUBLICATION outbox_pub FOR TABLE outbox_events WITH (publish = 'insert');
