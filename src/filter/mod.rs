//! Filters: which projects, releases and files the mirror holds (`[filters]` in mirror.toml).
//!
//! The database records what the mirror holds, and pages are rendered from it, so a filter
//! acts once, on a project's validated [`ProjectSnapshot`], before anything is downloaded: a
//! file filtered out is never recorded, never downloaded, never in a page or the JSON API
//! mirror, and `verify` (which reads the database) expects exactly what is left.
//!
//! - Project filters (allowlist, blocklist, their regexes, requirements files) are decided
//!   from the name alone ([`Filters::allows_project`]), before any request.
//! - Release filters (specifiers, pre-releases, version regexes, yanked, latest N) and file
//!   filters (platform, Python tag, package type, file name, size) select within a project
//!   ([`Filters::select`]), as do the size limits, which may leave a project out entirely.
//!
//! - The cooldown (`cooldown`, [`cooldown`]) holds back files younger than it, as a file
//!   filter that depends on the clock: [`Filters`] carry the moment they judge at, and
//!   [`Selection::held_back`] says when each held-back file comes of age.
//! - Lock files ([`lockfile`]) pin exact versions (they join the allowlist) and name the
//!   SHA-256 of their files, which [`Filters::check_locked`] holds upstream to.
//!
//! [`FilterSpec`] is the effective configuration in canonical form; stored in the database,
//! it tells the next sync what changed (`sync::filter_change`).

pub mod cooldown;
pub mod lockfile;
pub mod pep440;
pub mod requirement;
pub mod tags;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use regex::RegexSet;
use serde::{Deserialize, Serialize};

use crate::types::ProjectName;
use crate::types::{FileRecord, HeldFile, ProjectSnapshot};
use pep440::{SpecifierSet, Version};
use tags::{PackageType, PlatformPattern, PythonTag};

/// Which releases' pre-releases are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prereleases {
    #[default]
    Keep,
    ExcludeAll,
    /// Normalized project names.
    ExcludeFor(BTreeSet<String>),
}

/// The filters that select within a project (everything but the project lists).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContentSpec {
    pub prereleases: Prereleases,
    /// Keep only this many newest releases per project (0: all).
    pub latest_releases: u64,
    pub exclude_versions: BTreeSet<String>,
    pub drop_yanked: bool,
    /// Canonical platform entries (family names or tag patterns).
    pub exclude_platforms: BTreeSet<String>,
    /// Canonical Python tags (`py2`, `cp27`).
    pub exclude_python: BTreeSet<String>,
    /// Upstream package type names (`sdist`, `bdist_wheel`, …).
    pub exclude_packagetypes: BTreeSet<String>,
    pub exclude_filenames: BTreeSet<String>,
    /// Bytes; 0: no limit.
    pub max_file_size: u64,
    pub max_project_size: u64,
    /// Projects the size limits do not apply to.
    pub size_allowlist: BTreeSet<String>,
    /// Seconds a file must have been uploaded for before it is mirrored (0: no cooldown).
    pub cooldown: u64,
    /// Projects the cooldown does not apply to.
    pub cooldown_exempt: BTreeSet<String>,
}

/// The effective filter configuration in canonical form: normalized names, normalized and
/// sorted specifiers, sorted sets. Equal configurations serialize to equal text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterSpec {
    /// Allowlisted projects (from `allowlist` and `requirements`), each with the specifier
    /// sets wanted of it; an empty string stands for "every version".
    pub allow: BTreeMap<String, BTreeSet<String>>,
    pub allow_regex: BTreeSet<String>,
    /// Projects left out entirely.
    pub block: BTreeSet<String>,
    /// Releases left out, by project: `django<3` blocks those versions only.
    pub block_versions: BTreeMap<String, BTreeSet<String>>,
    pub block_regex: BTreeSet<String>,
    pub content: ContentSpec,
    /// The SHA-256 lock files give for files: project → file name → hex.
    pub locked: BTreeMap<String, BTreeMap<String, String>>,
}

impl FilterSpec {
    /// The canonical text stored in the database.
    pub fn to_canonical(&self) -> String {
        serde_json::to_string(self).expect("the filter spec serializes")
    }

    pub fn from_canonical(text: &str) -> Option<FilterSpec> {
        serde_json::from_str(text).ok()
    }

    /// Whether the project lists (what is mirrored at all) differ.
    pub fn same_projects(&self, other: &FilterSpec) -> bool {
        self.allow.keys().eq(other.allow.keys())
            && self.allow_regex == other.allow_regex
            && self.block == other.block
            && self.block_regex == other.block_regex
    }

    /// Projects whose own release specifiers (or locked hashes) differ between the two.
    pub fn specifier_changes(&self, other: &FilterSpec) -> BTreeSet<String> {
        fn changed<V: PartialEq>(
            a: &BTreeMap<String, V>,
            b: &BTreeMap<String, V>,
        ) -> impl Iterator<Item = String> {
            let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            names
                .into_iter()
                .filter(|n| a.get(*n) != b.get(*n))
                .cloned()
                .collect::<Vec<_>>()
                .into_iter()
        }
        changed(&self.allow, &other.allow)
            .chain(changed(&self.block_versions, &other.block_versions))
            .chain(changed(&self.locked, &other.locked))
            .collect()
    }
}

/// The compiled filters the sync applies.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    spec: FilterSpec,
    /// Per allowlisted project: `None` every version, else the sets of which any may match.
    allow: HashMap<String, Option<Vec<SpecifierSet>>>,
    allow_regex: Option<RegexSet>,
    block_versions: HashMap<String, Vec<SpecifierSet>>,
    block_regex: Option<RegexSet>,
    exclude_versions: Option<RegexSet>,
    exclude_platforms: Vec<PlatformPattern>,
    exclude_python: Vec<PythonTag>,
    exclude_packagetypes: Vec<PackageType>,
    exclude_filenames: Option<RegexSet>,
    /// The moment the cooldown is judged at (unix seconds): when the filters were compiled,
    /// so one run judges every project alike.
    now: i64,
}

/// What [`Filters::select`] keeps of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The whole project is left out, for this reason.
    pub excluded: Option<String>,
    /// One per version given, in order.
    pub versions: Vec<bool>,
    /// One per file given, in order.
    pub files: Vec<bool>,
    /// One per file given: when a file the cooldown holds back comes of age (unix seconds).
    /// Such a file is not kept, and a release whose only files are held back is left out.
    pub held_back: Vec<Option<i64>>,
}

impl Filters {
    /// Compile a canonical spec. Config parsing checks every entry first, with errors that
    /// name the key, so this fails only on a spec stored by something else.
    pub fn compile(spec: FilterSpec) -> Result<Filters, String> {
        let sets = |texts: &BTreeSet<String>| -> Result<Vec<SpecifierSet>, String> {
            texts
                .iter()
                .map(|t| {
                    t.parse()
                        .map_err(|e: pep440::InvalidSpecifier| e.to_string())
                })
                .collect()
        };
        let regexes = |patterns: &BTreeSet<String>| -> Result<Option<RegexSet>, String> {
            if patterns.is_empty() {
                return Ok(None);
            }
            RegexSet::new(patterns).map(Some).map_err(|e| e.to_string())
        };
        let mut allow = HashMap::new();
        for (name, texts) in &spec.allow {
            let every = texts.is_empty() || texts.contains("");
            allow.insert(name.clone(), if every { None } else { Some(sets(texts)?) });
        }
        let mut block_versions = HashMap::new();
        for (name, texts) in &spec.block_versions {
            block_versions.insert(name.clone(), sets(texts)?);
        }
        let c = &spec.content;
        Ok(Filters {
            allow,
            allow_regex: regexes(&spec.allow_regex)?,
            block_versions,
            block_regex: regexes(&spec.block_regex)?,
            exclude_versions: regexes(&c.exclude_versions)?,
            exclude_platforms: c
                .exclude_platforms
                .iter()
                .map(|p| PlatformPattern::parse(p).map(|(_, p)| p))
                .collect::<Result<_, _>>()?,
            exclude_python: c
                .exclude_python
                .iter()
                .map(|t| PythonTag::parse(t).ok_or_else(|| format!("bad Python tag {t:?}")))
                .collect::<Result<_, _>>()?,
            exclude_packagetypes: c
                .exclude_packagetypes
                .iter()
                .map(|t| PackageType::from_name(t).ok_or_else(|| format!("bad package type {t:?}")))
                .collect::<Result<_, _>>()?,
            exclude_filenames: regexes(&c.exclude_filenames)?,
            spec,
            now: cooldown::unix_now(),
        })
    }

    /// The same filters judging the cooldown at `now` (unix seconds).
    pub fn at(self, now: i64) -> Filters {
        Filters { now, ..self }
    }

    /// The moment the cooldown is judged at.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Whether files of `name` are held back while young (a cooldown, and not exempt).
    pub fn cooldown_applies(&self, name: &ProjectName) -> bool {
        let c = &self.spec.content;
        c.cooldown > 0 && !c.cooldown_exempt.contains(name.as_str())
    }

    pub fn spec(&self) -> &FilterSpec {
        &self.spec
    }

    pub fn is_empty(&self) -> bool {
        self.spec == FilterSpec::default()
    }

    fn has_allowlist(&self) -> bool {
        !self.spec.allow.is_empty() || !self.spec.allow_regex.is_empty()
    }

    /// The project filters, from the name alone: `Err` with the reason when left out.
    pub fn allows_project(&self, name: &ProjectName) -> Result<(), String> {
        let name = name.as_str();
        if self.spec.block.contains(name) {
            return Err("it is in the blocklist".into());
        }
        if self.block_regex.as_ref().is_some_and(|r| r.is_match(name)) {
            return Err("it matches blocklist_regex".into());
        }
        if self.has_allowlist()
            && !self.allow.contains_key(name)
            && !self.allow_regex.as_ref().is_some_and(|r| r.is_match(name))
        {
            return Err("it is not in the allowlist".into());
        }
        Ok(())
    }

    /// With an allowlist of names only (no `allowlist_regex`), the complete set of projects
    /// the mirror can hold: the sync then asks upstream about these alone.
    pub fn listed_projects(&self) -> Option<Vec<ProjectName>> {
        if self.spec.allow.is_empty() || !self.spec.allow_regex.is_empty() {
            return None;
        }
        Some(
            self.spec
                .allow
                .keys()
                .filter_map(|n| ProjectName::new(n).ok())
                .filter(|n| self.allows_project(n).is_ok())
                .collect(),
        )
    }

    /// Leave out of `snapshot` what the filters exclude. `Err` with the reason when the whole
    /// project is left out.
    pub fn apply(&self, snapshot: &mut ProjectSnapshot) -> Result<(), String> {
        if self.is_empty() {
            return Ok(());
        }
        let files: Vec<&FileRecord> = snapshot.files.iter().map(|f| &f.record).collect();
        let selection = self.select(&snapshot.name, &snapshot.versions, &files);
        if let Some(why) = selection.excluded {
            return Err(why);
        }
        snapshot.held_back = snapshot
            .files
            .iter()
            .zip(&selection.held_back)
            .filter_map(|(f, at)| {
                at.map(|matures_at| HeldFile {
                    filename: f.record.filename.clone(),
                    size: f.record.size,
                    matures_at,
                })
            })
            .collect();
        let mut keep = selection.versions.into_iter();
        snapshot.versions.retain(|_| keep.next().unwrap_or(false));
        let mut keep = selection.files.into_iter();
        snapshot.files.retain(|_| keep.next().unwrap_or(false));
        Ok(())
    }

    /// Refuse the files of `snapshot` whose SHA-256 upstream gives differs from the one a
    /// lock file names: a tampered upstream (or a lock written against another index). Each
    /// goes to `snapshot.refused` with both digests; the download then checks the bytes
    /// against upstream's digest, which is the lock's. Returns the files a lock names that
    /// upstream does not list (a build installing from the lock would miss them).
    pub fn check_locked(&self, snapshot: &mut ProjectSnapshot) -> Vec<String> {
        let Some(locked) = self.spec.locked.get(snapshot.name.as_str()) else {
            return Vec::new();
        };
        let listed: HashSet<&str> = snapshot
            .files
            .iter()
            .map(|f| f.record.filename.as_str())
            .collect();
        let missing = locked
            .keys()
            .filter(|f| !listed.contains(f.as_str()))
            .cloned()
            .collect();
        let mut refused = Vec::new();
        snapshot.files.retain(|f| {
            let Some(want) = locked.get(f.record.filename.as_str()) else {
                return true;
            };
            let given = f.record.sha256.to_hex();
            if *want == given {
                return true;
            }
            refused.push(format!(
                "{}: upstream gives {} the sha256 {given}, the lock file names {want}; refused \
                 (a tampered upstream, or a lock file written against another index)",
                snapshot.name, f.record.filename
            ));
            false
        });
        snapshot.refused.extend(refused);
        missing
    }

    /// Decide a project: which of its `versions` and `files` are kept, or that it is left
    /// out. Release filters first, then file filters, then "latest N" among the releases
    /// that still have a file, then the project size limit.
    pub fn select(
        &self,
        name: &ProjectName,
        versions: &[String],
        files: &[&FileRecord],
    ) -> Selection {
        let mut selection = Selection {
            excluded: None,
            versions: vec![true; versions.len()],
            files: vec![true; files.len()],
            held_back: vec![None; files.len()],
        };
        if let Err(why) = self.allows_project(name) {
            selection.excluded = Some(why);
            return selection;
        }
        if self.spec.content == ContentSpec::default()
            && !self.allow.get(name.as_str()).is_some_and(Option::is_some)
            && !self.block_versions.contains_key(name.as_str())
        {
            return selection;
        }
        let c = &self.spec.content;
        let size_exempt = c.size_allowlist.contains(name.as_str());
        let cooldown = self.cooldown_applies(name).then_some(c.cooldown);

        // Every version the project has, parsed once.
        let mut parsed: BTreeMap<&str, Option<Version>> = BTreeMap::new();
        for v in versions.iter().chain(files.iter().map(|f| &f.version)) {
            parsed
                .entry(v.as_str())
                .or_insert_with(|| Version::parse(v));
        }
        let release_ok = self.release_filter(name, &parsed, files);

        let mut kept_files_of: HashMap<&str, usize> = HashMap::new();
        let mut held_back_of: HashSet<&str> = HashSet::new();
        for ((keep, held), f) in selection
            .files
            .iter_mut()
            .zip(&mut selection.held_back)
            .zip(files)
        {
            *keep = release_ok.contains(f.version.as_str()) && self.file_ok(f, size_exempt);
            if *keep
                && let Some(at) = cooldown
                    .and_then(|c| cooldown::matures_at(f.upload_time.as_deref(), c))
                    .filter(|at| *at > self.now)
            {
                *keep = false;
                *held = Some(at);
                held_back_of.insert(f.version.as_str());
            }
            if *keep {
                *kept_files_of.entry(f.version.as_str()).or_default() += 1;
            }
        }
        // A release whose files are all held back is not offered yet.
        let mut version_ok = release_ok;
        version_ok.retain(|v| !held_back_of.contains(v) || kept_files_of.contains_key(v));
        if c.latest_releases > 0 {
            let mut candidates: Vec<&str> = version_ok
                .iter()
                .copied()
                .filter(|v| kept_files_of.contains_key(v))
                .collect();
            // Newest first; versions that are not PEP 440 sort below every valid one.
            candidates.sort_by(|a, b| parsed[b].cmp(&parsed[a]).then_with(|| b.cmp(a)));
            version_ok = candidates
                .into_iter()
                .take(usize::try_from(c.latest_releases).unwrap_or(usize::MAX))
                .collect();
            for (keep, f) in selection.files.iter_mut().zip(files) {
                *keep &= version_ok.contains(f.version.as_str());
            }
        }
        for (keep, v) in selection.versions.iter_mut().zip(versions) {
            *keep = version_ok.contains(v.as_str());
        }
        if c.max_project_size > 0 && !size_exempt {
            let total: u64 = files
                .iter()
                .zip(&selection.files)
                .filter(|(_, keep)| **keep)
                .map(|(f, _)| f.size)
                .sum();
            if total > c.max_project_size {
                selection.excluded = Some(format!(
                    "its files take {total} bytes, more than max_project_size = {}",
                    c.max_project_size
                ));
            }
        }
        selection
    }

    /// The versions the release filters keep.
    fn release_filter<'a>(
        &self,
        name: &ProjectName,
        parsed: &BTreeMap<&'a str, Option<Version>>,
        files: &[&FileRecord],
    ) -> HashSet<&'a str> {
        let c = &self.spec.content;
        let all: Vec<(&'a str, Option<&Version>)> =
            parsed.iter().map(|(raw, v)| (*raw, v.as_ref())).collect();
        let mut ok: HashSet<&'a str> = match self.allow.get(name.as_str()) {
            Some(Some(sets)) => sets.iter().flat_map(|s| s.select(&all)).collect(),
            _ => parsed.keys().copied().collect(),
        };
        if let Some(sets) = self.block_versions.get(name.as_str()) {
            ok.retain(|raw| {
                !sets
                    .iter()
                    .any(|s| s.contains_any(raw, parsed[raw].as_ref()))
            });
        }
        let drop_pre = match &c.prereleases {
            Prereleases::Keep => false,
            Prereleases::ExcludeAll => true,
            Prereleases::ExcludeFor(names) => names.contains(name.as_str()),
        };
        if drop_pre {
            ok.retain(|raw| !parsed[raw].as_ref().is_some_and(Version::is_prerelease));
        }
        if let Some(re) = &self.exclude_versions {
            ok.retain(|raw| !re.is_match(raw));
        }
        if c.drop_yanked {
            // A yanked release is one whose files are all yanked.
            let mut all_yanked: HashMap<&str, bool> = HashMap::new();
            for f in files {
                *all_yanked.entry(f.version.as_str()).or_insert(true) &= f.yanked;
            }
            ok.retain(|raw| !all_yanked.get(raw).copied().unwrap_or(false));
        }
        ok
    }

    /// The file filters.
    fn file_ok(&self, f: &FileRecord, size_exempt: bool) -> bool {
        let c = &self.spec.content;
        if c.drop_yanked && f.yanked {
            return false;
        }
        if c.max_file_size > 0 && !size_exempt && f.size > c.max_file_size {
            return false;
        }
        if self
            .exclude_filenames
            .as_ref()
            .is_some_and(|re| re.is_match(f.filename.as_str()))
        {
            return false;
        }
        if self.exclude_platforms.is_empty()
            && self.exclude_python.is_empty()
            && self.exclude_packagetypes.is_empty()
        {
            return true;
        }
        let tags = tags::tags(f);
        if tags
            .packagetype
            .is_some_and(|t| self.exclude_packagetypes.contains(&t))
        {
            return false;
        }
        // A file goes only when every platform (Python version) it is built for is excluded:
        // `py2.py3` stays when only py2 is excluded.
        if !tags.platforms.is_empty()
            && !self.exclude_platforms.is_empty()
            && tags
                .platforms
                .iter()
                .all(|p| self.exclude_platforms.iter().any(|e| e.matches(p)))
        {
            return false;
        }
        if !tags.pythons.is_empty()
            && !self.exclude_python.is_empty()
            && tags
                .pythons
                .iter()
                .all(|t| self.exclude_python.iter().any(|e| e.covers(t, tags.abi3)))
        {
            return false;
        }
        true
    }
}
