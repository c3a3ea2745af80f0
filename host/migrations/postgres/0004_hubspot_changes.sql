-- dealbridge store, PostgreSQL schema v4: the HubSpot change feed. Keep in step with
-- migrations/sqlite/0004_hubspot_changes.sql.

-- Changes to HubSpot records that webhooks delivered and that another user or app made
-- (the app's own writes are dropped on receipt). One row per HubSpot event: a redelivered
-- event is the same row. A row stays until the engine has dealt with its record (settled
-- with the batch that synced it, or on its own).
CREATE TABLE hubspot_changes (
    tenant_id      TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    event_id       BIGINT  NOT NULL,
    object_type    TEXT    NOT NULL,
    object_id      TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('created', 'deleted', 'property')),
    property       TEXT,
    occurred_at_ms BIGINT  NOT NULL,
    change_source  TEXT    NOT NULL,
    source_id      TEXT,
    received_at_ms BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX hubspot_changes_object ON hubspot_changes (tenant_id, object_type, object_id);
