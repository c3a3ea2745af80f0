-- dealbridge store, SQLite schema v1. Keep in step with migrations/postgres/0001_initial.sql:
-- same tables, columns, keys and constraints; only the column types differ.
-- Every row carries tenant_id; rows that point at other rows do so with (tenant_id, id)
-- so a reference can never cross tenants. Times are milliseconds since the Unix epoch.

CREATE TABLE tenants (
    id            TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at_ms INTEGER NOT NULL
);

-- Only hashes of API tokens; token_id is the public part that names a token.
CREATE TABLE api_tokens (
    tenant_id     TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token_id      TEXT    NOT NULL,
    token_hash    TEXT    NOT NULL,
    label         TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER,
    PRIMARY KEY (tenant_id, token_id)
);

-- CRM connections: opaque ciphertext sealed by the service; the store never sees plaintext.
CREATE TABLE crm_connections (
    tenant_id     TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    crm           TEXT    NOT NULL CHECK (crm IN ('salesforce', 'hubspot')),
    key_id        TEXT    NOT NULL,
    ciphertext    BLOB    NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, crm)
);

-- One row per tenant: when its sync is due and who holds its lease.
CREATE TABLE tenant_jobs (
    tenant_id           TEXT    PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    next_due_at_ms      INTEGER NOT NULL,
    lease_holder        TEXT,
    lease_expires_at_ms INTEGER,
    fencing_token       INTEGER NOT NULL DEFAULT 0,
    last_commit_at_ms   INTEGER,
    CHECK ((lease_holder IS NULL) = (lease_expires_at_ms IS NULL))
);
CREATE INDEX tenant_jobs_due ON tenant_jobs (next_due_at_ms, tenant_id);

CREATE TABLE links (
    tenant_id     TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    object_pair   TEXT    NOT NULL CHECK (object_pair IN ('opportunity_deal', 'account_company', 'contact_contact')),
    salesforce_id TEXT    NOT NULL,
    hubspot_id    TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('active', 'hubspot_archived', 'salesforce_deleted', 'unsynced')),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, object_pair, salesforce_id),
    UNIQUE (tenant_id, object_pair, hubspot_id)
);

-- Last-synced values per field, one row per link.
CREATE TABLE snapshots (
    tenant_id     TEXT    NOT NULL,
    object_pair   TEXT    NOT NULL,
    salesforce_id TEXT    NOT NULL,
    salesforce    TEXT    NOT NULL,
    hubspot       TEXT    NOT NULL,
    synced_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, object_pair, salesforce_id),
    FOREIGN KEY (tenant_id, object_pair, salesforce_id)
        REFERENCES links (tenant_id, object_pair, salesforce_id) ON DELETE CASCADE
);

-- Keys of committed batches: a retried commit of the same batch is a no-op.
CREATE TABLE committed_batches (
    tenant_id       TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    batch_key       TEXT    NOT NULL,
    committed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, batch_key)
);

CREATE TABLE checkpoints (
    tenant_id      TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    object_pair    TEXT    NOT NULL,
    side           TEXT    NOT NULL CHECK (side IN ('salesforce', 'hubspot')),
    stream         TEXT    NOT NULL CHECK (stream IN ('changes', 'deletes')),
    cursor_time_ms INTEGER NOT NULL,
    cursor_id      TEXT    NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, object_pair, side, stream)
);

CREATE TABLE sync_errors (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id        TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    object_pair      TEXT    NOT NULL,
    record_side      TEXT    NOT NULL CHECK (record_side IN ('salesforce', 'hubspot')),
    record_id        TEXT    NOT NULL,
    category         TEXT    NOT NULL,
    message          TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    attempts         INTEGER NOT NULL,
    first_seen_ms    INTEGER NOT NULL,
    last_seen_ms     INTEGER NOT NULL,
    next_retry_at_ms INTEGER,
    resolved_at_ms   INTEGER,
    UNIQUE (tenant_id, object_pair, record_side, record_id, category)
);
CREATE INDEX sync_errors_due ON sync_errors (tenant_id, next_retry_at_ms) WHERE resolved_at_ms IS NULL;
CREATE INDEX sync_errors_open ON sync_errors (tenant_id, category, id) WHERE resolved_at_ms IS NULL;

CREATE TABLE runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id      TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    trigger_kind   TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    fencing_token  INTEGER NOT NULL,
    started_at_ms  INTEGER NOT NULL,
    finished_at_ms INTEGER,
    counters       TEXT    NOT NULL,
    message        TEXT,
    UNIQUE (tenant_id, id)
);
CREATE INDEX runs_running ON runs (tenant_id) WHERE status = 'running';

CREATE TABLE record_events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id      TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    object_pair    TEXT    NOT NULL,
    salesforce_id  TEXT,
    hubspot_id     TEXT,
    kind           TEXT    NOT NULL,
    direction      TEXT    NOT NULL,
    source_version TEXT    NOT NULL,
    run_id         INTEGER,
    at_ms          INTEGER NOT NULL,
    fields         TEXT    NOT NULL,
    message        TEXT,
    dedup_key      TEXT    NOT NULL,
    UNIQUE (tenant_id, dedup_key),
    FOREIGN KEY (tenant_id, run_id) REFERENCES runs (tenant_id, id),
    CHECK (salesforce_id IS NOT NULL OR hubspot_id IS NOT NULL)
);
CREATE INDEX record_events_sf ON record_events (tenant_id, object_pair, salesforce_id, id);
CREATE INDEX record_events_hs ON record_events (tenant_id, object_pair, hubspot_id, id);

CREATE TABLE plugin_versions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id      TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    sha256         TEXT    NOT NULL,
    label          TEXT    NOT NULL,
    component      BLOB,
    component_path TEXT,
    size_bytes     INTEGER,
    uploaded_at_ms INTEGER NOT NULL,
    test_results   TEXT,
    active         BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (tenant_id, id),
    UNIQUE (tenant_id, sha256),
    CHECK ((component IS NULL) <> (component_path IS NULL))
);
-- At most one active version per tenant.
CREATE UNIQUE INDEX plugin_versions_one_active ON plugin_versions (tenant_id) WHERE active;

CREATE TABLE plugin_activations (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id           TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    version_id          INTEGER,
    previous_version_id INTEGER,
    rollback_to         INTEGER,
    is_rollback         BOOLEAN NOT NULL,
    actor               TEXT    NOT NULL,
    activated_at_ms     INTEGER NOT NULL,
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, version_id) REFERENCES plugin_versions (tenant_id, id),
    FOREIGN KEY (tenant_id, previous_version_id) REFERENCES plugin_versions (tenant_id, id),
    FOREIGN KEY (tenant_id, rollback_to) REFERENCES plugin_activations (tenant_id, id)
);

CREATE TABLE rule_fixtures (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id     TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    version_id    INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    input         TEXT    NOT NULL,
    expected      TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (tenant_id, version_id, name),
    FOREIGN KEY (tenant_id, version_id) REFERENCES plugin_versions (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE invocation_reports (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    run_id     INTEGER,
    version_id INTEGER,
    at_ms      INTEGER NOT NULL,
    report     TEXT    NOT NULL,
    FOREIGN KEY (tenant_id, run_id) REFERENCES runs (tenant_id, id),
    FOREIGN KEY (tenant_id, version_id) REFERENCES plugin_versions (tenant_id, id)
);
CREATE INDEX invocation_reports_run ON invocation_reports (tenant_id, run_id, id);
