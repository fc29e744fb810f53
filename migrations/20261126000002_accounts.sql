-- People who can sign in. Usernames compare case-insensitively.
CREATE TABLE users (
    id                  INTEGER PRIMARY KEY,
    username            TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash       TEXT NOT NULL,
    role                TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    disabled            INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at          TEXT NOT NULL,
    password_changed_at TEXT NOT NULL
);

-- Server-side session records: a session cookie is only honoured while its row is
-- live, so logout, disabling a user and a password change end sessions at once.
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,            -- the JWT's jti
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    expires_at   TEXT NOT NULL,               -- sliding: moved forward on activity
    revoked_at   TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Personal access tokens, sealed with AES-256-GCM; never stored in clear.
CREATE TABLE credentials (
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service    TEXT NOT NULL CHECK (service IN ('jira', 'confluence')),
    key_id     TEXT NOT NULL,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    hint       TEXT NOT NULL,                 -- last four characters, for display
    updated_at TEXT NOT NULL,
    PRIMARY KEY (user_id, service)
);

-- Who did what, from where, with what outcome.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    occurred_at TEXT NOT NULL,
    actor       TEXT,                         -- username; NULL for the system
    action      TEXT NOT NULL,                -- e.g. login, token.set, user.disable
    target      TEXT,
    client_addr TEXT,
    outcome     TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    detail      TEXT
);
CREATE INDEX audit_log_action ON audit_log (action, id);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
