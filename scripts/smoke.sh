#!/usr/bin/env bash
# The seed's smoke steps 0-6 as one command:
#   0 prerequisites, 1 services up, 2 migrations, 3 relay-cdc + consumer started,
#   4 the seed's INSERT, 5 the row is sent, 6 the consumer recorded it in consumed_events,
#   then the consumer's [metrics] line.
# Local services (no Docker) by default; --compose runs the same steps with docker compose
# (Compose v2, `docker compose`, or v1, `docker-compose`: under Podman, see scripts/test-compose).
# Prints [OK]/[FAIL] per step, exits non-zero on failure, stops what it started unless --keep.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KEEP=false
COMPOSE=false
UI=true
for a in "$@"; do
  case "$a" in
    --keep) KEEP=true ;;
    --compose) COMPOSE=true ;;
    --no-ui) UI=false ;;
    -h|--help)
      echo "usage: scripts/smoke.sh [--keep] [--compose [--no-ui]]"
      echo "  --keep     leave services, relay and consumer running afterwards"
      echo "  --compose  use docker compose (pg, kafka, kafka-ui, migrator, relay, consumer) instead of local services"
      echo "  --no-ui    with --compose: do not start kafka-ui"
      exit 0 ;;
    *) echo "unknown argument: $a (try --help)" >&2; exit 2 ;;
  esac
done

ok() { printf '[OK]   step %s: %s\n' "$1" "$2"; }
fail() { printf '[FAIL] step %s: %s\n' "$1" "$2"; exit 1; }
# Announces a step that can take minutes, so a silent terminal is not mistaken for a hang.
long() { printf '[..]   step %s: %s\n' "$1" "$2"; }

SEED_INSERT_FILE=scripts/sql/seed-step4-insert.sql  # the seed's step-4 INSERT, verbatim
STEP5_SQL="SELECT id, status, publish_attempts, last_error, published_at FROM outbox_events ORDER BY created_at DESC LIMIT 1;"
STEP6_SQL="SELECT event_id, event_type, topic, partition, kafka_offset, consumed_at FROM consumed_events ORDER BY consumed_at DESC NULLS LAST LIMIT 10;"

# Is the relay's /readyz 200? (bash's /dev/tcp: no HTTP client needed)
relay_ready() {
  local status
  status=$( (exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3 && head -1 <&3) 2>/dev/null || true)
  [[ "$status" == *" 200 "* ]]
}

# Waits up to $2 seconds for `sql $1` to print something non-empty.
wait_for() {
  local query=$1 secs=$2 i out
  for i in $(seq 1 $((secs * 5))); do
    out=$(sql -qAtc "$query" 2>/dev/null || true)
    [ -n "$out" ] && { echo "$out"; return 0; }
    sleep 0.2
  done
  return 1
}

if $COMPOSE; then
  # Compose v2 (`docker compose`) when the plugin is there, else v1 (`docker-compose`).
  if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
    compose() { docker compose "$@"; }
  elif command -v docker-compose >/dev/null; then
    compose() { docker-compose "$@"; }
  else
    fail 0 "neither docker compose nor docker-compose found (install Docker with the compose plugin)"
  fi
  ok 0 "$(compose version | head -1)"
  sql() { compose exec -T pg psql -U postgres -d bot_game_test "$@"; }
  cleanup() { local rc=$?; $KEEP || compose stop relay consumer >/dev/null 2>&1 || true; exit $rc; }
  trap cleanup EXIT INT TERM
  infra=(pg kafka)
  $UI && infra+=(kafka-ui)
  # Waits until every named service's container reports healthy (v1 has no `up --wait`).
  wait_healthy() {
    local svc id state
    for _ in $(seq 1 120); do
      state=healthy
      for svc in "$@"; do
        id=$(compose ps -q "$svc")
        [ -n "$id" ] || { state=missing; break; }
        case "$(compose ps "$svc" | tail -n +3)" in
          *"(healthy)"*) ;;
          *) state=waiting; break ;;
        esac
      done
      [ "$state" = healthy ] && return 0
      sleep 2
    done
    return 1
  }
  long 1 "starting ${infra[*]} (first start of Kafka and PostgreSQL takes a minute)"
  if compose up --help | grep -q -- '--wait'; then
    compose up -d --wait "${infra[@]}" || fail 1 "compose up ${infra[*]}"
  else
    compose up -d "${infra[@]}" || fail 1 "compose up ${infra[*]}"
    wait_healthy pg kafka || { compose ps; fail 1 "pg and kafka not healthy within 4 min"; }
  fi
  ok 1 "${infra[*]} up"
  long 2 "compose run --rm migrator (builds the image first if it is missing: a release build, many minutes the first time)"
  compose run --rm migrator || fail 2 "compose run --rm migrator"
  sql -c "SELECT tablename FROM pg_tables WHERE schemaname='public' ORDER BY 1;"
  ok 2 "migrations applied"
  long 3 "compose up -d --build relay consumer (rebuilds the image when the sources changed)"
  compose up -d --build relay consumer || fail 3 "compose up relay consumer"
  ok 3 "relay and consumer started"
  consumer_log() { compose logs consumer; }
else
  for c in cargo java mvn /usr/lib/postgresql/15/bin/postgres psql; do
    command -v "$c" >/dev/null || fail 0 "$c not found (see README, requirements)"
  done
  ok 0 "cargo, java, mvn, PostgreSQL 15 binaries present"

  pg_was_up=false; kafka_was_up=false
  # Read the status first: `status | grep -q` under pipefail can fail with SIGPIPE even on a match.
  services_status=$(scripts/services status)
  grep -q 'PostgreSQL: running' <<<"$services_status" && pg_was_up=true
  grep -q 'Kafka: running' <<<"$services_status" && kafka_was_up=true
  RUN_DIR=.services/smoke
  mkdir -p "$RUN_DIR"
  relay_pid=""; consumer_pid=""
  cleanup() {
    local rc=$?
    if ! $KEEP; then
      [ -n "$consumer_pid" ] && kill "$consumer_pid" 2>/dev/null && wait "$consumer_pid" 2>/dev/null
      [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null && wait "$relay_pid" 2>/dev/null
      # The slot pins WAL while it exists; the next run recreates it (rows already sent are skipped).
      [ -n "$relay_pid" ] && target/release/relay-cdc slot drop >/dev/null 2>&1
      $kafka_was_up || scripts/services kafka-down >/dev/null || true
      $pg_was_up || scripts/services pg-down >/dev/null || true
    fi
    [ $rc -ne 0 ] && echo "logs: $RUN_DIR/relay.log $RUN_DIR/consumer.log"
    exit $rc
  }
  trap cleanup EXIT INT TERM

  scripts/services up || fail 1 "scripts/services up"
  eval "$(scripts/services env)"
  export DATABASE_URL KAFKA_BOOTSTRAP_SERVERS
  sql() { psql "$DATABASE_URL" "$@"; }
  ok 1 "PostgreSQL and Kafka up ($DATABASE_URL, $KAFKA_BOOTSTRAP_SERVERS)"

  long 2 "cargo build --release -p relay-cdc -p consumer -p bot (several minutes the first time)"
  cargo build --release --locked -p relay-cdc -p consumer -p bot || fail 2 "cargo build"
  # Each binary migrates what it owns: the outbox, consumed_events + leaderboard, the game.
  for bin in relay-cdc consumer bot; do
    target/release/$bin migrate || fail 2 "$bin migrate"
  done
  sql -c "SELECT tablename FROM pg_tables WHERE schemaname='public' ORDER BY 1;"
  sql -c "SELECT table_name FROM information_schema.views WHERE table_schema='public' ORDER BY 1;"
  ok 2 "migrations applied"

  target/release/relay-cdc run --metrics-addr 127.0.0.1:9464 >"$RUN_DIR/relay.log" 2>&1 &
  relay_pid=$!
  target/release/consumer run --metrics-addr 127.0.0.1:9465 --metrics-log-secs 1 >"$RUN_DIR/consumer.log" 2>&1 &
  consumer_pid=$!
  for i in $(seq 1 150); do
    relay_ready && break
    kill -0 "$relay_pid" 2>/dev/null || { tail -5 "$RUN_DIR/relay.log"; fail 3 "relay-cdc exited"; }
    sleep 0.2
  done
  relay_ready || fail 3 "relay-cdc not ready after 30 s (see $RUN_DIR/relay.log)"
  kill -0 "$consumer_pid" 2>/dev/null || { tail -5 "$RUN_DIR/consumer.log"; fail 3 "consumer exited"; }
  ok 3 "relay-cdc (pid $relay_pid, :9464) streaming and consumer (pid $consumer_pid, :9465) running"
  consumer_log() { cat "$RUN_DIR/consumer.log"; }
fi

# 4) the seed's INSERT, verbatim
sql -v ON_ERROR_STOP=1 <"$SEED_INSERT_FILE" || fail 4 "INSERT"
sql -c "SELECT id, status, created_at, idempotency_key FROM outbox_events ORDER BY created_at DESC LIMIT 5;"
last_id=$(sql -qAtc "SELECT id FROM outbox_events ORDER BY created_at DESC LIMIT 1")
ok 4 "event $last_id inserted into outbox_events"

# 5) the relay marked it sent
wait_for "SELECT 1 FROM outbox_events WHERE id = '$last_id' AND status = 'sent' AND published_at IS NOT NULL" 30 >/dev/null \
  || { sql -c "$STEP5_SQL"; fail 5 "event $last_id not sent within 30 s"; }
sql -c "$STEP5_SQL"
ok 5 "status = sent, published_at set"

# 6) the consumer recorded it
wait_for "SELECT 1 FROM consumed_events WHERE event_id = '$last_id' AND topic = 'game-events' AND event_type = 'game.finished'" 30 >/dev/null \
  || fail 6 "event $last_id not in consumed_events within 30 s"
sql -c "$STEP6_SQL"
ok 6 "consumed_events has event $last_id (topic game-events, game.finished)"

for i in $(seq 1 30); do
  line=$(consumer_log | grep -o '\[metrics\].*' | tail -1 || true)
  case "$line" in *"ok=0 "*|"") sleep 0.5 ;; *) break ;; esac
done
echo "${line:-[metrics] line not found in the consumer log}"
