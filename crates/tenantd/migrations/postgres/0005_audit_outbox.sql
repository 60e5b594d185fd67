-- The audit outbox (PostgreSQL); mirrors migrations/sqlite/0005. A tenant
-- table like any other: the app role parks a tenant's event inside that
-- tenant's transaction, under the same row-level security.
CREATE TABLE audit_outbox (
    tenant_id   TEXT   NOT NULL,
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
    PRIMARY KEY (tenant_id, id)
);

ALTER TABLE audit_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_outbox
    USING (tenant_id = (select current_setting('app.tenant_id', true)))
    WITH CHECK (tenant_id = (select current_setting('app.tenant_id', true)));
