-- What each succeeded job measured, for the estimates of jobs like it (POST /v1/fine_tuning/jobs/estimate
-- reads the recent rows of a model, method and runner class). Written by the scheduler with the job's
-- `succeeded` transition.
CREATE TABLE job_measurements (
    job_id           text PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    model            text NOT NULL,
    -- The SFT method: lora or full.
    method           text NOT NULL,
    -- cpu, or cuda:<gpu model> (moetune_types::estimate::runner_class).
    runner_class     text NOT NULL,
    -- What the estimate's plan said (characters / 4) and what the runner trained on.
    estimated_tokens bigint NOT NULL,
    trained_tokens   bigint NOT NULL,
    -- Time in the training steps (periodic validation included), every attempt.
    training_seconds double precision NOT NULL,
    -- Started to succeeded; null for a job that took more than one attempt.
    wall_seconds     double precision,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_measurements_recent ON job_measurements (model, method, runner_class, recorded_at DESC);
