-- Assembly of an upload's parts into its file is retried with a doubling wait and given up after a
-- few attempts (api/src/uploads.rs); this counts them.
ALTER TABLE files ADD COLUMN assembly_attempts integer NOT NULL DEFAULT 0;

-- The sweeper looks for parts of uploads that will never be assembled.
CREATE INDEX uploads_unfinished ON uploads (expires_at) WHERE file_id IS NULL;

-- Idempotency records are now addressed by an HMAC of tenant and key and their responses sealed
-- (api/src/idempotency.rs). Rows written before held keys and responses (API keys, webhook secrets)
-- in the clear: they are dropped; a retry of such a request within its 24 hours runs again.
DELETE FROM idempotency_keys;

-- Event streams (SSE) read when their job has news instead of polling: every new job event notifies
-- the API instances' LISTEN connections with the job id (api/src/event_stream.rs).
CREATE FUNCTION notify_job_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('moetune_job_events', NEW.job_id);
    RETURN NULL;
END $$;
CREATE TRIGGER job_events_notify AFTER INSERT ON job_events FOR EACH ROW EXECUTE FUNCTION notify_job_event();

-- Checkpoint retention: a job keeps its newest periodic checkpoints and its stage finals; the scheduler
-- marks older ones deleted, the API's sweeper removes their objects and then the rows. Kept
-- checkpoints count against the tenant's storage.
ALTER TABLE checkpoints ADD COLUMN deleted_at timestamptz;
CREATE INDEX checkpoints_pruned ON checkpoints (job_id) WHERE deleted_at IS NOT NULL;

-- Lost runners are counted on their own: a pause or a graceful hand-back (SIGTERM) starts a new attempt
-- too, and must not use up the job's `max_attempts` (scheduler/src/reconcile.rs).
ALTER TABLE jobs ADD COLUMN runner_losses integer NOT NULL DEFAULT 0;
