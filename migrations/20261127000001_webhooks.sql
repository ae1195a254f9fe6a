-- Webhooks. A tenant's endpoints; the events (the outbox: written in the same transaction as the state
-- change they announce); one delivery per (event, endpoint) carrying its retry state; and every HTTP
-- attempt, kept so tenants can see what their endpoint answered.

CREATE TABLE webhook_endpoints (
    id                          text PRIMARY KEY,      -- "we_<32 hex>"
    tenant_id                   uuid NOT NULL REFERENCES tenants (id),
    url                         text NOT NULL,
    description                 text NOT NULL DEFAULT '',
    event_types                 text[] NOT NULL,       -- empty: every event type
    secret                      text NOT NULL,         -- "whsec_<base64>"
    previous_secret             text,                  -- also signs until previous_secret_expires_at
    previous_secret_expires_at  timestamptz,
    disabled                    boolean NOT NULL DEFAULT false,
    disabled_reason             text,                  -- e.g. the endpoint answered 410 Gone
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, created_at DESC);

CREATE TABLE webhook_events (
    id          text PRIMARY KEY,                      -- "evt_<32 hex>": also the `webhook-id` header
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    type        text NOT NULL,
    payload     jsonb NOT NULL,                        -- the body, as sent
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_events_tenant ON webhook_events (tenant_id, created_at DESC);

CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    event_id        text NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    endpoint_id     text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    status          text NOT NULL DEFAULT 'pending',   -- pending | delivered | failed
    attempts        integer NOT NULL DEFAULT 0,        -- attempts of the current schedule
    next_attempt_at timestamptz NOT NULL DEFAULT now(),-- while pending; a dispatcher's claim pushes it out
    manual          boolean NOT NULL DEFAULT false,    -- the next attempt was asked for by the tenant
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    id                      text PRIMARY KEY,          -- "atmpt_<32 hex>"
    delivery_id             bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    event_id                text NOT NULL,
    endpoint_id             text NOT NULL,
    trigger                 text NOT NULL,             -- scheduled | manual
    status                  text NOT NULL,             -- succeeded | failed
    response_status_code    integer,                   -- null: no response (refused, timed out)
    response_body           text,                      -- the first KiB
    error                   text,
    duration_ms             integer NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, created_at DESC, id);
