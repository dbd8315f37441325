//! A filter change: what the new configuration takes away from the mirror (for the
//! mass-delete guard and `--dry-run`, computed from the database before any request), and
//! which mirrored projects the sync must look at again.
//!
//! Only what the change can affect is revisited: a new blocklist entry requeues the projects
//! it removes (they are removed without a request), a changed specifier for one project
//! requeues that project, and a changed release or file filter requeues every mirrored
//! project (each is fetched again; files already held are not downloaded again).

use std::collections::BTreeSet;

use crate::filter::{FilterSpec, Filters};
use crate::state::{Change, State};
use crate::types::{ProjectName, Serial};

/// Mirrored projects are read from the database this many at a time.
const PAGE: usize = 10_000;

#[derive(Debug)]
pub struct FilterChange {
    old: Option<FilterSpec>,
    /// The project lists (allowlist, blocklist, regexes, requirements) differ.
    pub projects_changed: bool,
    /// A release or file filter differs: every mirrored project is re-evaluated.
    pub content_changed: bool,
    /// Projects whose own version specifiers differ.
    respecified: BTreeSet<String>,
}

/// What the new filters take away from what the mirror holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Impact {
    /// Mirrored projects left out entirely (by name, or over max_project_size).
    pub removed_projects: u64,
    /// Mirrored projects that keep their page but lose every file.
    pub emptied_projects: u64,
    /// Files held now that the new filters leave out, and their bytes.
    pub files: u64,
    pub bytes: u64,
}

impl Impact {
    /// What the mass-delete guard counts: a project emptied of every file is as gone to its
    /// users as a removed one.
    pub fn projects(&self) -> u64 {
        self.removed_projects + self.emptied_projects
    }
}

impl FilterChange {
    /// Compare the configuration the mirror was evaluated against (`stored`, canonical text;
    /// `None`: a mirror from before filters, i.e. no filters) with `new`. `None`: no change.
    pub fn detect(stored: Option<&str>, new: &Filters) -> Option<FilterChange> {
        let old = match stored {
            None => Some(FilterSpec::default()),
            // Unreadable (written by another version): assume everything changed.
            Some(text) => FilterSpec::from_canonical(text),
        };
        let new = new.spec();
        match &old {
            Some(old) if old == new => None,
            Some(old) => Some(FilterChange {
                projects_changed: !old.same_projects(new),
                content_changed: old.content != new.content,
                respecified: old.specifier_changes(new),
                old: Some(old.clone()),
            }),
            None => Some(FilterChange {
                old: None,
                projects_changed: true,
                content_changed: true,
                respecified: BTreeSet::new(),
            }),
        }
    }

    /// Whether projects the mirror does not hold may now be included, so a sync that learns
    /// of projects from a full listing must read it again: a shorter blocklist, a longer
    /// allowlist, or a size limit that may now let a project in.
    pub fn may_add_projects(&self, new: &Filters) -> bool {
        let Some(old) = &self.old else { return true };
        let new = new.spec();
        let had_allowlist = !old.allow.is_empty() || !old.allow_regex.is_empty();
        let has_allowlist = !new.allow.is_empty() || !new.allow_regex.is_empty();
        let allow_grew = had_allowlist
            && (!has_allowlist
                || !new.allow.keys().all(|k| old.allow.contains_key(k))
                || !new.allow_regex.is_subset(&old.allow_regex));
        let block_shrank =
            !old.block.is_subset(&new.block) || !old.block_regex.is_subset(&new.block_regex);
        let size_limited = old.content.max_project_size > 0 && self.content_changed;
        allow_grew || block_shrank || size_limited
    }

    /// Whether the mirrored project `name` must be looked at again.
    fn revisits(&self, new: &Filters, name: &ProjectName) -> bool {
        self.content_changed
            || self.respecified.contains(name.as_str())
            || (self.projects_changed && new.allows_project(name).is_err())
    }

    /// What applying `new` would take away, from the database alone. For a project that is
    /// fetched again this counts what goes of what it holds now (upstream may have more).
    pub fn impact(&self, new: &Filters, state: &State) -> crate::state::Result<Impact> {
        let mut impact = Impact::default();
        for_each_mirrored(state, |name, _, _| {
            if !self.revisits(new, name) {
                return Ok(());
            }
            let files = state.project_files(name)?;
            let held = files.len() as u64;
            let held_bytes: u64 = files.iter().map(|f| f.size).sum();
            let versions = state.project_versions(name)?;
            let records: Vec<_> = files.iter().collect();
            let selection = new.select(name, &versions, &records);
            if selection.excluded.is_some() {
                impact.removed_projects += 1;
                impact.files += held;
                impact.bytes += held_bytes;
                return Ok(());
            }
            let mut kept = 0;
            for (f, keep) in files.iter().zip(&selection.files) {
                if *keep {
                    kept += 1;
                } else {
                    impact.files += 1;
                    impact.bytes += f.size;
                }
            }
            if held > 0 && kept == 0 {
                impact.emptied_projects += 1;
            }
            Ok(())
        })?;
        Ok(impact)
    }

    /// The next batch of projects the sync must look at again, `None` when done: mirrored
    /// ones the change affects (at the serial they are mirrored at, so any fresh answer will
    /// do), then, with an allowlist of names, the listed ones not mirrored yet. `first_serial`
    /// is what they hold the fully synced serial back to (past the feed's: a filter change is
    /// not an upstream change).
    pub fn next_revisits(
        &self,
        new: &Filters,
        state: &State,
        cursor: &mut Revisits,
        first_serial: Serial,
    ) -> crate::state::Result<Option<Vec<Change>>> {
        let change = |name: ProjectName, display_name: String, serial: Serial| Change {
            name,
            display_name,
            serial,
            first_serial,
            conditional: false,
        };
        while !cursor.mirrored_done {
            let page = next_page(state, &mut cursor.after)?;
            if page.is_empty() {
                cursor.mirrored_done = true;
                break;
            }
            let batch: Vec<Change> = page
                .into_iter()
                .filter(|(name, ..)| self.revisits(new, name))
                .map(|(name, display, serial)| change(name, display, serial))
                .collect();
            if !batch.is_empty() {
                return Ok(Some(batch));
            }
        }
        if cursor.listed_done {
            return Ok(None);
        }
        cursor.listed_done = true;
        let mut missing = Vec::new();
        if let Some(listed) = new.listed_projects().filter(|_| self.projects_changed) {
            for name in listed {
                if state.project_serial(&name)?.is_none() {
                    missing.push(change(name.clone(), name.to_string(), Serial(0)));
                }
            }
        }
        Ok((!missing.is_empty()).then_some(missing))
    }
}

/// Where [`FilterChange::next_revisits`] is.
#[derive(Debug, Default)]
pub struct Revisits {
    after: Option<ProjectName>,
    mirrored_done: bool,
    listed_done: bool,
}

/// The next page of mirrored projects after the cursor, advancing it; empty at the end.
fn next_page(
    state: &State,
    after: &mut Option<ProjectName>,
) -> crate::state::Result<Vec<(ProjectName, String, Serial)>> {
    let page = state.projects_after(after.as_ref(), PAGE)?;
    if let Some((last, ..)) = page.last() {
        *after = Some(last.clone());
    }
    Ok(page)
}

/// Every mirrored project, a page at a time.
fn for_each_mirrored(
    state: &State,
    mut f: impl FnMut(&ProjectName, &str, Serial) -> crate::state::Result<()>,
) -> crate::state::Result<()> {
    let mut after: Option<ProjectName> = None;
    loop {
        let page = next_page(state, &mut after)?;
        if page.is_empty() {
            return Ok(());
        }
        for (name, display, serial) in &page {
            f(name, display, *serial)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(body: &str) -> Filters {
        let table: toml::Table = format!("[filters]\n{body}").parse().unwrap();
        crate::config::filters::parse(table.get("filters"), std::path::Path::new("/")).unwrap()
    }

    #[test]
    fn changes_are_told_apart() {
        let old = filters("allowlist = [\"a\", \"b>=1\"]\nblocklist = [\"x\"]");
        let stored = old.spec().to_canonical();
        assert!(FilterChange::detect(Some(&stored), &old).is_none());
        assert!(FilterChange::detect(None, &Filters::default()).is_none());
        // Same projects, one specifier changed: only that project is revisited.
        let c = FilterChange::detect(
            Some(&stored),
            &filters("allowlist = [\"a\", \"b>=2\"]\nblocklist = [\"x\"]"),
        )
        .unwrap();
        assert!(!c.projects_changed && !c.content_changed);
        // A longer allowlist may add projects; a longer blocklist may not.
        let new = filters("allowlist = [\"a\", \"b>=1\", \"c\"]\nblocklist = [\"x\"]");
        let c = FilterChange::detect(Some(&stored), &new).unwrap();
        assert!(c.projects_changed && c.may_add_projects(&new));
        let new = filters("allowlist = [\"a\", \"b>=1\"]\nblocklist = [\"x\", \"a\"]");
        let c = FilterChange::detect(Some(&stored), &new).unwrap();
        assert!(c.projects_changed && !c.may_add_projects(&new));
        let new = filters("allowlist = [\"a\", \"b>=1\"]");
        assert!(
            FilterChange::detect(Some(&stored), &new)
                .unwrap()
                .may_add_projects(&new)
        );
        // Something unreadable stored: everything is revisited.
        let c = FilterChange::detect(Some("{not json"), &old).unwrap();
        assert!(c.projects_changed && c.content_changed);
    }
}
