-- A project's staged keys side by side: keyed by their hash-named paths, each of a project's
-- files landed on its own page of the table, so staging a project and recording it wrote a
-- page per file twice over. Keyed by project first, they share a page or two. Looking a path
-- up (verify, for a file it found unreferenced) scans the table, which holds only the keys of
-- projects being synced.
CREATE TABLE staged_by_project (
    project TEXT NOT NULL,             -- normalized name
    path    TEXT NOT NULL,             -- relative to web/
    PRIMARY KEY (project, path)
) WITHOUT ROWID;
INSERT INTO staged_by_project (project, path) SELECT project, path FROM staged;
DROP TABLE staged;
ALTER TABLE staged_by_project RENAME TO staged;
