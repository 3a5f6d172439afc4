-- The consumer's dedup log, owned by the consumer (`consumer migrate`). An event's effects are
-- written in the transaction that inserts its row here, so they exist exactly when the row does.

-- What the consumer has applied (event_id is the primary key) and its Kafka origin.
CREATE TABLE consumed_events (
    event_id     uuid        PRIMARY KEY,
    event_type   text        NOT NULL,
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    kafka_offset bigint      NOT NULL,
    -- When the event was created at the source (envelope created_at), or now() when unknown.
    created_at   timestamptz NOT NULL DEFAULT now(),
    consumed_at  timestamptz NOT NULL DEFAULT now(),
    result       text        NOT NULL DEFAULT 'ok'
                 CONSTRAINT consumed_events_result_check CHECK (result IN ('ok', 'skipped', 'dlq')),
    error        text
);
CREATE INDEX consumed_events_consumed_at_idx ON consumed_events (consumed_at);

-- Operator view.
CREATE VIEW consumer_results AS
    SELECT topic, result, count(*) AS events, max(consumed_at) AS last_consumed_at
    FROM consumed_events
    GROUP BY topic, result
    ORDER BY topic, result;
