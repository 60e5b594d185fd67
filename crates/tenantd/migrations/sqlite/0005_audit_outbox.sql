-- The audit outbox: a request's audit event, committed in the same
-- transaction as the request's first write, until the audit writer moves
-- it into its chain (and a sweep, after a crash or an outage, chains what
-- was left). The same table in a dedicated tenant's own database.
CREATE TABLE audit_outbox (
    tenant_id   TEXT    NOT NULL,
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
    PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;
