-- A user's conversations with the assistant; strictly private to their owner.
CREATE TABLE conversations (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX conversations_user ON conversations (user_id, updated_at);

-- Every message with its outcome. An assistant message is 'streaming' while it is being
-- generated; partial text is flushed as it grows and kept whatever the outcome.
CREATE TABLE messages (
    id                INTEGER PRIMARY KEY,
    conversation_id   INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role              TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content           TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('streaming', 'complete', 'cancelled', 'failed')),
    error             TEXT,
    prompt_name       TEXT,
    endpoint          TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    created_at        TEXT NOT NULL,
    finished_at       TEXT
);
CREATE INDEX messages_conversation ON messages (conversation_id, id);
