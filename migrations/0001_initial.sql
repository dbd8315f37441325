-- pymirror state database, version 1.
-- Names are PEP 503 normalized. Serials are upstream journal serials.

-- Small key/value facts about the mirror as a whole (e.g. 'changelog_serial': how far the
-- change feed has been read and queued into `todo`).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE projects (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    serial       INTEGER NOT NULL,   -- upstream last serial of the metadata mirrored
    synced_at    INTEGER NOT NULL    -- unix seconds
);

-- Every version upstream lists, with or without files.
CREATE TABLE releases (
    id         INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    version    TEXT NOT NULL,
    UNIQUE (project_id, version)
);

CREATE TABLE files (
    id              INTEGER PRIMARY KEY,
    project_id      INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    release_id      INTEGER NOT NULL REFERENCES releases(id) ON DELETE CASCADE,
    filename        TEXT NOT NULL,
    path            TEXT NOT NULL,     -- relative to web/: packages/aa/bb/<60 hex>/<filename>
    size            INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    blake2b_256     TEXT NOT NULL,
    upload_time     TEXT,
    requires_python TEXT,
    yanked          INTEGER NOT NULL DEFAULT 0,
    yanked_reason   TEXT,
    packagetype     TEXT,
    python_version  TEXT,
    UNIQUE (project_id, filename)
);
CREATE INDEX files_path ON files(path);
CREATE INDEX files_release ON files(release_id);

-- The work queue: projects that changed upstream and are not yet mirrored at `serial`.
-- Filled from the change feed in the same transaction that advances 'changelog_serial', and
-- emptied one row per project in the transaction that records it, so a crash loses nothing.
CREATE TABLE todo (
    name         TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    serial       INTEGER NOT NULL,          -- the serial the mirror must reach at least
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
) WITHOUT ROWID;
