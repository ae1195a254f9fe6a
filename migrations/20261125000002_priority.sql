-- Order among one tenant's own queued jobs (0-9, higher first); fair share still decides between tenants.
ALTER TABLE jobs ADD COLUMN priority smallint NOT NULL DEFAULT 0;
