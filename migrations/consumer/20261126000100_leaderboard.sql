-- The leaderboard: the projection written by the consumer's leaderboard handler (game.finished).
-- It changes only in the transaction that inserts the event's consumed_events row, so an event's
-- effects exist exactly when that row does.

-- One row per finished game. The game id is the key: a game is counted once even when two
-- different events (different ids) report it finished.
CREATE TABLE leaderboard_games (
    game_id     text        PRIMARY KEY CHECK (game_id <> ''),
    chat_id     bigint      NOT NULL,
    winner_id   text,
    players     integer     NOT NULL CHECK (players >= 0),
    -- The game.finished event's created_at.
    finished_at timestamptz NOT NULL,
    event_id    uuid        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- Cross-game totals per player. No index besides the key: every finished game updates these
-- rows, and without an index on the updated columns those updates stay HOT.
CREATE TABLE leaderboard_players (
    player_id    text        PRIMARY KEY CHECK (player_id <> ''),
    name         text        NOT NULL,
    games_played integer     NOT NULL CHECK (games_played >= 0),
    wins         integer     NOT NULL CHECK (wins >= 0 AND wins <= games_played),
    updated_at   timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 80);

COMMENT ON TABLE leaderboard_players IS
    'Written by the consumer from game.finished events; read through the leaderboard view.';

-- What the bot's /leaderboard shows: most wins first, then most games played.
CREATE VIEW leaderboard AS
    SELECT rank() OVER (ORDER BY wins DESC, games_played DESC) AS rank,
           player_id, name, games_played AS games, wins
    FROM leaderboard_players
    ORDER BY wins DESC, games_played DESC, name, player_id;
