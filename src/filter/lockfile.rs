//! Lock files (`lockfiles`): uv's `uv.lock` and PEP 751 `pylock.toml`. Every package a lock
//! pins by name and version joins the allowlist as an exact pin, and the SHA-256 it gives for
//! each of its files is checked against upstream's before the file is mirrored.
//!
//! Which shape a file has is told from its content: PEP 751 files have `lock-version` and
//! `[[packages]]`, uv's have `[[package]]`. Packages that come from elsewhere than an index
//! (git, a path, a directory, an editable or virtual project, a direct URL) have nothing to
//! mirror and are skipped, each with a note.

use toml::{Table, Value};

use super::requirement::{self, Requirement};
use crate::types::{Filename, Sha256};

/// What one lock file pins.
#[derive(Debug, Default)]
pub struct LockFile {
    pub pins: Vec<Pin>,
    /// Packages left out, each with why (for the log).
    pub skipped: Vec<String>,
}

/// A package pinned to one version, with the files the lock names and their SHA-256.
#[derive(Debug)]
pub struct Pin {
    pub requirement: Requirement,
    pub files: Vec<(Filename, Sha256)>,
}

/// Parse the text of a lock file; errors are one line.
pub fn parse(text: &str) -> Result<LockFile, String> {
    let table: Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let at = line.map(|l| format!(" at line {l}")).unwrap_or_default();
        format!("not valid TOML{at}: {}", e.message().trim())
    })?;
    if table.contains_key("lock-version") {
        let version = table.get("lock-version").and_then(Value::as_str);
        if !version.is_some_and(|v| v == "1" || v.starts_with("1.")) {
            return Err(format!(
                "lock-version {} is not one this pymirror reads (1.x)",
                table["lock-version"]
            ));
        }
        packages(&table, "packages", pylock_package)
    } else if table.contains_key("package") {
        packages(&table, "package", uv_package)
    } else {
        Err("neither a uv.lock ([[package]]) nor a PEP 751 pylock.toml (lock-version, [[packages]])".into())
    }
}

type Reader = fn(&Table, &str) -> Result<Result<Vec<(Filename, Sha256)>, String>, String>;

/// Each `[[key]]` entry through `read`, which answers the files of a registry package, the
/// reason it is skipped, or an error.
fn packages(table: &Table, key: &str, read: Reader) -> Result<LockFile, String> {
    let Some(Value::Array(entries)) = table.get(key) else {
        return Err(format!("`{key}` is not an array of tables ([[{key}]])"));
    };
    let mut out = LockFile::default();
    for (i, entry) in entries.iter().enumerate() {
        let Value::Table(entry) = entry else {
            return Err(format!("[[{key}]] entry {} is not a table", i + 1));
        };
        let Some(name) = entry.get("name").and_then(Value::as_str) else {
            return Err(format!("[[{key}]] entry {} has no name", i + 1));
        };
        let Some(version) = entry.get("version").and_then(Value::as_str) else {
            out.skipped
                .push(format!("{name}: no version (not from an index)"));
            continue;
        };
        let files = match read(entry, name)? {
            Ok(files) => files,
            Err(why) => {
                out.skipped.push(format!("{name} {version}: {why}"));
                continue;
            }
        };
        let requirement = requirement::parse(&format!("{name}=={version}"))
            .map_err(|e| format!("package {name} {version}: {e}"))?;
        out.pins.push(Pin { requirement, files });
    }
    Ok(out)
}

/// uv.lock: `source = { registry = … }`; `sdist = { url, hash = "sha256:…" }`,
/// `wheels = [{ url, hash }]` (`path` instead of `url` for a registry on disk).
fn uv_package(
    entry: &Table,
    name: &str,
) -> Result<Result<Vec<(Filename, Sha256)>, String>, String> {
    match entry.get("source") {
        Some(Value::Table(source)) if source.contains_key("registry") => {}
        Some(Value::Table(source)) => {
            let kind = source.keys().next().map_or("unknown", String::as_str);
            return Ok(Err(format!("its source is {kind}, not an index")));
        }
        _ => return Ok(Err("no source".into())),
    }
    let mut files = Vec::new();
    for dist in dists(entry) {
        let url = dist.get("url").or_else(|| dist.get("path"));
        let url = url.and_then(Value::as_str);
        let hash = dist.get("hash").and_then(Value::as_str);
        let (Some(url), Some(hash)) = (url, hash) else {
            continue;
        };
        // Other algorithms than SHA-256 are not checked here (upstream's is, as always).
        let Some(hex) = hash.strip_prefix("sha256:") else {
            continue;
        };
        files.push(file(name, None, url, hex)?);
    }
    Ok(Ok(files))
}

/// pylock.toml: no `vcs`, `directory` or `archive`; `sdist = { name, url, hashes = {
/// sha256 } }`, `wheels = [{ name, url, hashes }]`.
fn pylock_package(
    entry: &Table,
    name: &str,
) -> Result<Result<Vec<(Filename, Sha256)>, String>, String> {
    if let Some(kind) = ["vcs", "directory", "archive"]
        .into_iter()
        .find(|k| entry.contains_key(*k))
    {
        return Ok(Err(format!("it comes from a {kind}, not an index")));
    }
    let mut files = Vec::new();
    for dist in dists(entry) {
        let hex = dist
            .get("hashes")
            .and_then(|h| h.get("sha256"))
            .and_then(Value::as_str);
        let url = dist.get("url").and_then(Value::as_str);
        let filename = dist.get("name").and_then(Value::as_str);
        let Some(hex) = hex else { continue };
        match (filename, url) {
            (None, None) => continue,
            (filename, url) => files.push(file(name, filename, url.unwrap_or_default(), hex)?),
        }
    }
    Ok(Ok(files))
}

/// The `sdist` table and each of the `wheels`.
fn dists(entry: &Table) -> impl Iterator<Item = &Table> {
    let sdist = entry.get("sdist").and_then(Value::as_table);
    let wheels = entry
        .get("wheels")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_table);
    sdist.into_iter().chain(wheels)
}

/// One file: its name as given, else the last segment of its URL.
fn file(
    package: &str,
    filename: Option<&str>,
    url: &str,
    hex: &str,
) -> Result<(Filename, Sha256), String> {
    let decoded;
    let filename = match filename {
        Some(f) => f,
        None => {
            let last = url
                .split(['?', '#'])
                .next()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default();
            decoded = percent_encoding::percent_decode_str(last)
                .decode_utf8()
                .map_err(|_| format!("package {package}: a file URL is not UTF-8"))?;
            &decoded
        }
    };
    let filename = Filename::new(filename)
        .map_err(|_| format!("package {package}: {filename:?} is not a file name"))?;
    let sha256 = Sha256::from_hex(&hex.to_ascii_lowercase())
        .map_err(|_| format!("package {package}: the sha256 of {filename} is not 64 hex digits"))?;
    Ok((filename, sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a3c1d6d07f9b2e2f1a0c4e6d8b5f7a9c1e3d5f7b9a1c3e5d7f9b1a3c5e7d9f1b";
    const B: &str = "0b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5f7a9b1c3d5e7f9a1b3c5d7e9f1a3b5c";

    fn uv_lock() -> String {
        format!(
            r#"version = 1
revision = 2
requires-python = ">=3.12"

[[package]]
name = "app"
version = "0.1.0"
source = {{ editable = "." }}
dependencies = [
    {{ name = "certifi" }},
    {{ name = "typing-extensions" }},
]

[package.metadata]
requires-dist = [{{ name = "certifi", specifier = ">=2024" }}]

[[package]]
name = "certifi"
version = "2024.8.30"
source = {{ registry = "https://index.example/simple" }}
sdist = {{ url = "https://files.example/packages/b0/ee/9b/certifi-2024.8.30.tar.gz", hash = "sha256:{A}", size = 168507, upload-time = "2024-08-30T01:55:04.365Z" }}
wheels = [
    {{ url = "https://files.example/packages/12/90/3c/certifi-2024.8.30-py3-none-any.whl", hash = "sha256:{B}", size = 167321, upload-time = "2024-08-30T01:55:02.591Z" }},
]

[[package]]
name = "Typing_Extensions"
version = "4.12.2"
source = {{ registry = "https://index.example/simple" }}
sdist = {{ url = "https://files.example/t/typing_extensions-4.12.2.tar.gz", hash = "sha512:00", size = 85321 }}

[[package]]
name = "vendored"
version = "1.0"
source = {{ git = "https://git.example/vendored?rev=main#0123abcd" }}

[[package]]
name = "wheelhouse"
version = "2.0"
source = {{ registry = "../wheels" }}
wheels = [
    {{ path = "wheelhouse-2.0-py3-none-any.whl", hash = "sha256:{B}" }},
]
"#
        )
    }

    fn pylock() -> String {
        format!(
            r#"lock-version = "1.0"
environments = ["sys_platform == 'linux'"]
requires-python = ">=3.9"
extras = []
dependency-groups = []
default-groups = []
created-by = "uv"

[[packages]]
name = "attrs"
version = "25.1.0"
index = "https://index.example/simple"
sdist = {{ name = "attrs-25.1.0.tar.gz", url = "https://files.example/a/attrs-25.1.0.tar.gz", upload-time = 2025-01-25T11:30:10.164985+00:00, size = 810562, hashes = {{ sha256 = "{A}" }} }}
wheels = [{{ url = "https://files.example/a/attrs-25.1.0-py3-none-any.whl", upload-time = 2025-01-25T11:30:12.508061+00:00, size = 63152, hashes = {{ sha256 = "{B}" }} }}]

[[packages]]
name = "local-tool"
[packages.directory]
path = "tools/local"
editable = true

[[packages]]
name = "from-git"
version = "2.0"
[packages.vcs]
type = "git"
url = "https://git.example/from-git"
commit-id = "0123abcd"
"#
        )
    }

    fn shown(lock: &LockFile) -> Vec<String> {
        lock.pins
            .iter()
            .map(|p| {
                let files: Vec<String> = p
                    .files
                    .iter()
                    .map(|(f, h)| format!("{f}:{}", &h.to_hex()[..4]))
                    .collect();
                format!(
                    "{}{} {}",
                    p.requirement.name,
                    p.requirement.specifiers,
                    files.join(",")
                )
            })
            .collect()
    }

    #[test]
    fn a_uv_lock_pins_its_registry_packages() {
        let lock = parse(&uv_lock()).unwrap();
        assert_eq!(
            shown(&lock),
            [
                "certifi==2024.8.30 certifi-2024.8.30.tar.gz:a3c1,certifi-2024.8.30-py3-none-any.whl:0b5c",
                "typing-extensions==4.12.2 ",
                "wheelhouse==2.0 wheelhouse-2.0-py3-none-any.whl:0b5c",
            ]
        );
        assert_eq!(lock.skipped.len(), 2, "{:?}", lock.skipped);
        assert!(lock.skipped[0].contains("app 0.1.0: its source is editable"));
        assert!(lock.skipped[1].contains("vendored 1.0: its source is git"));
    }

    #[test]
    fn a_pylock_pins_its_index_packages() {
        let lock = parse(&pylock()).unwrap();
        assert_eq!(
            shown(&lock),
            ["attrs==25.1.0 attrs-25.1.0.tar.gz:a3c1,attrs-25.1.0-py3-none-any.whl:0b5c"]
        );
        assert_eq!(lock.skipped.len(), 2, "{:?}", lock.skipped);
        assert!(lock.skipped[0].starts_with("local-tool: no version"));
        assert!(lock.skipped[1].contains("from-git 2.0: it comes from a vcs"));
    }

    #[test]
    fn mistakes_are_one_line() {
        for (text, needle) in [
            ("[[package]\nname = 1", "not valid TOML at line 1"),
            ("title = 'x'", "neither a uv.lock"),
            (
                "lock-version = \"2.0\"\n[[packages]]\nname='a'",
                "lock-version",
            ),
            ("package = 3", "not an array of tables"),
            ("[[package]]\nversion = '1'", "has no name"),
            (
                "[[package]]\nname = 'a'\nversion = 'x y'\nsource = { registry = 'r' }",
                "package a x y",
            ),
            (
                "[[package]]\nname = 'a'\nversion = '1'\nsource = { registry = 'r' }\nsdist = { url = 'https://h/a-1.tar.gz', hash = 'sha256:zz' }",
                "not 64 hex digits",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
