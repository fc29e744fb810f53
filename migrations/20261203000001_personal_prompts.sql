-- People's own prompts (`me:name`), private to their owner.
CREATE TABLE personal_prompts (
    owner_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    title       TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    template    TEXT NOT NULL,
    variables   TEXT NOT NULL DEFAULT '[]',  -- JSON array of {name, description, required, default}
    endpoint    TEXT,
    tools       TEXT,                        -- JSON array, or NULL for the servers' defaults
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (owner_id, name)
);

-- A job's prompt_ref is now a full prompt reference: a PromptJob's Prompt is
-- `namespace/name` (it was the bare name, read in the job's namespace).
UPDATE scheduled_jobs SET prompt_ref = namespace || '/' || prompt_ref
 WHERE source = 'kubernetes' AND prompt_ref IS NOT NULL AND instr(prompt_ref, '/') = 0;
