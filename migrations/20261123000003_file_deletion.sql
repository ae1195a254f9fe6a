-- Deleting a file removes its data from S3 and hides it; the row stays for the jobs that used it.
ALTER TABLE files ADD COLUMN deleted_at timestamptz;
CREATE INDEX files_tenant_live ON files (tenant_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
