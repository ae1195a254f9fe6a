-- Job lists are ordered by (created_at, id): with id in the index a page is read off it in order,
-- instead of sorting every job of the tenant (the old index had created_at only).
CREATE INDEX jobs_tenant_page ON jobs (tenant_id, created_at DESC, id DESC);
DROP INDEX jobs_tenant_created;
-- The same for the webhook lists, which page by (created_at, id) too.
CREATE INDEX webhook_events_page ON webhook_events (tenant_id, created_at DESC, id DESC);
DROP INDEX webhook_events_tenant;
CREATE INDEX webhook_endpoints_page ON webhook_endpoints (tenant_id, created_at DESC, id DESC);
DROP INDEX webhook_endpoints_tenant;
