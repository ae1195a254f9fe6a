-- Creating a job in one round trip instead of six (BEGIN, the file check, the tenant lock, the
-- count, the insert, COMMIT). Same locks in the same order, same checks, same rows as that
-- transaction; the API turns a refusal into its error message (api/src/jobs.rs, `create`).

-- Whether a job in `status` holds one of its tenant's concurrent-job slots. A paused job holds no
-- runner and does not count; resuming it reserves a slot again. The one definition of the quota's
-- statuses: the quota usage report (api/src/quotas.rs) uses it too. Inlined by the planner.
CREATE FUNCTION job_holds_slot(status text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT status IN ('validating_files', 'queued', 'running', 'pausing') $$;

-- The quota count reads only the tenant's jobs that hold a slot (at most its limit, unless the limit
-- was lowered), not every job it ever ran: with the (tenant_id, created_at) index it fetched them all.
CREATE INDEX jobs_tenant_holding_slot ON jobs (tenant_id) WHERE job_holds_slot(status);

-- The quota check for one more job of the tenant, shared by job creation (`create_job`) and resume
-- (api/src/quotas.rs): locks the tenant's row, so two concurrent callers cannot both take the last
-- slot, then counts the jobs holding a slot. The slot is free when `active_jobs < job_limit`; the
-- caller refuses otherwise, which rolls its statement back and releases the lock.
CREATE FUNCTION reserve_job_slot(p_tenant uuid, p_default_max_jobs bigint, OUT active_jobs bigint, OUT job_limit bigint)
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    SELECT coalesce(tenants.max_concurrent_jobs, p_default_max_jobs) INTO STRICT job_limit
    FROM tenants WHERE tenants.id = p_tenant FOR UPDATE;
    -- A statement of its own after the lock: a VOLATILE function takes a fresh snapshot for each
    -- statement, so this count sees every job committed before the lock was ours.
    SELECT count(*) INTO active_jobs FROM jobs WHERE jobs.tenant_id = p_tenant AND job_holds_slot(jobs.status);
END
$$;

-- Returns one row. Either `refusal` says why nothing was created:
--   file_not_found        `refused_param`'s file `refused_file` is not a live file of the tenant;
--   invalid_file_purpose  its purpose (`file_purpose`) is not fine-tune;
--   invalid_file_status   it failed validation (`file_details` says why);
--   quota_exceeded        the tenant has `active_jobs` unfinished jobs, its limit is `job_limit`;
-- or `job` is the inserted row: `queued` when every file is `processed` (with the `queued` event),
-- else `validating_files`. The first of the given events is always recorded, the others only when
-- the job is queued at once. `training_key`/`validation_key` are the files' S3 keys.
CREATE FUNCTION create_job(
    p_id text, p_tenant uuid, p_default_max_jobs bigint,
    p_training_file text, p_validation_file text,
    p_model text, p_suffix text, p_spec jsonb, p_hyperparameters jsonb, p_metadata jsonb,
    p_method_type text, p_priority smallint, p_requirements jsonb,
    p_event_levels text[], p_event_messages text[], p_event_data jsonb[]
) RETURNS TABLE (
    refusal text, refused_param text, refused_file text, file_purpose text, file_details text,
    active_jobs bigint, job_limit bigint, training_key text, validation_key text, job jobs
)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    file_ids text[] := ARRAY[p_training_file, p_validation_file];
    params text[] := ARRAY['training_file', 'validation_file'];
    keys text[] := ARRAY[NULL, NULL]::text[];
    f record;
    queued boolean := true;
BEGIN
    -- The files first, share-locked so that a concurrent DELETE of one waits for this job, then sees it.
    FOR i IN 1..2 LOOP
        CONTINUE WHEN file_ids[i] IS NULL;
        SELECT files.purpose, files.status, files.status_details, files.s3_key INTO f
        FROM files
        WHERE files.id = file_ids[i] AND files.tenant_id = p_tenant AND files.deleted_at IS NULL
        FOR SHARE;
        IF NOT FOUND THEN
            refusal := 'file_not_found';
        ELSIF f.purpose <> 'fine-tune' THEN
            refusal := 'invalid_file_purpose';
            file_purpose := f.purpose;
        ELSIF f.status = 'error' THEN
            refusal := 'invalid_file_status';
            file_details := f.status_details;
        END IF;
        IF refusal IS NOT NULL THEN
            refused_param := params[i];
            refused_file := file_ids[i];
            RETURN NEXT;
            RETURN;
        END IF;
        keys[i] := f.s3_key;
        queued := queued AND f.status = 'processed';
    END LOOP;
    training_key := keys[1];
    validation_key := keys[2];

    -- Then the quota, under the tenant's lock.
    SELECT slot.active_jobs, slot.job_limit INTO active_jobs, job_limit FROM reserve_job_slot(p_tenant, p_default_max_jobs) AS slot;
    IF active_jobs >= job_limit THEN
        refusal := 'quota_exceeded';
        RETURN NEXT;
        RETURN;
    END IF;

    INSERT INTO jobs (id, tenant_id, model, training_file, suffix, spec, hyperparameters, status, metadata,
                      validation_file, method_type, priority, requirements, queued_at)
    VALUES (p_id, p_tenant, p_model, p_training_file, p_suffix, p_spec, p_hyperparameters,
            CASE WHEN queued THEN 'queued' ELSE 'validating_files' END, p_metadata,
            p_validation_file, p_method_type, p_priority, p_requirements, CASE WHEN queued THEN now() END)
    RETURNING * INTO job;
    INSERT INTO job_events (job_id, attempt, level, type, message, data)
    SELECT p_id, 1, e.level, 'message', e.message, e.data
    FROM unnest(p_event_levels, p_event_messages, p_event_data) WITH ORDINALITY AS e (level, message, data, n)
    WHERE e.n = 1 OR queued
    ORDER BY e.n;
    RETURN NEXT;
END
$$;
