-- Polling fallback (`relay-cdc run --source poll`, for databases without logical replication).
--
-- A poller claims rows by setting status = 'processing'; it stamps the claim time here so that a
-- row whose poller died (claimed, never marked) can be told from one still in flight and is
-- reclaimed after --poll-stale-secs. NULL for rows never claimed, and always NULL in CDC mode.
-- A nullable column without a default is a catalog-only change: no table rewrite.
--
-- Deliberately not indexed: it is written together with status, and an index over it would make
-- those writes non-HOT for everyone. The poll mode brings its own index
-- (outbox_events_poll_idx, created CONCURRENTLY by the poller at startup, not here), so CDC-only
-- databases never pay for it.
ALTER TABLE outbox_events ADD COLUMN processing_since timestamptz;

COMMENT ON COLUMN outbox_events.processing_since IS
    'When a relay-cdc poller (--source poll) claimed the row (status processing); NULL otherwise';
