-- One row per housekeeping task (config.json `maintenance`): the replica running it now
-- (a lease, so that replicas sharing this file never run a task twice at once) and how
-- its last run went, for the admin page.
CREATE TABLE maintenance_tasks (
    task             TEXT PRIMARY KEY,
    holder           TEXT,
    lease_until      TEXT,
    last_started     TEXT,
    last_finished    TEXT,
    last_outcome     TEXT CHECK (last_outcome IN ('succeeded', 'failed')),
    last_duration_ms INTEGER,
    last_detail      TEXT
) WITHOUT ROWID;
