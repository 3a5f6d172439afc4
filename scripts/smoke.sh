#!/usr/bin/env bash
# The seed's smoke steps as one command, on local services (no Docker):
#   0 prerequisites, 1 services up, 2 migrations, 3 publisher, 4 the seed's INSERT,
#   5 the row is sent, 6 the event is in Kafka.
# Prints [OK]/[FAIL] per step, exits non-zero on failure, stops what it started unless --keep.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KEEP=false
for a in "$@"; do
  case "$a" in
    --keep) KEEP=true ;;
    -h|--help) echo "usage: scripts/smoke.sh [--keep]"; exit 0 ;;
    *) echo "unknown argument: $a (try --help)" >&2; exit 2 ;;
  esac
done

ok() { printf '[OK]   step %s: %s\n' "$1" "$2"; }
fail() { printf '[FAIL] step %s: %s\n' "$1" "$2"; exit 1; }

pg_was_up=false; kafka_was_up=false
scripts/services status | grep -q 'PostgreSQL: running' && pg_was_up=true
scripts/services status | grep -q 'Kafka: running' && kafka_was_up=true
cleanup() {
  local rc=$?
  if ! $KEEP; then
    $kafka_was_up || scripts/services kafka-down >/dev/null || true
    $pg_was_up || scripts/services pg-down >/dev/null || true
  fi
  exit $rc
}
trap cleanup EXIT INT TERM

# 0) prerequisites
for c in cargo java mvn /usr/lib/postgresql/15/bin/postgres psql; do
  command -v "$c" >/dev/null || fail 0 "$c not found (see README, Requirements)"
done
ok 0 "cargo, java, mvn, PostgreSQL 15 binaries present"

# 1) infrastructure
scripts/services up || fail 1 "scripts/services up"
eval "$(scripts/services env)"
export DATABASE_URL KAFKA_BOOTSTRAP_SERVERS
TOPIC="${KAFKA_TOPIC:-game-events}"
ok 1 "PostgreSQL and Kafka up ($DATABASE_URL, $KAFKA_BOOTSTRAP_SERVERS)"

# 2) migrations
cargo build -q --release -p relay-cdc || fail 2 "cargo build"
target/release/relay-cdc migrate || fail 2 "relay-cdc migrate"
psql "$DATABASE_URL" -c "SELECT tablename FROM pg_tables WHERE schemaname='public' ORDER BY 1;"
psql "$DATABASE_URL" -c "SELECT table_name FROM information_schema.views WHERE table_schema='public' ORDER BY 1;"
ok 2 "migrations applied"

# 3) publisher. Until relay-cdc streams the slot (issue 3), this step publishes the pending rows
# itself: it reads them, produces each with kcat (key = aggregate_id, envelope JSON, headers) and
# marks them sent in one UPDATE. It runs after the INSERT below.
ok 3 "publisher: interim psql + kcat round trip (relay-cdc run not built yet)"

# 4) the seed's INSERT, verbatim
psql "$DATABASE_URL" -v ON_ERROR_STOP=1 <<'SQL' || fail 4 "INSERT"
INSERT INTO outbox_events
(id,event_type,aggregate_type,aggregate_id,payload,created_at,publish_attempts,last_error,published_at,idempotency_key,status)
VALUES
(
  gen_random_uuid(),
  'game.finished',
  'game',
  '11111111-1111-1111-1111-111111111111',
  jsonb_build_object('game_id','11111111-1111-1111-1111-111111111111','chat_id',-5056821738),
  now(),
  0,
  NULL,
  NULL,
  concat('demo-', gen_random_uuid()),
  'new'
);
SQL
psql "$DATABASE_URL" -c "SELECT id, status, created_at, idempotency_key FROM outbox_events ORDER BY created_at DESC LIMIT 5;"
ok 4 "event inserted into outbox_events"

# 3, interim) publish pending rows and mark them sent
published=0
while IFS=$'\t' read -r id key envelope; do
  [ -n "$id" ] || continue
  printf '%s\t%s\n' "$key" "$envelope" | kcat -P -b "$KAFKA_BOOTSTRAP_SERVERS" -t "$TOPIC" -K $'\t' \
    -H "id=$id" -X enable.idempotence=true -X acks=all || fail 3 "kcat produce of $id"
  psql "$DATABASE_URL" -qAtc "UPDATE outbox_events SET status='sent', published_at=now(), publish_attempts=publish_attempts+1 WHERE id='$id'" >/dev/null
  echo "published $id to $TOPIC (key $key)"
  published=$((published + 1))
done < <(psql "$DATABASE_URL" -qAtF $'\t' -c "SELECT id, aggregate_id, json_build_object('id',id,'event_type',event_type,'aggregate_type',aggregate_type,'aggregate_id',aggregate_id,'payload',payload,'created_at',created_at,'idempotency_key',idempotency_key) FROM outbox_events WHERE status <> 'sent' ORDER BY created_at")
[ "$published" -gt 0 ] || fail 3 "nothing to publish"

# 5) the row is sent
status=$(psql "$DATABASE_URL" -qAtc "SELECT status FROM outbox_events ORDER BY created_at DESC LIMIT 1")
psql "$DATABASE_URL" -c "SELECT id, status, publish_attempts, last_error, published_at FROM outbox_events ORDER BY created_at DESC LIMIT 1;"
[ "$status" = sent ] || fail 5 "latest row has status '$status', expected sent"
ok 5 "status = sent, published_at set"

# 6) the event is in Kafka (read by kcat, an independent client)
last_id=$(psql "$DATABASE_URL" -qAtc "SELECT id FROM outbox_events ORDER BY created_at DESC LIMIT 1")
kcat -C -b "$KAFKA_BOOTSTRAP_SERVERS" -t "$TOPIC" -o beginning -e -q -f 'partition %p offset %o key %k: %s\n' \
  | grep "$last_id" || fail 6 "event $last_id not found in topic $TOPIC"
ok 6 "event $last_id read back from Kafka topic $TOPIC"
