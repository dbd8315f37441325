-- Fields for the complete simple index (PEP 658/714, 740, 792, extra hashes).

-- PEP 792 project status as upstream's simple page gave it (NULL: not given, i.e. active).
ALTER TABLE projects ADD COLUMN status TEXT;
ALTER TABLE projects ADD COLUMN status_reason TEXT;

-- sha256 of the PEP 658 `<file>.metadata` sidecar, set only once the mirror holds it.
ALTER TABLE files ADD COLUMN core_metadata_sha256 TEXT;
-- PEP 740 provenance URL as upstream gave it (absolute).
ALTER TABLE files ADD COLUMN provenance TEXT;
-- Digests besides sha256 that upstream's simple page lists, as a JSON object {name: hex}.
ALTER TABLE files ADD COLUMN extra_hashes TEXT;
