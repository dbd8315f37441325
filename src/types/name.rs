//! Project names, validated and normalized at the boundary.
//!
//! A name becomes a directory (`web/simple/<name>/`), so an invalid name from upstream is a
//! safety problem, not a cosmetic one: only names that PyPI itself accepts get through.
//! See <https://packaging.python.org/en/latest/specifications/name-normalization/>.

use std::fmt;

/// A project name normalized per PEP 503: lowercase, runs of `-`, `_`, `.` folded into `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not a valid project name (ASCII letters, digits, '.', '_', '-'; starting and ending with a letter or digit)"
)]
pub struct InvalidName(pub String);

/// PyPI caps names well below this; the cap keeps a hostile listing from making huge paths.
const MAX_NAME_LEN: usize = 200;

impl ProjectName {
    /// Validate a display name (as upstream spells it) and normalize it.
    pub fn new(display: &str) -> Result<Self, InvalidName> {
        if !is_valid_display_name(display) {
            return Err(InvalidName(display.to_owned()));
        }
        let mut out = String::with_capacity(display.len());
        let mut in_separator_run = false;
        for c in display.chars() {
            if matches!(c, '-' | '_' | '.') {
                if !in_separator_run {
                    out.push('-');
                }
                in_separator_run = true;
            } else {
                out.push(c.to_ascii_lowercase());
                in_separator_run = false;
            }
        }
        Ok(ProjectName(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The PEP 508 name rule: `^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$`, case-insensitive.
pub fn is_valid_display_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    bytes.len() <= MAX_NAME_LEN
        && first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_per_pep_503() {
        for (input, want) in [
            ("Django", "django"),
            ("zope.interface", "zope-interface"),
            ("Foo__Bar--baz..Qux", "foo-bar-baz-qux"),
            ("a-_.-b", "a-b"),
            ("X", "x"),
        ] {
            assert_eq!(ProjectName::new(input).unwrap().as_str(), want, "{input}");
        }
    }

    #[test]
    fn rejects_names_pypi_would_not_accept() {
        for bad in [
            "", "-a", "a-", "../etc", "a/b", "a b", "ä", ".hidden", "a\0b",
        ] {
            assert!(ProjectName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ProjectName::new(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }
}
