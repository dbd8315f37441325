-- Files placed on disk for a project before the transaction that records it. A project that
-- fails (or vanishes) after some of its files were placed would otherwise leave them
-- referenced by nothing and known to nothing; recording or removing the project moves the
-- unreferenced ones to `trash`.
CREATE TABLE staged (
    path    TEXT PRIMARY KEY,          -- relative to web/
    project TEXT NOT NULL              -- normalized name
) WITHOUT ROWID;
CREATE INDEX staged_project ON staged(project);

-- The oldest change still pending for a queued project (`serial` is the newest): the mirror is
-- fully synced only up to just below it.
ALTER TABLE todo ADD COLUMN first_serial INTEGER;
UPDATE todo SET first_serial = serial;
