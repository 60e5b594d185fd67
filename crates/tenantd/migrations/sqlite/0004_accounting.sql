-- Accounting: quotas, usage, audit and billing. tenant_id leads every key.

-- Current size of each tenant's records, kept exact by triggers so a quota
-- check is one primary-key read inside the write transaction (no COUNT).
CREATE TABLE tenant_stats (
    tenant_id     TEXT    PRIMARY KEY,
    records       INTEGER NOT NULL DEFAULT 0,
    storage_bytes INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

INSERT INTO tenant_stats (tenant_id, records, storage_bytes)
SELECT tenant_id, COUNT(*), COALESCE(SUM(size_bytes), 0) FROM records GROUP BY tenant_id;

CREATE TRIGGER records_stats_insert AFTER INSERT ON records BEGIN
    INSERT INTO tenant_stats (tenant_id, records, storage_bytes)
    VALUES (NEW.tenant_id, 1, NEW.size_bytes)
    ON CONFLICT (tenant_id) DO UPDATE SET records = records + 1,
        storage_bytes = storage_bytes + NEW.size_bytes;
END;

CREATE TRIGGER records_stats_delete AFTER DELETE ON records BEGIN
    UPDATE tenant_stats SET records = records - 1, storage_bytes = storage_bytes - OLD.size_bytes
    WHERE tenant_id = OLD.tenant_id;
END;

CREATE TRIGGER records_stats_update AFTER UPDATE OF size_bytes ON records BEGIN
    UPDATE tenant_stats SET storage_bytes = storage_bytes - OLD.size_bytes + NEW.size_bytes
    WHERE tenant_id = NEW.tenant_id;
END;

-- Monthly counters (month = 'YYYY-MM'). Writes that a quota limits
-- (records_written, detections) are counted in the write's own
-- transaction; API calls arrive in batches from the request recorder.
CREATE TABLE usage_counters (
    tenant_id TEXT    NOT NULL,
    month     TEXT    NOT NULL,
    metric    TEXT    NOT NULL,
    value     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, month, metric)
) WITHOUT ROWID;

-- Daily request figures for GET /admin/tenants/{id}/metrics: count,
-- errors and a latency histogram (JSON array of bucket counts).
CREATE TABLE usage_daily (
    tenant_id TEXT    NOT NULL,
    day       TEXT    NOT NULL,  -- 'YYYY-MM-DD'
    requests      INTEGER NOT NULL DEFAULT 0,
    client_errors INTEGER NOT NULL DEFAULT 0,  -- 4xx
    server_errors INTEGER NOT NULL DEFAULT 0,  -- 5xx
    latency       TEXT    NOT NULL DEFAULT '[]',
    PRIMARY KEY (tenant_id, day)
) WITHOUT ROWID;

-- The audit log: append-only, hash-chained per tenant. tenant_id '' is
-- the chain of admin actions that concern no single tenant.
CREATE TABLE audit_events (
    tenant_id   TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    id          TEXT    NOT NULL,
    at          TEXT    NOT NULL,
    at_ms       INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    target      TEXT,
    request_id  TEXT,
    ip          TEXT,
    user_agent  TEXT,
    status      INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    params      TEXT    NOT NULL DEFAULT '{}',
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, seq)
) WITHOUT ROWID;
CREATE INDEX audit_events_tenant_time ON audit_events (tenant_id, at_ms);

-- The last event of each chain: removing the newest events is detected too.
CREATE TABLE audit_heads (
    tenant_id TEXT    PRIMARY KEY,
    seq       INTEGER NOT NULL,
    hash      TEXT    NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
-- Deleting a tenant keeps its audit trail: accountability outlives data.
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;

-- Ids of deleted tenants. Their audit trail, usage and billing events are
-- kept, so the id is never given to another tenant, who would inherit them.
CREATE TABLE deleted_tenants (
    id         TEXT PRIMARY KEY,
    deleted_at TEXT NOT NULL
) WITHOUT ROWID;

-- Billing: one event per tenant and month in a durable outbox.
CREATE TABLE billing_events (
    tenant_id       TEXT    NOT NULL,
    month           TEXT    NOT NULL,
    id              TEXT    NOT NULL UNIQUE,
    payload         TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    created_at      TEXT    NOT NULL,
    delivered_at    TEXT,
    PRIMARY KEY (tenant_id, month)
) WITHOUT ROWID;
CREATE INDEX billing_events_due ON billing_events (status, next_attempt_ms);

-- Months whose events have been written.
CREATE TABLE billing_months (
    month     TEXT PRIMARY KEY,
    closed_at TEXT NOT NULL
) WITHOUT ROWID;

-- An API key may carry its own rate limits (JSON, NULL = the tenant's).
ALTER TABLE api_keys ADD COLUMN limits TEXT;
