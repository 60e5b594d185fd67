-- Detection jobs: durable rows claimed by workers under a lease.
-- tenant_id leads every key; the scheduler's cross-tenant scans use
-- (status, tenant_id) and never read another tenant's payload.
CREATE TABLE detection_jobs (
    seq              INTEGER PRIMARY KEY,
    tenant_id        TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    repository_url   TEXT    NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    metadata         TEXT    NOT NULL DEFAULT '{}',
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    error            TEXT,
    record_id        TEXT,
    lease_owner      TEXT,
    lease_expires_ms INTEGER,           -- unix milliseconds
    available_ms     INTEGER NOT NULL,  -- not claimable before (retry backoff)
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    started_at       TEXT,
    finished_at      TEXT
);
CREATE UNIQUE INDEX detection_jobs_tenant_id ON detection_jobs (tenant_id, id);
-- A tenant's next job: highest priority, then oldest.
CREATE INDEX detection_jobs_tenant_queue ON detection_jobs (tenant_id, status, priority DESC, seq);
-- Scheduler: which tenants have pending work / running jobs; expired leases.
CREATE INDEX detection_jobs_status ON detection_jobs (status, tenant_id);
CREATE INDEX detection_jobs_lease ON detection_jobs (status, lease_expires_ms);

-- Round-robin bookkeeping: the scheduler serves the tenant whose last turn
-- is oldest among those with pending work.
CREATE TABLE job_turns (
    tenant_id TEXT PRIMARY KEY,
    last_turn INTEGER NOT NULL
) WITHOUT ROWID;
