-- pause/resume: `pausing` jobs are still held by a runner, so the reconciler watches them too.
DROP INDEX jobs_active;
CREATE INDEX jobs_active ON jobs (status) WHERE status IN ('queued', 'running', 'pausing');

-- The method the job was created with, echoed as OpenAI clients expect (`supervised` for legacy
-- `hyperparameters` and `method.supervised`; `moe_sft_qat` for the native options).
ALTER TABLE jobs ADD COLUMN method_type text NOT NULL DEFAULT 'moe_sft_qat';
