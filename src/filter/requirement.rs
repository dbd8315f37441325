//! Requirement lines (`django>=4.2`, `numpy==1.26.*`, `requests[socks] ; python_version>"3"`)
//! and pip requirements files.
//!
//! A mirror needs only the project name and its version specifiers: extras and environment
//! markers decide what a client installs, not what the index must offer, so they are accepted
//! and ignored (a marker-guarded requirement is mirrored for every environment).

use std::path::{Path, PathBuf};

use super::pep440::SpecifierSet;
use crate::types::ProjectName;

/// A project and the versions wanted of it (an empty set: all).
#[derive(Debug, Clone)]
pub struct Requirement {
    pub name: ProjectName,
    pub specifiers: SpecifierSet,
}

/// Parse one requirement: `name[extras] specifiers ; markers` or `name @ url`.
pub fn parse(line: &str) -> Result<Requirement, String> {
    let line = line.trim();
    let without_marker = line.split(';').next().unwrap_or_default().trim();
    let name_end = without_marker
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .unwrap_or(without_marker.len());
    let (name, mut rest) = without_marker.split_at(name_end);
    let name = ProjectName::new(name).map_err(|_| {
        format!("{line:?} does not start with a project name (e.g. \"django>=4.2\")")
    })?;
    rest = rest.trim_start();
    if let Some(extras) = rest.strip_prefix('[') {
        let end = extras
            .find(']')
            .ok_or_else(|| format!("{line:?}: extras are not closed with ]"))?;
        rest = extras[end + 1..].trim_start();
    }
    if rest.starts_with('@') {
        // A direct URL reference: the client fetches it from there, the name is all we need.
        return Ok(Requirement {
            name,
            specifiers: SpecifierSet::default(),
        });
    }
    let rest = match rest.strip_prefix('(') {
        Some(inner) => inner
            .strip_suffix(')')
            .ok_or_else(|| format!("{line:?}: ( is not closed with )"))?,
        None => rest,
    };
    let specifiers = rest.parse().map_err(|e| format!("{line:?}: {e}"))?;
    Ok(Requirement { name, specifiers })
}

/// Requirements files may include each other; a cycle or a runaway chain stops here.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Every requirement of a pip requirements file and the files it includes with `-r`.
/// Options, editable installs, paths, URLs and `-c` constraint files name no index project
/// to mirror and are skipped. Errors name the file and line.
pub fn read_file(path: &Path) -> Result<Vec<Requirement>, String> {
    let mut out = Vec::new();
    read_into(path, 0, &mut out)?;
    Ok(out)
}

fn read_into(path: &Path, depth: usize, out: &mut Vec<Requirement>) -> Result<(), String> {
    if depth > MAX_INCLUDE_DEPTH {
        return Err(format!(
            "{}: requirements files include each other more than {MAX_INCLUDE_DEPTH} deep (a -r cycle?); fix the includes",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read requirements file {} ({e}); fix the path",
            path.display()
        )
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    for (number, line) in logical_lines(&text) {
        let at = || format!("{}:{number}", path.display());
        if let Some(option) = line.strip_prefix('-') {
            if let Some(included) = include_target(option) {
                let included = included.ok_or_else(|| format!("{}: -r needs a file name", at()))?;
                read_into(&dir.join(included), depth + 1, out)?;
            }
            continue;
        }
        if names_no_project(&line) {
            continue;
        }
        // Per-requirement options (`--hash=…`, `--config-settings …`) follow the requirement.
        let requirement = match line.find(" --").or_else(|| line.find("\t--")) {
            Some(i) => &line[..i],
            None => &line,
        };
        out.push(parse(requirement).map_err(|e| format!("{}: {e}", at()))?);
    }
    Ok(())
}

/// `-r FILE`, `--requirement FILE`, `--requirement=FILE`: `Some(target)`; other options `None`.
fn include_target(option: &str) -> Option<Option<PathBuf>> {
    let rest = option
        .strip_prefix("-requirement")
        .or_else(|| option.strip_prefix('r'))?;
    if !(rest.is_empty() || rest.starts_with([' ', '\t', '='])) {
        return None;
    }
    let target = rest.trim_start_matches([' ', '\t', '=']).trim();
    Some((!target.is_empty()).then(|| PathBuf::from(target)))
}

/// Local paths, archives and URLs (`./pkg`, `/src/x`, `x.whl`, `git+https://…`).
fn names_no_project(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    line.starts_with(['.', '/', '~'])
        || (lower.contains("://") && !lower.contains('@'))
        || lower.starts_with("git+")
        || [".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz"]
            .iter()
            .any(|ext| {
                lower
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .ends_with(ext)
            })
}

/// pip's line handling: `\` at the end continues a line; `#` at the start or after
/// whitespace starts a comment; blank lines are skipped. Yields (first line number, text).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (start, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        match raw.strip_suffix('\\') {
            Some(head) => {
                acc.push_str(head);
                current = Some((start, acc));
            }
            None => {
                acc.push_str(raw);
                let line = strip_comment(&acc).trim().to_owned();
                if !line.is_empty() {
                    out.push((start, line));
                }
            }
        }
    }
    if let Some((start, acc)) = current {
        let line = strip_comment(&acc).trim().to_owned();
        if !line.is_empty() {
            out.push((start, line));
        }
    }
    out
}

fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(line: &str) -> (String, String) {
        let r = parse(line).unwrap_or_else(|e| panic!("{e}"));
        (r.name.to_string(), r.specifiers.to_string())
    }

    #[test]
    fn requirement_lines() {
        assert_eq!(req("Django>=4.2"), ("django".into(), ">=4.2".into()));
        assert_eq!(req("numpy==1.26.*"), ("numpy".into(), "==1.26.*".into()));
        assert_eq!(req("requests"), ("requests".into(), "".into()));
        assert_eq!(
            req("requests[socks, security] >= 2.31 , < 3 ; python_version >= \"3.8\""),
            ("requests".into(), "<3,>=2.31".into())
        );
        assert_eq!(
            req("zope.interface (>=5)"),
            ("zope-interface".into(), ">=5".into())
        );
        assert_eq!(
            req("pip @ https://example.org/pip-1.0.whl"),
            ("pip".into(), "".into())
        );
        for bad in [">=1.0", "django>=", "django 4.2", "django[extra", "-dash"] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn requirements_files_with_includes_comments_and_options() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(
            dir.join("base.txt"),
            "# base\nsix==1.16.0 --hash=sha256:abc \\\n    --hash=sha256:def\nattrs>=23  # pinned later\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("requirements.txt"),
            "-r base.txt\n--index-url https://index.invalid/simple\n-c constraints.txt\n\
             -e ./local\n./vendored/pkg.tar.gz\nhttps://example.org/x-1.0.whl\n\
             Django>=4.2,<5\nnumpy==1.26.* ; sys_platform == \"linux\"\n\n",
        )
        .unwrap();
        let got: Vec<(String, String)> = read_file(&dir.join("requirements.txt"))
            .unwrap()
            .into_iter()
            .map(|r| (r.name.to_string(), r.specifiers.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("six".to_owned(), "==1.16.0".to_owned()),
                ("attrs".to_owned(), ">=23".to_owned()),
                ("django".to_owned(), "<5,>=4.2".to_owned()),
                ("numpy".to_owned(), "==1.26.*".to_owned()),
            ]
        );

        std::fs::write(dir.join("bad.txt"), "ok==1\n\ndjango>=x\n").unwrap();
        let e = read_file(&dir.join("bad.txt")).unwrap_err();
        assert!(e.contains("bad.txt:3") && e.contains("django>=x"), "{e}");
        std::fs::write(dir.join("loop.txt"), "-r loop.txt\n").unwrap();
        assert!(
            read_file(&dir.join("loop.txt"))
                .unwrap_err()
                .contains("cycle")
        );
        assert!(
            read_file(&dir.join("missing.txt"))
                .unwrap_err()
                .contains("cannot read")
        );
    }
}
