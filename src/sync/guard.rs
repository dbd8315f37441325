//! The mass-delete guard: a run that would take more than `max_deletions` projects away
//! (upstream's listing lacks them, upstream answers 404 for them, or a filter change leaves
//! them out), or leave more than `max_deletions` mirrored projects without any file
//! (upstream still lists them, with no file), removes or empties none of them unless the
//! operator says `--allow-mass-delete`. One rule for the sync and its dry run.
//!
//! Files are weighed too. Across one run, the guard counts the files the mirror held of every
//! project the run decided to keep (`Decision::Keep`: it looked at them), and the held files
//! those decisions delete (upstream no longer lists them, lists them with other content, or
//! the filters now leave them out). A run that would delete more than `max_deletions` files
//! AND more than `max_deletion_share` (0.0 to 1.0, default 0.5) of the files it looked at
//! deletes none of them: every project whose decision deletes files is deferred to the end of
//! the queue (`project::Outcome::Deferred`), and when the guard holds, each stays queued with
//! its last error "held back by the mass-delete guard: …", nothing of it changes, and the run
//! exits 1. `max_deletion_share = 1.0` turns the file count off (a run never deletes more
//! than it looked at); `0.0` holds any run deleting more than `max_deletions` files. Projects
//! left without any file are counted both ways: as projects emptied and as files deleted.

use indicatif::HumanBytes;

use super::filter_change::Impact;
use crate::config::Config;

/// Per-run switches from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Remove projects, and delete files, even when the run would take more away than
    /// `max_deletions` (and `max_deletion_share`) allow.
    pub allow_mass_delete: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Guard {
    max_deletions: usize,
    max_share: f64,
    allow: bool,
}

/// What one run's decisions would delete of the files the mirror holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Weight {
    /// Files the mirror held of the projects the run decided to keep.
    pub looked: u64,
    /// Of those, the files the decisions delete.
    pub deleting: u64,
}

impl Guard {
    pub fn new(cfg: &Config, options: Options) -> Guard {
        Guard {
            max_deletions: cfg.max_deletions,
            max_share: cfg.max_deletion_share,
            allow: options.allow_mass_delete,
        }
    }

    /// Whether removing `projects` projects is held back.
    pub fn holds(&self, projects: u64) -> bool {
        projects > self.max_deletions as u64 && !self.allow
    }

    /// A filter change that would take too much away stops the run before anything changes.
    pub fn filter_change(&self, impact: &Impact) -> anyhow::Result<()> {
        if self.holds(impact.projects()) {
            anyhow::bail!(
                "the filter configuration changed: it removes {} mirrored projects and leaves {} \
                 without any file ({} files, {}), more than max_deletions = {}; nothing was changed. \
                 Check [filters]; if this is what you want, run again with --allow-mass-delete",
                impact.removed_projects,
                impact.emptied_projects,
                impact.files,
                HumanBytes(impact.bytes),
                self.max_deletions
            );
        }
        Ok(())
    }

    /// A root listing that lacks too many mirrored projects: why to stop.
    pub fn unlisted(&self, unlisted: usize) -> Option<String> {
        self.holds(unlisted as u64).then(|| {
            format!(
                "upstream's listing lacks {unlisted} projects this mirror holds, more than max_deletions = {}. \
                 If upstream really removed them, run again with --allow-mass-delete",
                self.max_deletions
            )
        })
    }

    /// Projects upstream answered 404 for: why their removal is held back, when it is.
    pub fn gone(&self, gone: u64) -> Option<String> {
        self.holds(gone).then(|| {
            format!(
                "{gone} projects are gone upstream, more than max_deletions = {}",
                self.max_deletions
            )
        })
    }

    /// Projects upstream still lists but without any of the files the mirror holds: why
    /// emptying them is held back, when it is.
    pub fn emptied(&self, emptied: u64) -> Option<String> {
        self.holds(emptied).then(|| {
            format!(
                "{emptied} mirrored projects would be left without any file (upstream lists none), \
                 more than max_deletions = {}",
                self.max_deletions
            )
        })
    }

    /// A run's file deletions: why they are held back, when they are (more than
    /// `max_deletions` files and more than `max_deletion_share` of the files looked at).
    pub fn files(&self, weight: Weight) -> Option<String> {
        let Weight { looked, deleting } = weight;
        let many = deleting > self.max_deletions as u64;
        // Counts below 2^53 are exact as f64.
        let large_share = deleting as f64 > self.max_share * looked as f64;
        (many && large_share && !self.allow).then(|| {
            format!(
                "this run would delete {deleting} of the {looked} files it looked at, more than \
                 max_deletions = {} and more than max_deletion_share = {} of them",
                self.max_deletions, self.max_share
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max_deletions: usize, max_share: f64, allow: bool) -> Guard {
        Guard {
            max_deletions,
            max_share,
            allow,
        }
    }

    fn weight(looked: u64, deleting: u64) -> Weight {
        Weight { looked, deleting }
    }

    #[test]
    fn files_are_held_back_only_when_both_many_and_a_large_share() {
        let g = guard(2, 0.5, false);
        // 9 of 12: more than 2 and more than half.
        let why = g.files(weight(12, 9)).unwrap();
        assert!(
            why.contains("max_deletions = 2") && why.contains("max_deletion_share = 0.5"),
            "{why}"
        );
        // Few files, whatever their share.
        assert!(g.files(weight(4, 2)).is_none());
        // Many files, but a small share of what was looked at.
        assert!(g.files(weight(100, 50)).is_none());
        assert!(g.files(weight(100, 51)).is_some());
        // Nothing looked at, nothing deleted.
        assert!(g.files(Weight::default()).is_none());
        // 1.0: the share never holds; 0.0: any count over max_deletions does.
        assert!(guard(2, 1.0, false).files(weight(12, 12)).is_none());
        assert!(guard(2, 0.0, false).files(weight(1_000_000, 3)).is_some());
        // --allow-mass-delete.
        assert!(guard(2, 0.5, true).files(weight(12, 9)).is_none());
    }
}
