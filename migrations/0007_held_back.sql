-- The cooldown: per project, how many of the files upstream offers are held back for being
-- younger than `cooldown`, and when the first of them comes of age. A sync queues the
-- project then, without any upstream change. A project all of whose files are held back is
-- not in `projects` (it is not listed yet) but has a row here, with the serial to ask for.
CREATE TABLE held_back (
    name         TEXT PRIMARY KEY,   -- normalized project name
    display_name TEXT NOT NULL,
    serial       INTEGER NOT NULL,   -- the serial its files were judged at
    files        INTEGER NOT NULL,   -- files held back
    bytes        INTEGER NOT NULL,   -- their size
    matures_at   INTEGER NOT NULL    -- unix seconds: when the next of them comes of age
) WITHOUT ROWID;
CREATE INDEX held_back_matures_at ON held_back(matures_at);
