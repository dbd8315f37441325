//! The mass-delete guard: a run that would take more than `max_deletions` projects away
//! (upstream's listing lacks them, upstream answers 404 for them, or a filter change leaves
//! them out), or leave more than `max_deletions` mirrored projects without any file
//! (upstream still lists them, with no file), removes or empties none of them unless the
//! operator says `--allow-mass-delete`. One rule for the sync and its dry run.

use indicatif::HumanBytes;

use super::filter_change::Impact;
use crate::config::Config;

/// Per-run switches from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Remove projects even when more than `max_deletions` are gone upstream (or a filter
    /// change leaves them out).
    pub allow_mass_delete: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Guard {
    max_deletions: usize,
    allow: bool,
}

impl Guard {
    pub fn new(cfg: &Config, options: Options) -> Guard {
        Guard {
            max_deletions: cfg.max_deletions,
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
}
