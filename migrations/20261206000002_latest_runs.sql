-- The Jobs page shows each job's latest run (its newest open one, else its last finished
-- one) for every visible job in one query: these make that an index seek per job, not a
-- walk over the job's whole history.
CREATE INDEX job_runs_open_by_job ON job_runs (job_id, created_at) WHERE status IN ('queued', 'running');
CREATE INDEX job_runs_finished_by_job ON job_runs (job_id, finished_at) WHERE status IN ('succeeded', 'failed');
