-- The tenant registry and API keys.
-- Tenants are the one table keyed by tenant id alone; everything else a
-- tenant owns leads with tenant_id.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    email       TEXT,
    plan        TEXT NOT NULL DEFAULT 'free',
    status      TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    source      TEXT NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'config')),
    -- limits, quotas, features, security, frontend_url, oidc, storage:
    -- one JSON document, validated by the application.
    spec        TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX tenants_status_plan ON tenants (status, plan, id);

CREATE TABLE api_keys (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id           TEXT NOT NULL,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    -- HMAC-SHA-256(pepper, key); the key itself is never stored.
    hash         BLOB NOT NULL,
    scopes       TEXT NOT NULL DEFAULT '[]',
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    revoked_at   TEXT,
    last_used_at TEXT,
    PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX api_keys_tenant_hash ON api_keys (tenant_id, hash);

-- Bumped by every change to tenants or keys, so that each node's registry
-- cache notices changes made elsewhere (another node, the CLI) cheaply.
CREATE TABLE registry_version (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    version  INTEGER NOT NULL
);
INSERT INTO registry_version (only_row, version) VALUES (1, 0);

CREATE TRIGGER tenants_ins AFTER INSERT ON tenants BEGIN
    UPDATE registry_version SET version = version + 1;
END;
CREATE TRIGGER tenants_upd AFTER UPDATE ON tenants BEGIN
    UPDATE registry_version SET version = version + 1;
END;
CREATE TRIGGER tenants_del AFTER DELETE ON tenants BEGIN
    UPDATE registry_version SET version = version + 1;
END;
CREATE TRIGGER api_keys_ins AFTER INSERT ON api_keys BEGIN
    UPDATE registry_version SET version = version + 1;
END;
CREATE TRIGGER api_keys_upd AFTER UPDATE OF revoked_at, expires_at ON api_keys BEGIN
    UPDATE registry_version SET version = version + 1;
END;
CREATE TRIGGER api_keys_del AFTER DELETE ON api_keys BEGIN
    UPDATE registry_version SET version = version + 1;
END;
