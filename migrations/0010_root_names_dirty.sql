-- The root pages are now rewritten by what changed: 'root_dirty' alone (a project's serial)
-- rewrites the PEP 691 JSON root, which lists serials; 'root_names_dirty' (a project came,
-- went or was renamed) every root page. A flag set before this version did not say which, so
-- it now means every page.
INSERT OR IGNORE INTO meta (key, value)
    SELECT 'root_names_dirty', '1' FROM meta WHERE key = 'root_dirty';
