-- dealbridge store, SQLite schema v2: the service's scheduler. Keep in step with
-- migrations/postgres/0002_scheduling.sql (same tables, columns and constraints).

-- Per tenant: how often it syncs, whether it is paused, whether someone asked for a run
-- while one was going on (so finishing that run does not push the request back), and how
-- many runs in a row failed (the back-off), and the config given to its rules plugin.
ALTER TABLE tenant_jobs ADD COLUMN interval_ms INTEGER NOT NULL DEFAULT 60000 CHECK (interval_ms > 0);
ALTER TABLE tenant_jobs ADD COLUMN paused BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE tenant_jobs ADD COLUMN run_requested BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE tenant_jobs ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tenant_jobs ADD COLUMN plugin_config TEXT    NOT NULL DEFAULT '{}';

-- Resyncs asked for over the API, waiting for whichever replica next runs the tenant.
-- A row is done once a run under the tenant's lease finished it; a replica that dies
-- first leaves it pending for the next one (a resync is idempotent).
CREATE TABLE pending_resyncs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id       TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    request         TEXT    NOT NULL,
    requested_at_ms INTEGER NOT NULL,
    done_at_ms      INTEGER,
    run_id          INTEGER,
    outcome         TEXT,
    UNIQUE (tenant_id, id)
);
CREATE INDEX pending_resyncs_open ON pending_resyncs (tenant_id, id) WHERE done_at_ms IS NULL;
