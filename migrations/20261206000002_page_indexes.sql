-- The Jobs page shows each job's latest run (its newest open one, else its last finished
-- one) for every visible job in one query: these make that an index seek per job, not a
-- walk over the job's whole history.
CREATE INDEX job_runs_open_by_job ON job_runs (job_id, created_at) WHERE status IN ('queued', 'running');
CREATE INDEX job_runs_finished_by_job ON job_runs (job_id, finished_at DESC, id) WHERE status IN ('succeeded', 'failed');
-- The chat page reads the tool calls of the messages it shows, not of the whole conversation.
CREATE INDEX tool_calls_message ON tool_calls (message_id);
