//! Where a distribution file lives: `packages/<aa>/<bb>/<60 hex>/<filename>`, the layout of
//! PyPI's file host, where the 64 hex characters are the BLAKE2b-256 of the file's bytes.
//!
//! The path is taken from an upstream URL, and upstream is untrusted: this module is the only
//! way to build a path under `web/packages/`, and it accepts nothing but that exact shape, so a
//! crafted URL (`..`, encoded separators, absolute paths, odd filenames) can never name a
//! location outside the mirror.

use std::fmt;

use super::digest::Blake2b256;

/// The directory under `web/` that holds every distribution file (and its sidecar).
pub const PACKAGES: &str = "packages";

/// A distribution's file name: one plain path segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Filename(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnsafePath {
    #[error(
        "filename {0:?} is not a plain file name (no '/', '\\', '..', control characters, leading '.')"
    )]
    Filename(String),
    #[error(
        "file URL {0:?} is not of the form <host>/packages/<2 hex>/<2 hex>/<60 hex>/<filename>"
    )]
    Shape(String),
    #[error("file URL {url:?} names file {found:?}, but the metadata says {expected:?}")]
    NameMismatch {
        url: String,
        found: String,
        expected: String,
    },
}

/// Longest name most filesystems accept for one component (255), less room for the
/// `.metadata` suffix of a PEP 658 sidecar.
const MAX_FILENAME_BYTES: usize = 255 - ".metadata".len();

impl Filename {
    pub fn new(name: &str) -> Result<Self, UnsafePath> {
        let plain = !name.is_empty()
            && name.len() <= MAX_FILENAME_BYTES
            && !name.starts_with('.')
            // A file of that name would share its path with another file's sidecar.
            && !name.ends_with(".metadata")
            && !name.contains("..")
            && !name
                .chars()
                .any(|c| c == '/' || c == '\\' || c.is_control());
        if plain {
            Ok(Filename(name.to_owned()))
        } else {
            Err(UnsafePath::Filename(name.chars().take(300).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Filename {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated location under `web/`: `packages/aa/bb/<rest>/<filename>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PackagePath {
    blake2b: Blake2b256,
    filename: Filename,
}

impl PackagePath {
    /// Validate the *raw* path of a file URL (before any `..` resolution a URL parser would do)
    /// against the file host layout, and check that it names `expected` filename.
    pub fn from_url_path(raw_path: &str, expected: &Filename) -> Result<Self, UnsafePath> {
        let shape = || UnsafePath::Shape(raw_path.chars().take(300).collect());
        let rest = raw_path.strip_prefix("/packages/").ok_or_else(shape)?;
        let segments: Vec<&str> = rest.split('/').collect();
        let [aa, bb, tail, encoded_name] = segments[..] else {
            return Err(shape());
        };
        let is_hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !(is_hex(aa, 2) && is_hex(bb, 2) && is_hex(tail, 60)) {
            return Err(shape());
        }
        // Encoded separators or dots would decode into something other than a plain segment.
        let lower = encoded_name.to_ascii_lowercase();
        if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") {
            return Err(shape());
        }
        let decoded = percent_encoding::percent_decode_str(encoded_name)
            .decode_utf8()
            .map_err(|_| shape())?;
        let filename = Filename::new(&decoded)?;
        if &filename != expected {
            return Err(UnsafePath::NameMismatch {
                url: raw_path.chars().take(300).collect(),
                found: filename.0,
                expected: expected.0.clone(),
            });
        }
        let blake2b = Blake2b256::from_hex(&format!("{aa}{bb}{tail}")).map_err(|_| shape())?;
        Ok(PackagePath { blake2b, filename })
    }

    /// The path of a file whose bytes hash to `blake2b`: PyPI's layout, wherever upstream
    /// served it from.
    pub fn new(blake2b: Blake2b256, filename: Filename) -> PackagePath {
        PackagePath { blake2b, filename }
    }

    /// The BLAKE2b-256 a file URL in PyPI's layout names, under any prefix
    /// (`/mirror/packages/aa/bb/<60 hex>/<filename>`): a claim, checked when the bytes
    /// arrive. `None` when the URL has another shape (devpi's `+f/…`, a download handler).
    pub fn blake2b_in_url(raw_path: &str, expected: &Filename) -> Option<Blake2b256> {
        let segments: Vec<&str> = raw_path.rsplitn(6, '/').collect();
        let [name, tail, bb, aa, "packages", ..] = segments[..] else {
            return None;
        };
        let path = format!("/packages/{aa}/{bb}/{tail}/{name}");
        Self::from_url_path(&path, expected).ok().map(|p| p.blake2b)
    }

    /// The BLAKE2b-256 the path promises: the downloaded bytes must hash to it.
    pub fn blake2b(&self) -> Blake2b256 {
        self.blake2b
    }

    pub fn filename(&self) -> &Filename {
        &self.filename
    }

    /// Path relative to `web/`, always with `/` separators.
    pub fn relative(&self) -> String {
        let hex = self.blake2b.to_hex();
        format!(
            "{PACKAGES}/{}/{}/{}/{}",
            &hex[..2],
            &hex[2..4],
            &hex[4..],
            self.filename
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hexpath(name: &str) -> String {
        format!("/packages/ab/cd/{}/{name}", "e".repeat(60))
    }

    #[test]
    fn accepts_the_file_host_layout() {
        let name = Filename::new("demo-1.0-py3-none-any.whl").unwrap();
        let path =
            PackagePath::from_url_path(&hexpath("demo-1.0-py3-none-any.whl"), &name).unwrap();
        assert_eq!(
            path.relative(),
            format!(
                "packages/ab/cd/{}/demo-1.0-py3-none-any.whl",
                "e".repeat(60)
            )
        );
        assert_eq!(path.blake2b().to_hex(), format!("abcd{}", "e".repeat(60)));
    }

    #[test]
    fn finds_the_layout_under_any_prefix() {
        let name = Filename::new("x.whl").unwrap();
        let e60 = "e".repeat(60);
        for (raw, found) in [
            (format!("/packages/ab/cd/{e60}/x.whl"), true),
            (format!("/packages/packages/ab/cd/{e60}/x.whl"), true),
            (format!("/api/pypi/r/packages/ab/cd/{e60}/x.whl"), true),
            (format!("packages/ab/cd/{e60}/x.whl"), true),
            (format!("/root/pypi/+f/abc/{e60}/x.whl"), false),
            (format!("/packages/ab/cd/{e60}/y.whl"), false),
            ("/x.whl".to_owned(), false),
        ] {
            assert_eq!(
                PackagePath::blake2b_in_url(&raw, &name).is_some(),
                found,
                "{raw}"
            );
        }
    }

    #[test]
    fn decodes_percent_encoded_plain_names() {
        let name = Filename::new("demo-1.0+local.tar.gz").unwrap();
        assert!(PackagePath::from_url_path(&hexpath("demo-1.0%2Blocal.tar.gz"), &name).is_ok());
    }

    #[test]
    fn refuses_every_unsafe_shape() {
        let name = Filename::new("x.whl").unwrap();
        let e60 = "e".repeat(60);
        for raw in [
            "/packages/../../etc/x.whl".to_owned(),
            format!("/packages/ab/cd/{e60}/..%2Fx.whl"),
            format!("/packages/ab/cd/{e60}/%2e%2e%2fx.whl"),
            format!("/packages/ab/cd/{e60}/a%5Cx.whl"),
            format!("/packages/ab/cd/{e60}/sub/x.whl"),
            format!("/elsewhere/ab/cd/{e60}/x.whl"),
            format!("//packages/ab/cd/{e60}/x.whl"),
            format!("/packages/AB/cd/{e60}/x.whl"),
            format!("/packages/ab/cd/{}/x.whl", "e".repeat(59)),
            format!("/packages/ab/cd/{}/x.whl", "z".repeat(60)),
            format!("/packages/ab/cd/{e60}/"),
            format!("/packages/ab/cd/{e60}/y.whl"),
            format!("/packages/ab/cd/{e60}/x.whl%00"),
        ] {
            assert!(
                PackagePath::from_url_path(&raw, &name).is_err(),
                "{raw} accepted"
            );
        }
    }

    #[test]
    fn refuses_unsafe_filenames() {
        for bad in [
            "", ".hidden", "a/b", "a\\b", "..", "a..b", "a\nb", "a\0b", "a\u{7f}b",
        ] {
            assert!(Filename::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Filename::new(&"a".repeat(247)).is_err());
        assert!(Filename::new(&"a".repeat(246)).is_ok());
        assert!(Filename::new("x-1.0-py3-none-any.whl.metadata").is_err());
    }
}
