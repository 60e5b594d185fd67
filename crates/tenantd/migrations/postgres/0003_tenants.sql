-- Tenant registry and API keys (PostgreSQL); mirrors migrations/sqlite/0003.
-- `tenants` and `registry_version` are catalog tables: only the admin role
-- reads them. `api_keys` holds tenant_id and is row-level secured.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    email       TEXT,
    plan        TEXT NOT NULL DEFAULT 'free',
    status      TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    source      TEXT NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'config')),
    spec        TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX tenants_status_plan ON tenants (status, plan, id);

CREATE TABLE api_keys (
    tenant_id    TEXT  NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id           TEXT  NOT NULL,
    name         TEXT  NOT NULL,
    prefix       TEXT  NOT NULL,
    hash         BYTEA NOT NULL,
    scopes       TEXT  NOT NULL DEFAULT '[]',
    created_at   TEXT  NOT NULL,
    expires_at   TEXT,
    revoked_at   TEXT,
    last_used_at TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX api_keys_tenant_hash ON api_keys (tenant_id, hash);

CREATE TABLE registry_version (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    version  BIGINT  NOT NULL
);
INSERT INTO registry_version (only_row, version) VALUES (1, 0);

CREATE FUNCTION bump_registry_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE registry_version SET version = version + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER tenants_changed AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version();
CREATE TRIGGER api_keys_changed AFTER INSERT OR DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version();
CREATE TRIGGER api_keys_revoked AFTER UPDATE OF revoked_at, expires_at ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version();
