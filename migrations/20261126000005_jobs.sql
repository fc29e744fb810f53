-- Prompt resources from Kubernetes, as the controller last saw them (keyed by uid).
CREATE TABLE prompt_resources (
    uid         TEXT PRIMARY KEY,
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    title       TEXT,
    description TEXT,
    template    TEXT NOT NULL,
    variables   TEXT NOT NULL,          -- JSON array of {name, description, required, default}
    endpoint    TEXT,
    tools       TEXT,                   -- JSON array, or NULL for the servers' defaults
    updated_at  TEXT NOT NULL,
    UNIQUE (namespace, name)
);

-- Scheduled prompts (not `jobs`: SQLite names ignore case, and apalis's queue table in the
-- same file is `Jobs`): PromptJob resources (id = the resource's uid) and personal jobs
-- made in the UI (id = a UUID, owner_id set).
CREATE TABLE scheduled_jobs (
    id                        TEXT PRIMARY KEY,
    source                    TEXT NOT NULL CHECK (source IN ('kubernetes', 'personal')),
    namespace                 TEXT,
    name                      TEXT NOT NULL,
    owner_id                  INTEGER REFERENCES users (id) ON DELETE CASCADE,
    schedule                  TEXT NOT NULL,
    time_zone                 TEXT NOT NULL,
    prompt_ref                TEXT,     -- a Prompt resource (kubernetes) or prompts.json name (personal)
    prompt                    TEXT,     -- inline prompt text
    variables                 TEXT NOT NULL DEFAULT '{}',
    suspended                 INTEGER NOT NULL DEFAULT 0 CHECK (suspended IN (0, 1)),
    concurrency_policy        TEXT NOT NULL DEFAULT 'Forbid' CHECK (concurrency_policy IN ('Allow', 'Forbid', 'Replace')),
    starting_deadline_seconds INTEGER,
    retry_limit               INTEGER NOT NULL DEFAULT 0,
    retry_backoff_seconds     INTEGER NOT NULL DEFAULT 60,
    secret_name               TEXT,     -- Secret holding the run's token (kubernetes)
    secret_key                TEXT,
    allowed_write_tools       TEXT NOT NULL DEFAULT '[]',
    problem                   TEXT,     -- why the job is not scheduled, if it is not
    next_run_at               TEXT,     -- NULL when not scheduled
    last_schedule_at          TEXT,
    created_at                TEXT NOT NULL,
    updated_at                TEXT NOT NULL,
    CHECK ((source = 'kubernetes') = (namespace IS NOT NULL)),
    CHECK ((source = 'personal') = (owner_id IS NOT NULL))
);
CREATE UNIQUE INDEX jobs_resource_name ON scheduled_jobs (namespace, name) WHERE source = 'kubernetes';
CREATE INDEX jobs_due ON scheduled_jobs (next_run_at) WHERE next_run_at IS NOT NULL;
CREATE INDEX jobs_owner ON scheduled_jobs (owner_id) WHERE owner_id IS NOT NULL;

-- One row per firing (or manual run). `idempotency_key` (job id + scheduled instant, or
-- the trigger's own key) is unique, so a firing is recorded — and run — once, across
-- restarts and replicas.
CREATE TABLE job_runs (
    id                TEXT PRIMARY KEY,
    job_id            TEXT NOT NULL REFERENCES scheduled_jobs (id) ON DELETE CASCADE,
    idempotency_key   TEXT NOT NULL UNIQUE,
    trigger           TEXT NOT NULL CHECK (trigger IN ('schedule', 'manual', 'annotation')),
    scheduled_for     TEXT NOT NULL,
    attempt           INTEGER NOT NULL DEFAULT 1,
    status            TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'skipped', 'cancelled')),
    started_at        TEXT,
    finished_at       TEXT,
    output            TEXT NOT NULL DEFAULT '',
    error             TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    tool_calls        TEXT NOT NULL DEFAULT '[]',
    created_at        TEXT NOT NULL
);
CREATE INDEX job_runs_by_job ON job_runs (job_id, created_at DESC);
CREATE INDEX job_runs_open ON job_runs (status) WHERE status IN ('queued', 'running');
