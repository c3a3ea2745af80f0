-- dealbridge store, SQLite schema v4: the HubSpot change feed. Keep in step with
-- migrations/postgres/0004_hubspot_changes.sql.

-- Changes to HubSpot records that webhooks delivered and that another user or app made
-- (the app's own writes are dropped on receipt). One row per HubSpot event. `seq` is the
-- store's own increasing number for a row: the engine settles a record's rows up to the
-- largest `seq` it read, since HubSpot's event ids do not grow with time (deliveries come
-- in any order). HubSpot does not promise event ids are unique either, so a redelivery is
-- recognised by the whole event (id, record, time, kind and property), not by its id: a
-- different event that shares an id is a row of its own. `property` is '' when the event
-- names none. A row stays until the engine has dealt with its record (settled with the
-- batch that synced it, or on its own).
CREATE TABLE hubspot_changes (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id      TEXT    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    event_id       INTEGER NOT NULL,
    object_type    TEXT    NOT NULL,
    object_id      TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('created', 'deleted', 'property')),
    property       TEXT    NOT NULL DEFAULT '',
    occurred_at_ms INTEGER NOT NULL,
    change_source  TEXT    NOT NULL,
    source_id      TEXT,
    received_at_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX hubspot_changes_event ON hubspot_changes
    (tenant_id, event_id, object_type, object_id, occurred_at_ms, kind, property);
CREATE INDEX hubspot_changes_object ON hubspot_changes (tenant_id, object_type, object_id, seq);
