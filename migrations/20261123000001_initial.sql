-- Postgres is the source of truth for tenants, files and jobs; Redis only mirrors what runners need.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE files (
    id              text PRIMARY KEY,                 -- "file-<32 hex>"
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    filename        text NOT NULL,
    purpose         text NOT NULL,
    bytes           bigint NOT NULL,
    s3_bucket       text NOT NULL,
    s3_key          text NOT NULL,
    sha256          text NOT NULL,
    status          text NOT NULL,                    -- uploaded | processed | error
    format          text,                             -- chat | alpaca | prompt_completion
    example_count   bigint,
    estimated_tokens bigint,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX files_tenant_created ON files (tenant_id, created_at DESC);

CREATE TABLE jobs (
    id              text PRIMARY KEY,                 -- "ftjob-<32 hex>"
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    model           text NOT NULL,
    training_file   text NOT NULL REFERENCES files (id),
    suffix          text,
    spec            jsonb NOT NULL,                   -- resolved TrainingSpec
    hyperparameters jsonb NOT NULL,                   -- as echoed to the user
    status          text NOT NULL,
    attempt         integer NOT NULL DEFAULT 1,       -- fencing token for runner writes
    runner_id       text,
    error_code      text,
    error_message   text,
    trained_tokens  bigint,
    result          jsonb,
    metadata        jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);
CREATE INDEX jobs_tenant_created ON jobs (tenant_id, created_at DESC);
CREATE INDEX jobs_active ON jobs (status) WHERE status IN ('queued', 'running');

CREATE TABLE job_events (
    seq         bigserial PRIMARY KEY,
    job_id      text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    level       text NOT NULL,                         -- info | warn | error
    type        text NOT NULL,                         -- message | metrics
    message     text NOT NULL,
    data        jsonb,
    source_id   text UNIQUE,                           -- Redis stream entry id; replays are no-ops
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_events_job ON job_events (job_id, seq);

CREATE TABLE artifacts (
    job_id      text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name        text NOT NULL,
    s3_bucket   text NOT NULL,
    s3_key      text NOT NULL,
    bytes       bigint NOT NULL,
    sha256      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, name)
);
