-- Where a job's succeeded runs are delivered (a JSON array of targets, as the spec says).
ALTER TABLE scheduled_jobs ADD COLUMN deliver TEXT NOT NULL DEFAULT '[]';

-- One row per (run, target): created pending with the run's success, in the same
-- transaction, then delivered or failed by the delivery worker. The id is the delivery's
-- mark in what it writes (a comment, a page, a webhook's Idempotency-Key), looked for
-- before writing, so a worker that died between writing and recording does not write twice.
CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES job_runs (id) ON DELETE CASCADE,
    job_id          TEXT NOT NULL REFERENCES scheduled_jobs (id) ON DELETE CASCADE,
    target_name     TEXT NOT NULL,
    target          TEXT NOT NULL,          -- JSON: the target as declared when the run succeeded
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    link            TEXT,                   -- what was written, when it has an address
    conversation_id INTEGER,                -- a conversation target's conversation
    next_attempt_at TEXT,                   -- when a pending delivery is due
    lease_until     TEXT,                   -- a worker holds it until then
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (run_id, target_name)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_by_job ON deliveries (job_id, target_name, created_at DESC);
