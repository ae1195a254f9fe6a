-- The SFT→QAT workflow: validation files, why training stopped, and resumable checkpoints.

ALTER TABLE jobs ADD COLUMN validation_file text REFERENCES files (id);
ALTER TABLE jobs ADD COLUMN stop_reason text;   -- completed | early_stop_router_collapse

CREATE TABLE checkpoints (
    job_id      text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name        text NOT NULL,                     -- e.g. "sft-step-000100"
    attempt     integer NOT NULL,
    stage       text NOT NULL,                     -- sft | qat
    step        integer NOT NULL,
    s3_bucket   text NOT NULL,
    s3_prefix   text NOT NULL,
    bytes       bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, name)
);
