-- The runners a job trains on when it runs on a gang of several (data parallel), by rank: rank 0
-- (the runner that reports, `runner_id`) first. NULL for a job on one runner, and while queued.
ALTER TABLE jobs ADD COLUMN ranks text[];
