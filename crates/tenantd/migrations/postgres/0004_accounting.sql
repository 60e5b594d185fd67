-- Quotas, usage, audit, billing (PostgreSQL); mirrors migrations/sqlite/0004,
-- then turns on row-level security for every tenant table.

CREATE TABLE tenant_stats (
    tenant_id     TEXT   PRIMARY KEY,
    records       BIGINT NOT NULL DEFAULT 0,
    storage_bytes BIGINT NOT NULL DEFAULT 0
);

INSERT INTO tenant_stats (tenant_id, records, storage_bytes)
SELECT tenant_id, COUNT(*), COALESCE(SUM(size_bytes), 0) FROM records GROUP BY tenant_id;

-- Kept exact in the writing transaction. The functions run as the caller,
-- so under the app role they too see only the current tenant's stats row.
CREATE FUNCTION records_stats() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO tenant_stats (tenant_id, records, storage_bytes)
        VALUES (NEW.tenant_id, 1, NEW.size_bytes)
        ON CONFLICT (tenant_id) DO UPDATE SET records = tenant_stats.records + 1,
            storage_bytes = tenant_stats.storage_bytes + NEW.size_bytes;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE tenant_stats SET records = records - 1, storage_bytes = storage_bytes - OLD.size_bytes
        WHERE tenant_id = OLD.tenant_id;
    ELSIF NEW.size_bytes IS DISTINCT FROM OLD.size_bytes THEN
        UPDATE tenant_stats SET storage_bytes = storage_bytes - OLD.size_bytes + NEW.size_bytes
        WHERE tenant_id = NEW.tenant_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER records_stats AFTER INSERT OR UPDATE OR DELETE ON records
    FOR EACH ROW EXECUTE FUNCTION records_stats();

CREATE TABLE usage_counters (
    tenant_id TEXT   NOT NULL,
    month     TEXT   NOT NULL,
    metric    TEXT   NOT NULL,
    value     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, month, metric)
);

CREATE TABLE usage_daily (
    tenant_id     TEXT   NOT NULL,
    day           TEXT   NOT NULL,
    requests      BIGINT NOT NULL DEFAULT 0,
    client_errors BIGINT NOT NULL DEFAULT 0,
    server_errors BIGINT NOT NULL DEFAULT 0,
    latency       TEXT   NOT NULL DEFAULT '[]',
    PRIMARY KEY (tenant_id, day)
);

CREATE TABLE audit_events (
    tenant_id   TEXT   NOT NULL,
    seq         BIGINT NOT NULL,
    id          TEXT   NOT NULL,
    at          TEXT   NOT NULL,
    at_ms       BIGINT NOT NULL,
    actor       TEXT   NOT NULL,
    action      TEXT   NOT NULL,
    target      TEXT,
    request_id  TEXT,
    ip          TEXT,
    user_agent  TEXT,
    status      BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    params      TEXT   NOT NULL DEFAULT '{}',
    prev_hash   TEXT   NOT NULL,
    hash        TEXT   NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_events_tenant_time ON audit_events (tenant_id, at_ms);

CREATE TABLE audit_heads (
    tenant_id TEXT   PRIMARY KEY,
    seq       BIGINT NOT NULL,
    hash      TEXT   NOT NULL
);

-- Append-only for every role, the owner included (the app and admin roles
-- are also never granted UPDATE or DELETE on it).
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only';
END $$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();

CREATE TABLE deleted_tenants (
    id         TEXT PRIMARY KEY,
    deleted_at TEXT NOT NULL
);

CREATE TABLE billing_events (
    tenant_id       TEXT   NOT NULL,
    month           TEXT   NOT NULL,
    id              TEXT   NOT NULL,
    payload         TEXT   NOT NULL,
    status          TEXT   NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    last_error      TEXT,
    created_at      TEXT   NOT NULL,
    delivered_at    TEXT,
    PRIMARY KEY (tenant_id, month)
);
CREATE UNIQUE INDEX billing_events_tenant_event ON billing_events (tenant_id, id);

-- The delivery worker's due list: a partial index (pending events only, a
-- small set) that still leads with tenant_id, as every index on a tenant
-- table must.
CREATE INDEX billing_events_pending ON billing_events (tenant_id, next_attempt_ms)
    WHERE status = 'pending';

CREATE TABLE billing_months (
    month     TEXT PRIMARY KEY,
    closed_at TEXT NOT NULL
);

ALTER TABLE api_keys ADD COLUMN limits TEXT;

-- Row-level security on every table that holds a tenant's rows. FORCE
-- makes it apply to the table owner too. The (select …) form makes the
-- planner evaluate the setting once per statement (an InitPlan), so the
-- tenant_id indexes stay usable. current_setting(…, true) is NULL or ''
-- when no tenant is set, which matches no row.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['records', 'detection_jobs', 'job_turns', 'api_keys',
        'tenant_stats', 'usage_counters', 'usage_daily', 'audit_events', 'audit_heads',
        'billing_events']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I '
            'USING (tenant_id = (select current_setting(''app.tenant_id'', true))) '
            'WITH CHECK (tenant_id = (select current_setting(''app.tenant_id'', true)))', t);
    END LOOP;
END $$;
