-- dealbridge store, SQLite schema v3: a sync asked for over the API (sync now) is told
-- apart from a scheduled one. Keep in step with migrations/postgres/0003_sync_now.sql.

-- sync_now_requested: sync now was asked for and no scheduler lease has been taken since.
-- leased_for_sync_now: the scheduler took the current lease for such a request (taking a
-- lease moves the first into the second), so its run is recorded as manual.
ALTER TABLE tenant_jobs ADD COLUMN sync_now_requested BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE tenant_jobs ADD COLUMN leased_for_sync_now BOOLEAN NOT NULL DEFAULT FALSE;
