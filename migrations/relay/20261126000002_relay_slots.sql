-- relay-cdc's record of the slots it created. A slot whose backlog (the rows its exported
-- snapshot saw) was not fully published when the relay stopped has backlog_done_at NULL: the
-- relay then drops and recreates it, re-scanning every row not yet sent, so nothing written
-- before the slot existed is missed.
CREATE TABLE outbox_relay_slots (
    slot_name        text        PRIMARY KEY,
    consistent_point pg_lsn      NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    backlog_rows     bigint,
    backlog_done_at  timestamptz
);

-- Aggregates whose events are held back because an earlier event of theirs failed permanently
-- (say, larger than the topic allows): per-aggregate order is never broken. The relay adds a
-- row when it parks an aggregate; `relay-cdc republish` re-sends the failed rows in order and
-- removes the row, and the relay lets the aggregate flow again.
CREATE TABLE outbox_parked_aggregates (
    aggregate_id    text        PRIMARY KEY,
    first_failed_id uuid        NOT NULL,
    reason          text        NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT now()
);
