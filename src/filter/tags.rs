//! What a distribution file is for: its package type, the platforms and the Python versions it
//! runs on, from its name as `types::dist` parses it (PEP 427 wheel names with PEP 425 tags, egg and installer
//! naming) and upstream's `packagetype` / `python_version` fields.

use std::sync::LazyLock;

use regex::Regex;

use crate::types::FileRecord;
pub use crate::types::dist::PackageType;
use crate::types::dist::{ARCHIVE_EXTENSIONS, DistFilename};

/// A Python tag (`py3`, `py27`, `cp312`, `pp39`) or a tag-like filter entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PythonTag {
    /// `py` (any implementation), or the PEP 425 abbreviation `cp`, `pp`, `ip`, `jy`, `graalpy`.
    implementation: String,
    major: u32,
    minor: Option<u32>,
}

static PYTHON_TAG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:(py|cp|pp|ip|jy|graalpy)([0-9])\.?([0-9]*)|([0-9])\.([0-9]+))$")
        .expect("valid pattern")
});

impl PythonTag {
    /// `py3`, `cp312`, `py2.7` (egg style), `2.7` (upstream's `python_version`).
    pub fn parse(text: &str) -> Option<PythonTag> {
        let lower = text.trim().to_ascii_lowercase();
        let caps = PYTHON_TAG.captures(&lower)?;
        let (implementation, major, minor) = match caps.get(1) {
            Some(i) => (i.as_str(), &caps[2], caps.get(3).map_or("", |m| m.as_str())),
            None => ("py", &caps[4], &caps[5]),
        };
        Some(PythonTag {
            implementation: implementation.to_owned(),
            major: major.parse().ok()?,
            minor: if minor.is_empty() {
                None
            } else {
                Some(minor.parse().ok()?)
            },
        })
    }

    /// Whether this filter entry covers a file's tag: `py2` covers every Python 2 tag
    /// (`py2`, `py27`, `cp27`), `py27` every 2.7 tag of any implementation, `cp27` only
    /// `cp27`, `cp3` every CPython 3 tag. An abi3 wheel (`cp38-abi3`) runs on its version and
    /// every later one, so only a whole major version (`py3`, `cp3`) covers it.
    pub fn covers(&self, tag: &PythonTag, abi3: bool) -> bool {
        (self.implementation == "py" || self.implementation == tag.implementation)
            && self.major == tag.major
            && match self.minor {
                None => true,
                Some(_) if abi3 => false,
                Some(m) => tag.minor == Some(m),
            }
    }
}

impl std::fmt::Display for PythonTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.implementation, self.major)?;
        if let Some(m) = self.minor {
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

/// Operating-system families and the platform tag prefixes that belong to each.
const FAMILIES: &[(&str, &[&str])] = &[
    ("windows", &["win"]),
    ("macos", &["macosx"]),
    ("linux", &["manylinux", "musllinux", "linux"]),
    ("manylinux", &["manylinux"]),
    ("musllinux", &["musllinux"]),
    ("freebsd", &["freebsd"]),
    ("openbsd", &["openbsd"]),
    ("netbsd", &["netbsd"]),
    ("solaris", &["solaris", "sunos"]),
    ("aix", &["aix"]),
    ("cygwin", &["cygwin"]),
    ("android", &["android"]),
    ("ios", &["ios"]),
    ("emscripten", &["emscripten", "pyodide"]),
];

const FAMILY_ALIASES: &[(&str, &str)] = &[
    ("win", "windows"),
    ("mac", "macos"),
    ("macosx", "macos"),
    ("osx", "macos"),
    ("darwin", "macos"),
    ("pyodide", "emscripten"),
    ("wasm", "emscripten"),
];

/// A platform filter entry: an OS family, or platform tags (`win32`, `manylinux1_i686`,
/// `*_i686`, `macosx_10_*`; `*` matches any run of characters).
#[derive(Debug, Clone)]
pub enum PlatformPattern {
    Family(&'static [&'static str]),
    Tags(Regex),
}

impl PlatformPattern {
    /// The entry in canonical form (family name or normalized tag pattern), and the pattern.
    pub fn parse(entry: &str) -> Result<(String, PlatformPattern), String> {
        let normal = normalize_platform(entry);
        let family = FAMILY_ALIASES
            .iter()
            .find(|(alias, _)| *alias == normal)
            .map_or(normal.as_str(), |(_, family)| family);
        if let Some((name, prefixes)) = FAMILIES.iter().find(|(name, _)| *name == family) {
            return Ok(((*name).to_owned(), PlatformPattern::Family(prefixes)));
        }
        let charset_ok = !normal.is_empty()
            && normal
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'*');
        // A tag without a wildcard must start like a platform tag, so that a Python version
        // ("py2.7") or a bare architecture ("i686") is not silently taken for one.
        let known_start = normal.contains('*')
            || normal == "any"
            || FAMILIES
                .iter()
                .flat_map(|(_, prefixes)| prefixes.iter())
                .any(|p| normal.starts_with(p));
        if !charset_ok || !known_start {
            let hint = if PythonTag::parse(entry).is_some() {
                "; Python versions go in exclude_python"
            } else {
                "; for an architecture write e.g. \"*_i686\""
            };
            let families: Vec<&str> = FAMILIES.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "{entry:?} is neither a platform family ({}) nor a platform tag like \"win32\" or \"macosx_10_*\"{hint}",
                families.join(", ")
            ));
        }
        let pattern = format!(
            "^{}$",
            normal
                .split('*')
                .map(regex::escape)
                .collect::<Vec<_>>()
                .join(".*")
        );
        let regex = Regex::new(&pattern).expect("escaped tag pattern compiles");
        Ok((normal, PlatformPattern::Tags(regex)))
    }

    pub fn matches(&self, tag: &str) -> bool {
        match self {
            PlatformPattern::Family(prefixes) => prefixes.iter().any(|p| tag.starts_with(p)),
            PlatformPattern::Tags(re) => re.is_match(tag),
        }
    }
}

/// Platform tags are compared in wheel form: lowercase, `-` and `.` as `_`
/// (`macosx-10.9-x86_64` → `macosx_10_9_x86_64`).
fn normalize_platform(text: &str) -> String {
    text.trim().to_ascii_lowercase().replace(['-', '.'], "_")
}

/// Everything the file filters look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTags {
    pub packagetype: Option<PackageType>,
    /// Normalized platform tags; empty for a platform-independent file (sdist, `any`).
    pub platforms: Vec<String>,
    /// Empty for a file not tied to a Python version (sdist, `source`, `any`).
    pub pythons: Vec<PythonTag>,
    pub abi3: bool,
}

pub fn tags(record: &FileRecord) -> FileTags {
    let lower = record.filename.as_str().to_ascii_lowercase();
    let name = DistFilename::parse(&lower);
    // Upstream's `packagetype` when it is one we know, else the file name's extension.
    let packagetype = record
        .packagetype
        .as_deref()
        .and_then(PackageType::from_name)
        .or(name.map(|n| n.packagetype));
    let stem = name.map_or(lower.as_str(), |n| n.stem);
    let mut out = FileTags {
        packagetype,
        platforms: Vec::new(),
        pythons: Vec::new(),
        abi3: false,
    };
    let from_field = || {
        record
            .python_version
            .as_deref()
            .and_then(PythonTag::parse)
            .into_iter()
            .collect::<Vec<_>>()
    };
    match packagetype {
        None | Some(PackageType::Sdist) => {}
        Some(PackageType::Wheel) => {
            if let Some(wheel) = name.and_then(|n| n.wheel()) {
                out.platforms = wheel.platform.split('.').map(normalize_platform).collect();
                out.abi3 = wheel.abi.split('.').any(|a| a == "abi3");
                out.pythons = wheel
                    .python
                    .split('.')
                    .filter_map(PythonTag::parse)
                    .collect();
            }
        }
        Some(PackageType::Egg) => {
            // name-version-pyX.Y(-platform).egg
            let parts: Vec<&str> = stem.splitn(4, '-').collect();
            out.pythons = parts
                .get(2)
                .filter(|p| p.starts_with("py"))
                .and_then(|p| PythonTag::parse(p))
                .into_iter()
                .collect();
            out.platforms = parts
                .get(3)
                .map(|p| normalize_platform(p))
                .into_iter()
                .collect();
        }
        Some(PackageType::Wininst | PackageType::Msi) => {
            // name-version.win-amd64(-pyX.Y).exe / .msi
            let (stem, python) = match stem
                .rsplit_once("-py")
                .and_then(|(s, py)| Some((s, PythonTag::parse(py)?)))
            {
                Some((s, py)) => (s, Some(py)),
                None => (stem, None),
            };
            let platform = stem
                .rfind(".win")
                .map_or("win32".to_owned(), |i| normalize_platform(&stem[i + 1..]));
            out.platforms = vec![platform];
            out.pythons = python.map_or_else(from_field, |p| vec![p]);
        }
        Some(PackageType::Rpm) => {
            // name-version-release.arch.rpm
            let arch = stem.rsplit('.').next().unwrap_or_default();
            out.platforms = vec![format!("linux_{}", normalize_platform(arch))];
            out.pythons = from_field();
        }
        Some(PackageType::Dmg) => {
            out.platforms = vec!["macosx".to_owned()];
            out.pythons = from_field();
        }
        Some(PackageType::Dumb) => {
            // name-version.platform.tar.gz / .zip
            let marker = format!("-{}.", record.version.to_ascii_lowercase());
            if let Some(i) = lower.find(&marker) {
                let rest = &lower[i + marker.len()..];
                let platform = ARCHIVE_EXTENSIONS
                    .iter()
                    .find_map(|ext| rest.strip_suffix(ext))
                    .unwrap_or(rest);
                if !platform.is_empty() {
                    out.platforms = vec![normalize_platform(platform)];
                }
            }
            out.pythons = from_field();
        }
    }
    out.platforms.retain(|p| p != "any");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Filename, PackagePath, Sha256};

    pub(crate) fn record(
        filename: &str,
        packagetype: Option<&str>,
        python: Option<&str>,
    ) -> FileRecord {
        let name = Filename::new(filename).unwrap();
        let hex = "ab".repeat(32);
        FileRecord {
            version: "1.0".into(),
            path: PackagePath::from_url_path(
                &format!("/packages/ab/ab/{}/{filename}", &hex[4..]),
                &name,
            )
            .unwrap(),
            filename: name,
            size: 1,
            sha256: Sha256::from_hex(&hex).unwrap(),
            upload_time: None,
            requires_python: None,
            yanked: false,
            yanked_reason: None,
            packagetype: packagetype.map(str::to_owned),
            python_version: python.map(str::to_owned),
            core_metadata: None,
            provenance: None,
            extra_hashes: Default::default(),
        }
    }

    fn platforms(filename: &str, packagetype: Option<&str>) -> Vec<String> {
        tags(&record(filename, packagetype, None)).platforms
    }

    fn pythons(filename: &str, packagetype: Option<&str>, field: Option<&str>) -> Vec<String> {
        tags(&record(filename, packagetype, field))
            .pythons
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn wheel_tags() {
        let t = tags(&record(
            "numpy-1.26.4-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            Some("bdist_wheel"),
            Some("cp312"),
        ));
        assert_eq!(t.packagetype, Some(PackageType::Wheel));
        assert_eq!(
            t.platforms,
            ["manylinux_2_17_x86_64", "manylinux2014_x86_64"]
        );
        assert_eq!(t.pythons, [PythonTag::parse("cp312").unwrap()]);
        assert!(!t.abi3);
        let t = tags(&record("six-1.16.0-py2.py3-none-any.whl", None, None));
        assert!(t.platforms.is_empty());
        assert_eq!(t.pythons.len(), 2);
        let t = tags(&record(
            "cryptography-42.0.5-1-cp39-abi3-win_amd64.whl",
            None,
            None,
        ));
        assert_eq!(t.platforms, ["win_amd64"]);
        assert!(t.abi3);
    }

    #[test]
    fn other_kinds_by_name_and_field() {
        assert!(platforms("pkg-1.0.tar.gz", Some("sdist")).is_empty());
        assert!(pythons("linuxtools-1.0.tar.gz", None, Some("source")).is_empty());
        assert_eq!(platforms("pkg-1.0-py2.7-win32.egg", None), ["win32"]);
        assert_eq!(
            pythons("pkg-1.0-py2.7-win32.egg", None, Some("2.7")),
            ["py27"]
        );
        assert_eq!(platforms("pkg-1.0-py3.6.egg", None), Vec::<String>::new());
        assert_eq!(
            platforms("pkg-1.0-py2.7-macosx-10.9-x86_64.egg", None),
            ["macosx_10_9_x86_64"]
        );
        assert_eq!(
            platforms("pkg-1.0.win-amd64-py2.7.exe", None),
            ["win_amd64"]
        );
        assert_eq!(pythons("pkg-1.0.win-amd64-py2.7.exe", None, None), ["py27"]);
        assert_eq!(platforms("pkg-1.0.win32.exe", None), ["win32"]);
        assert_eq!(
            pythons("pkg-1.0.win32.exe", None, Some("any")),
            Vec::<String>::new()
        );
        assert_eq!(platforms("pkg-1.0.win32-py3.4.msi", None), ["win32"]);
        assert_eq!(platforms("pkg-1.0-1.x86_64.rpm", None), ["linux_x86_64"]);
        assert_eq!(
            platforms("pkg-1.0.linux-x86_64.tar.gz", Some("bdist_dumb")),
            ["linux_x86_64"]
        );
        assert_eq!(platforms("pkg-1.0.dmg", None), ["macosx"]);
    }

    #[test]
    fn platform_patterns() {
        let (name, windows) = PlatformPattern::parse("Windows").unwrap();
        assert_eq!(name, "windows");
        assert!(windows.matches("win32") && windows.matches("win_amd64"));
        assert!(!windows.matches("macosx_11_0_arm64"));
        let (_, linux) = PlatformPattern::parse("linux").unwrap();
        for t in ["manylinux1_x86_64", "musllinux_1_1_x86_64", "linux_armv7l"] {
            assert!(linux.matches(t), "{t}");
        }
        let (_, musl) = PlatformPattern::parse("musllinux").unwrap();
        assert!(!musl.matches("manylinux_2_17_x86_64"));
        let (_, mac) = PlatformPattern::parse("osx").unwrap();
        assert!(mac.matches("macosx_11_0_arm64"));
        let (name, i686) = PlatformPattern::parse("*-i686").unwrap();
        assert_eq!(name, "*_i686");
        assert!(i686.matches("manylinux2014_i686") && !i686.matches("manylinux2014_x86_64"));
        let (_, exact) = PlatformPattern::parse("win32").unwrap();
        assert!(exact.matches("win32") && !exact.matches("win_amd64"));
        assert!(PlatformPattern::parse("beos!").is_err());
        assert!(PlatformPattern::parse("").is_err());
        let e = PlatformPattern::parse("py2.7").unwrap_err();
        assert!(e.contains("exclude_python"), "{e}");
        let e = PlatformPattern::parse("i686").unwrap_err();
        assert!(e.contains("*_i686"), "{e}");
        assert!(PlatformPattern::parse("any").is_ok());
    }

    #[test]
    fn python_tags_cover() {
        let covers = |entry: &str, tag: &str, abi3: bool| {
            PythonTag::parse(entry)
                .unwrap()
                .covers(&PythonTag::parse(tag).unwrap(), abi3)
        };
        assert!(covers("py2", "cp27", false));
        assert!(covers("py2", "py2", false));
        assert!(covers("py27", "pp27", false));
        assert!(!covers("py27", "py2", false));
        assert!(covers("cp27", "cp27", false));
        assert!(!covers("cp27", "py27", false));
        assert!(!covers("cp36", "cp37", false));
        assert!(covers("py3", "cp312", false));
        assert!(covers("py3.6", "cp36", false));
        assert!(
            !covers("cp36", "cp36", true),
            "an abi3 wheel also serves later versions"
        );
        assert!(covers("py3", "cp36", true));
        assert!(PythonTag::parse("python2").is_none());
        assert!(PythonTag::parse("source").is_none());
        assert_eq!(PythonTag::parse("2.7").unwrap().to_string(), "py27");
    }

    #[test]
    fn package_type_names() {
        assert_eq!(PackageType::from_name("wheel"), Some(PackageType::Wheel));
        assert_eq!(
            PackageType::from_name("bdist_wininst"),
            Some(PackageType::Wininst)
        );
        assert_eq!(PackageType::from_name("exe"), Some(PackageType::Wininst));
        assert_eq!(PackageType::from_name("bdist_tarball"), None);
        let t = tags(&record("pkg-1.0.zip", Some("bdist_dumb"), None));
        assert_eq!(t.packagetype, Some(PackageType::Dumb));
        let t = tags(&record("pkg-1.0.zip", None, None));
        assert_eq!(t.packagetype, Some(PackageType::Sdist));
    }
}
