//! The `[filters]` table of mirror.toml → [`Filters`], every entry checked with a one-line
//! error naming the key, the entry and the fix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use toml::Value;

use super::Keys;
use crate::filter::requirement::{self, Requirement};
use crate::filter::tags::{PackageType, PlatformPattern, PythonTag};
use crate::filter::{FilterSpec, Filters, Prereleases};
use crate::filter::{cooldown, lockfile};
use crate::types::ProjectName;

const KEYS: &[&str] = &[
    "allowlist",
    "allowlist_regex",
    "requirements",
    "blocklist",
    "blocklist_regex",
    "exclude_prereleases",
    "latest_releases",
    "exclude_versions",
    "yanked",
    "exclude_platforms",
    "exclude_python",
    "exclude_packagetypes",
    "exclude_filenames",
    "max_file_size",
    "max_project_size",
    "size_allowlist",
    "cooldown",
    "cooldown_exempt",
    "lockfiles",
];

/// Parse `[filters]` (absent: no filters). Requirements and lock files are read now,
/// relative to `base`, so a broken one stops the run before anything changes.
pub fn parse(table: Option<&Value>, base: &Path) -> Result<Filters, String> {
    let Some(table) = table else {
        return Ok(Filters::default());
    };
    let Value::Table(table) = table else {
        return Err("filters must be a table: write [filters] on a line of its own".into());
    };
    for key in table.keys() {
        if !KEYS.contains(&key.as_str()) {
            return Err(format!(
                "unknown key `{key}` in [filters]; remove it or use one of: {}",
                KEYS.join(", ")
            ));
        }
    }
    let keys = Keys("filters", table);
    let list = |key: &str, example: &str| -> Result<Vec<String>, String> {
        Ok(keys.string_list(key, example)?.unwrap_or_default())
    };
    let entry_error = |key: &str, entry: &str, why: &str, fix: &str| {
        format!("[filters] {key} entry {entry:?}: {why}; {fix}")
    };

    let mut spec = FilterSpec::default();
    let mut allowed = |r: Requirement| {
        spec.allow
            .entry(r.name.to_string())
            .or_default()
            .insert(r.specifiers.to_string());
    };
    for entry in list("allowlist", r#"["django>=4.2", "requests"]"#)? {
        let r = requirement::parse(&entry).map_err(|e| {
            entry_error(
                "allowlist",
                &entry,
                &e,
                r#"write a project name with optional PEP 440 specifiers, e.g. "django>=4.2""#,
            )
        })?;
        allowed(r);
    }
    for file in list("requirements", r#"["requirements.txt"]"#)? {
        let requirements = requirement::read_file(&base.join(&file))
            .map_err(|e| format!("[filters] requirements: {e}"))?;
        requirements.into_iter().for_each(&mut allowed);
    }
    let mut locked = BTreeMap::new();
    // Said once the whole table is read: a mistake further on is the one line shown.
    let mut skipped = Vec::new();
    for file in list("lockfiles", r#"["uv.lock", "pylock.toml"]"#)? {
        let path = base.join(&file);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "[filters] lockfiles: cannot read lock file {} ({e}); fix the path (relative to the configuration file) or remove it from lockfiles",
                path.display()
            )
        })?;
        let lock = lockfile::parse(&text).map_err(|e| {
            format!(
                "[filters] lockfiles: {} is not a lock file pymirror reads: {e}; fix it or remove it from lockfiles",
                path.display()
            )
        })?;
        skipped.extend(
            lock.skipped
                .iter()
                .map(|why| format!("lock file {}: {why}; skipped", path.display())),
        );
        for pin in lock.pins {
            let of = locked
                .entry(pin.requirement.name.to_string())
                .or_insert_with(BTreeMap::new);
            for (filename, sha256) in pin.files {
                let hex = sha256.to_hex();
                if let Some(other) = of.insert(filename.to_string(), hex.clone())
                    && other != hex
                {
                    return Err(format!(
                        "[filters] lockfiles: {} names the sha256 {hex} for {filename}, another lock file {other}; at most one is right: fix or regenerate them",
                        path.display()
                    ));
                }
            }
            allowed(pin.requirement);
        }
    }
    spec.locked = locked;
    spec.allow_regex = regexes("allowlist_regex", &list)?;
    for entry in list("blocklist", r#"["tensorflow", "django<3"]"#)? {
        let r = requirement::parse(&entry).map_err(|e| {
            entry_error("blocklist", &entry, &e, r#"write a project name, optionally with the versions to leave out, e.g. "django<3""#)
        })?;
        if r.specifiers.is_empty() {
            spec.block.insert(r.name.to_string());
        } else {
            spec.block_versions
                .entry(r.name.to_string())
                .or_default()
                .insert(r.specifiers.to_string());
        }
    }
    spec.block_regex = regexes("blocklist_regex", &list)?;

    let c = &mut spec.content;
    c.prereleases = match table.get("exclude_prereleases") {
        None | Some(Value::Boolean(false)) => Prereleases::Keep,
        Some(Value::Boolean(true)) => Prereleases::ExcludeAll,
        Some(Value::Array(_)) => Prereleases::ExcludeFor(names(
            "exclude_prereleases",
            list("exclude_prereleases", r#"["django"]"#)?,
        )?),
        Some(_) => {
            return Err(keys.wrong(
                "exclude_prereleases",
                r#"true, false or a list of project names, e.g. ["django"]"#,
            ));
        }
    };
    c.latest_releases = keys.integer("latest_releases", 0, i64::MAX)?.unwrap_or(0) as u64;
    c.exclude_versions = regexes("exclude_versions", &list)?;
    c.drop_yanked = match keys.string("yanked")?.as_deref() {
        None | Some("keep") => false,
        Some("drop") => true,
        Some(other) => {
            return Err(format!(
                "[filters] yanked = {other:?} is not \"keep\" or \"drop\"; pick one"
            ));
        }
    };
    for entry in list("exclude_platforms", r#"["windows", "macos", "*_i686"]"#)? {
        let (canonical, _) = PlatformPattern::parse(&entry)
            .map_err(|why| entry_error("exclude_platforms", &entry, &why, "fix or remove it"))?;
        c.exclude_platforms.insert(canonical);
    }
    for entry in list("exclude_python", r#"["py2", "cp36"]"#)? {
        let tag = PythonTag::parse(&entry).ok_or_else(|| {
            entry_error(
                "exclude_python",
                &entry,
                "not a Python tag",
                "write one like py2, py3, py27, cp27, cp312 or pp39",
            )
        })?;
        c.exclude_python.insert(tag.to_string());
    }
    for entry in list("exclude_packagetypes", r#"["egg", "exe"]"#)? {
        let t = PackageType::from_name(&entry).ok_or_else(|| {
            entry_error(
                "exclude_packagetypes",
                &entry,
                "not a package type",
                &format!("use one of {}", PackageType::names()),
            )
        })?;
        c.exclude_packagetypes.insert(t.name().to_owned());
    }
    c.exclude_filenames = regexes("exclude_filenames", &list)?;
    c.max_file_size = size(&keys, "max_file_size")?;
    c.max_project_size = size(&keys, "max_project_size")?;
    c.size_allowlist = names(
        "size_allowlist",
        list("size_allowlist", r#"["tensorflow"]"#)?,
    )?;
    c.cooldown = match table.get("cooldown") {
        None => 0,
        Some(Value::Integer(0)) => 0,
        Some(Value::String(s)) => cooldown::parse_duration(s).ok_or_else(|| {
            keys.wrong(
                "cooldown",
                r#"a duration like "90s", "30m", "48h" or "7d", or 0 (off)"#,
            )
        })?,
        Some(_) => {
            return Err(keys.wrong(
                "cooldown",
                r#"a duration like "90s", "30m", "48h" or "7d", or 0 (off)"#,
            ));
        }
    };
    c.cooldown_exempt = names(
        "cooldown_exempt",
        list("cooldown_exempt", r#"["certifi", "urllib3"]"#)?,
    )?;
    if !c.size_allowlist.is_empty() && c.max_file_size == 0 && c.max_project_size == 0 {
        return Err(
            "[filters] size_allowlist is set but neither max_file_size nor max_project_size is; set a limit or remove size_allowlist"
                .into(),
        );
    }
    let filters = Filters::compile(spec).map_err(|e| format!("[filters] {e}; fix the entry"))?;
    for line in skipped {
        tracing::info!("{line}");
    }
    Ok(filters)
}

/// Regular expressions, each checked on its own so the error names it.
fn regexes(
    key: &str,
    list: &impl Fn(&str, &str) -> Result<Vec<String>, String>,
) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    for pattern in list(key, r#"["^internal-", "\\.dev"]"#)? {
        if let Err(e) = regex::Regex::new(&pattern) {
            // regex's messages span lines (pattern, caret, cause): keep the cause.
            let text = e.to_string();
            let cause = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .unwrap_or_else(|| text.lines().next().unwrap_or_default());
            return Err(format!(
                "[filters] {key} entry {pattern:?} is not a valid regular expression ({cause}); fix it"
            ));
        }
        out.insert(pattern);
    }
    Ok(out)
}

fn names(key: &str, entries: Vec<String>) -> Result<BTreeSet<String>, String> {
    entries
        .into_iter()
        .map(|e| {
            ProjectName::new(e.trim())
                .map(|n| n.to_string())
                .map_err(|_| format!("[filters] {key} entry {e:?} is not a project name; fix it"))
        })
        .collect()
}

/// Bytes: a whole number, or a string with a unit (`"500 MB"`, `"2 GiB"`); 0 is no limit.
fn size(keys: &Keys<'_>, key: &str) -> Result<u64, String> {
    let wrong = || {
        keys.wrong(
            key,
            r#"a size: a number of bytes or a string like "500 MB" or "2 GiB""#,
        )
    };
    match keys.1.get(key) {
        None => Ok(0),
        Some(Value::Integer(n)) => u64::try_from(*n).map_err(|_| wrong()),
        Some(Value::String(s)) => parse_size(s).ok_or_else(wrong),
        Some(_) => Err(wrong()),
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000_u64.pow(2),
        "gb" => 1000_u64.pow(3),
        "tb" => 1000_u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return None,
    };
    let bytes = number * factor as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_filters(body: &str) -> Result<Filters, String> {
        let table: toml::Table = format!("[filters]\n{body}").parse().unwrap();
        parse(table.get("filters"), Path::new("/nonexistent"))
    }

    #[test]
    fn absent_table_means_no_filters() {
        assert!(parse(None, Path::new(".")).unwrap().is_empty());
        assert!(parse_filters("").unwrap().is_empty());
    }

    #[test]
    fn entries_are_canonical() {
        let a = parse_filters(
            "allowlist = [\"Django >= 4.2.0, <5\", \"zope.interface\"]\nexclude_platforms = [\"Windows\", \"osx\"]\nexclude_python = [\"py2.7\"]\nexclude_packagetypes = [\"exe\", \"bdist_wininst\"]\nmax_file_size = \"1 KiB\"\n",
        )
        .unwrap();
        let b = parse_filters(
            "allowlist = [\"zope-interface\", \"django<5,>=4.2.0\"]\nexclude_platforms = [\"macos\", \"windows\"]\nexclude_python = [\"py27\"]\nexclude_packagetypes = [\"bdist_wininst\"]\nmax_file_size = 1024\n",
        )
        .unwrap();
        assert_eq!(a.spec().to_canonical(), b.spec().to_canonical());
        let spec = FilterSpec::from_canonical(&a.spec().to_canonical()).unwrap();
        assert_eq!(&spec, a.spec());
    }

    #[test]
    fn every_mistake_is_one_line_naming_key_and_entry() {
        for (body, needle) in [
            (
                "allowlist = [\"django>=x\"]",
                "allowlist entry \"django>=x\"",
            ),
            ("allowlist = \"django\"", "[filters] allowlist"),
            ("blocklist = [\">=3\"]", "blocklist entry"),
            (
                "allowlist_regex = [\"(\"]",
                "allowlist_regex entry \"(\" is not a valid regular expression",
            ),
            ("exclude_filenames = [\"[a-\"]", "exclude_filenames entry"),
            (
                "exclude_platforms = [\"beos!\"]",
                "exclude_platforms entry \"beos!\"",
            ),
            ("exclude_python = [\"python2\"]", "exclude_python entry"),
            (
                "exclude_packagetypes = [\"tarball\"]",
                "exclude_packagetypes entry",
            ),
            ("exclude_prereleases = \"yes\"", "exclude_prereleases"),
            (
                "exclude_prereleases = [\"-x\"]",
                "exclude_prereleases entry",
            ),
            ("latest_releases = -1", "latest_releases"),
            ("yanked = \"maybe\"", "yanked"),
            ("max_file_size = \"lots\"", "max_file_size"),
            ("size_allowlist = [\"torch\"]", "size_allowlist"),
            (
                "requirements = [\"missing.txt\"]",
                "cannot read requirements file",
            ),
            ("alowlist = []", "unknown key `alowlist` in [filters]"),
        ] {
            let e = parse_filters(body).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
            assert!(!e.contains('\n'), "multi-line error: {e}");
        }
    }

    #[test]
    fn the_example_documents_every_key_with_its_default() {
        let example = include_str!("../../mirror.toml.example");
        let cfg = crate::config::Config::parse(example, Path::new("/etc/pymirror")).unwrap();
        assert!(
            cfg.filters.is_empty(),
            "the example's values are not the defaults"
        );
        for key in KEYS {
            assert!(
                example.lines().any(|l| l.starts_with(&format!("{key} = "))),
                "{key} is not in mirror.toml.example"
            );
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500 MB"), Some(500_000_000));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("1.5 kB"), Some(1500));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_size("-1"), None);
    }
}
