-- Files no project references any more, queued for deletion in the same transaction that
-- dropped their last reference, so a crash between that commit and the unlink never leaks
-- them: every run empties what is left here first.
CREATE TABLE trash (
    path TEXT PRIMARY KEY            -- relative to web/
) WITHOUT ROWID;

-- One row per sync, for `pymirror status`.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    started_at  INTEGER NOT NULL,    -- unix seconds
    finished_at INTEGER,             -- NULL while running, or when the run was killed
    outcome     TEXT,                -- complete | partial | interrupted | failed
    summary     TEXT                 -- the closing log line
);
