-- Upstreams without serials (an HTML-only root, devpi, Artifactory): what each project's page
-- was when it was last mirrored, so the next run asks "changed since?" (a 304 answer) or
-- compares digests instead of reading everything again.
CREATE TABLE page_validators (
    name          TEXT PRIMARY KEY,   -- normalized project name
    etag          TEXT,               -- ETag, sent back as If-None-Match
    last_modified TEXT,               -- Last-Modified, sent back as If-Modified-Since
    digest        TEXT NOT NULL       -- sha256 (hex) of the page body as served
) WITHOUT ROWID;

-- Queued by a serial-less feed: fetched conditionally, and done without a change when
-- upstream's page is as mirrored. A filter change or a repair queues unconditionally.
ALTER TABLE todo ADD COLUMN conditional INTEGER NOT NULL DEFAULT 0;
