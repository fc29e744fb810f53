-- Tool calls an answer made through MCP, with the user's decision for writes and the
-- result, so a finished conversation still shows what was looked up and changed.
CREATE TABLE tool_calls (
    id          INTEGER PRIMARY KEY,
    message_id  INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    call_id     TEXT NOT NULL,
    server      TEXT NOT NULL,
    name        TEXT NOT NULL,
    arguments   TEXT NOT NULL,
    writes      INTEGER NOT NULL CHECK (writes IN (0, 1)),
    status      TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed', 'refused')),
    result      TEXT,
    created_at  TEXT NOT NULL,
    finished_at TEXT,
    UNIQUE (message_id, call_id)
);

-- Things the user was told while an answer was written (no token stored, a server down).
ALTER TABLE messages ADD COLUMN notices TEXT;
