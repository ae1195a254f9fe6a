-- Routing profiles are jobs of their own method type; `GET /v1/files/{id}/routing_profile` reads the
-- newest of a file's, and the fine-tuning job list leaves them out.
CREATE INDEX jobs_routing_profiles ON jobs (tenant_id, training_file, created_at DESC) WHERE method_type = 'routing_profile';
