-- Every attempt to apply a config set: applied ones carry their generation,
-- rejected ones the reason. Read by the admin config page.
CREATE TABLE config_reloads (
    id          INTEGER PRIMARY KEY,
    generation  INTEGER UNIQUE,
    sha256      TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('applied', 'rejected')),
    error       TEXT,
    occurred_at TEXT NOT NULL,
    CHECK ((outcome = 'applied') = (generation IS NOT NULL))
);

CREATE INDEX config_reloads_occurred_at ON config_reloads (occurred_at);
