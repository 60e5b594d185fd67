-- Records: tenant_id leads every key (docs/architecture.md, "Storage"), so names are
-- unique per tenant and every lookup is an index prefix scan.
CREATE TABLE records (
    seq         INTEGER PRIMARY KEY,          -- rowid; links the FTS row
    tenant_id   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    description TEXT,
    tags        TEXT    NOT NULL DEFAULT '[]', -- JSON array of strings
    fields      TEXT    NOT NULL DEFAULT '{}', -- JSON object
    size_bytes  INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);
CREATE UNIQUE INDEX records_tenant_id ON records (tenant_id, id);
CREATE UNIQUE INDEX records_tenant_kind_name ON records (tenant_id, kind, name);
-- (tenant_id) alone: rowid order inside a tenant, for newest-first listing.
CREATE INDEX records_tenant_seq ON records (tenant_id);

-- Full-text index. tenant_key is the tenant id hex-encoded into a single
-- token, so a search is `tenant AND terms`: an intersection of posting
-- lists that never walks another tenant's matches.
CREATE VIRTUAL TABLE records_fts USING fts5(
    tenant_key, name, description, url, tags, fields,
    content = '', contentless_delete = 1, prefix = '2 3',
    tokenize = 'unicode61 remove_diacritics 2'
);
-- Ranking: bm25 with column weights (tenant_key 0, name 10, description 2,
-- url 1, tags 5, fields 1), so `ORDER BY rank` lets FTS5 sort by itself.
INSERT INTO records_fts (records_fts, rank)
VALUES ('rank', 'bm25(0.0, 10.0, 2.0, 1.0, 5.0, 1.0)');
