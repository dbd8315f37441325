-- pymirror verify: what a verify found and how far it got, so that one killed half-way
-- continues with `--resume` (and its report still lists what it found before the kill), and
-- repairs resume too.

-- The JSON API mirror's documents (web/json/<name>, web/pypi/<name>/json) derive from
-- upstream's answer, which is not stored: the SHA-256 of web/json/<name> as last written,
-- '' when the project has no such document, NULL when unknown (written by an older pymirror,
-- or a sync was killed between writing it and recording it).
ALTER TABLE projects ADD COLUMN json_api_sha256 TEXT;

-- One row per verify; only the latest is kept.
CREATE TABLE verify_runs (
    id                INTEGER PRIMARY KEY,
    started_at        INTEGER NOT NULL,    -- unix seconds
    finished_at       INTEGER,             -- NULL: running, or interrupted (resumable)
    checks            TEXT NOT NULL,       -- the checks asked for, e.g. "files,pages,hash"
    files_checked     INTEGER NOT NULL DEFAULT 0,
    bytes_checked     INTEGER NOT NULL DEFAULT 0,
    pages_checked     INTEGER NOT NULL DEFAULT 0,
    projects_compared INTEGER NOT NULL DEFAULT 0,
    unchecked         INTEGER NOT NULL DEFAULT 0   -- units that could not be checked (I/O errors)
);

-- How far each phase got: `position` is the last unit done in order (a shard number, a
-- project name); `done` once the whole phase is.
CREATE TABLE verify_progress (
    run_id   INTEGER NOT NULL REFERENCES verify_runs(id) ON DELETE CASCADE,
    phase    TEXT NOT NULL,
    position TEXT,
    done     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, phase)
) WITHOUT ROWID;

CREATE TABLE verify_problems (
    run_id  INTEGER NOT NULL REFERENCES verify_runs(id) ON DELETE CASCADE,
    path    TEXT NOT NULL,     -- relative to the mirror directory (web/…, tmp/…)
    kind    TEXT NOT NULL,     -- missing | bad_size | bad_hash | bad_page | orphan | drift
    detail  TEXT NOT NULL,
    project TEXT,              -- normalized name, for pages and drift
    serial  INTEGER,           -- drift: upstream's serial, for requeueing the project
    repair  TEXT,              -- NULL: not attempted; 'done'; else why it failed
    PRIMARY KEY (run_id, path, kind)
) WITHOUT ROWID;
