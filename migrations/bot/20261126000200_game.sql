-- NeMonopolia (the bot). The engine's state is one serde document; it lives on the game row as
-- JSONB and is the source of truth. Open orders, sealed bids and votum ballots live inside that
-- document: they are per-phase working state the engine clears at resolve, and they change only
-- together with it, so separate tables would be a second copy that could drift. Their history is
-- kept where investigations look: game_audit (every accepted command, as JSON), game_snapshots
-- (the whole state at each phase change) and the outbox (orders.submitted, bid.placed,
-- votum.voted, round.resolved with the revealed orders).
--
-- Every command is one transaction: lock the game row (SELECT ... FOR UPDATE; /startgame locks
-- the chat with an advisory lock instead), apply the engine, write state + players + audit +
-- snapshot + outbox events, commit.

CREATE TABLE games (
    id          uuid        PRIMARY KEY,
    chat_id     bigint      NOT NULL,
    -- Only phases that wait for players are ever stored: income, event and resolve pass within
    -- the command that enters them.
    phase       text        NOT NULL
                CONSTRAINT games_phase_check
                CHECK (phase IN ('lobby', 'world_arena', 'negotiations', 'orders', 'finished')),
    round       integer     NOT NULL CHECK (round >= 0),
    chair_id    bigint      NOT NULL,
    -- The deck's seed (a u64, stored bit for bit); also inside state.
    seed        bigint      NOT NULL,
    -- Accepted commands so far (StartGame is 1); orders game_audit and game_snapshots.
    version     integer     NOT NULL CHECK (version >= 1),
    state       jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CHECK ((phase = 'finished') = (finished_at IS NOT NULL))
);

-- One open game per chat: a second /startgame cannot slip past the advisory lock either.
CREATE UNIQUE INDEX games_one_open_per_chat ON games (chat_id) WHERE phase <> 'finished';
-- "The chat's latest game" (every command starts with it).
CREATE INDEX games_chat_latest ON games (chat_id, created_at DESC);

-- The players and their public and private figures, as of the last command: a projection of
-- games.state for SQL readers, rewritten in the same transaction.
CREATE TABLE players (
    game_id    uuid        NOT NULL REFERENCES games (id) ON DELETE CASCADE,
    player_id  bigint      NOT NULL,
    name       text        NOT NULL,
    username   text,
    country    text        NOT NULL,
    seat       integer     NOT NULL CHECK (seat >= 1),
    coins      bigint      NOT NULL CHECK (coins >= 0),
    economy    bigint      NOT NULL,
    stability  bigint      NOT NULL,
    influence  bigint      NOT NULL CHECK (influence >= 0),
    fallen     boolean     NOT NULL,
    ready      boolean     NOT NULL,
    is_chair   boolean     NOT NULL,
    joined_at  timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (game_id, player_id),
    UNIQUE (game_id, seat)
);
CREATE INDEX players_player_id_idx ON players (player_id);

-- Who did what, when: one row per accepted state-changing command. Folding `command` (with
-- `actor`) in `seq` order over the first snapshot rebuilds the game.
CREATE TABLE game_audit (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    game_id    uuid        NOT NULL REFERENCES games (id) ON DELETE CASCADE,
    seq        integer     NOT NULL CHECK (seq >= 1),
    chat_id    bigint      NOT NULL,
    actor_id   bigint      NOT NULL,
    -- The engine's Actor (id, name, username) as the command saw it.
    actor      jsonb       NOT NULL,
    -- The engine's Command, tagged JSON ({"type": "give", "to": "@bob", "amount": 5}).
    command    jsonb       NOT NULL,
    -- Where the command came from: 'telegram' (update_id set), 'console', ...
    source     text        NOT NULL,
    update_id  bigint,
    -- Phase and round before and after, event types, the money ledger.
    outcome    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (game_id, seq)
);
CREATE INDEX game_audit_actor_idx ON game_audit (actor_id, created_at);

-- The whole state at key steps: game creation, every phase change, every resolve, the finish.
CREATE TABLE game_snapshots (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    game_id    uuid        NOT NULL REFERENCES games (id) ON DELETE CASCADE,
    -- The game's version the snapshot shows (the audit row with this seq produced it).
    seq        integer     NOT NULL CHECK (seq >= 1),
    round      integer     NOT NULL,
    phase      text        NOT NULL,
    -- 'created' | 'phase' | 'resolve' | 'finished'
    reason     text        NOT NULL,
    state      jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (game_id, seq)
);

-- Telegram redelivers an update when the bot dies before confirming it: a state-changing update
-- is recorded in the transaction that handled it (accepted or refused), and a redelivered one
-- changes and emits nothing.
CREATE TABLE processed_updates (
    update_id    bigint      PRIMARY KEY,
    chat_id      bigint      NOT NULL,
    game_id      uuid,
    accepted     boolean     NOT NULL,
    refusal      text,
    processed_at timestamptz NOT NULL DEFAULT now()
);
