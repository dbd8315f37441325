//! The `[storage]` table: where the served tree lives, a local `web/` or an S3-compatible
//! bucket. The state database, the lock and temporary files stay in `directory` either way.

use reqwest::Url;
use toml::Value;

use super::Keys;

/// Where the served tree lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backend {
    /// `<directory>/web`.
    #[default]
    Filesystem,
    S3(S3),
}

/// A bucket, and where in it the tree starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3 {
    pub bucket: String,
    /// `""` or a key prefix ending in `/` ("mirror/"): every key of the tree is under it.
    pub prefix: String,
    /// A custom endpoint (MinIO, Ceph, Garage, ...): addressed path-style. `None`: AWS.
    pub endpoint: Option<Url>,
    pub region: Option<String>,
}

pub(super) const KEYS: &[&str] = &["backend", "bucket", "prefix", "endpoint", "region"];

pub fn parse(table: Option<&Value>) -> Result<Backend, String> {
    let Some(value) = table else {
        return Ok(Backend::Filesystem);
    };
    let Value::Table(table) = value else {
        return Err(
            "storage must be a table: write it as [storage] (see mirror.toml.example)".into(),
        );
    };
    for key in table.keys() {
        if !KEYS.contains(&key.as_str()) {
            return Err(format!(
                "unknown key `{key}` in [storage]; remove it or use one of: {}",
                KEYS.join(", ")
            ));
        }
    }
    let keys = Keys("storage", table);
    let s3_only = ["bucket", "prefix", "endpoint", "region"];
    match keys.string("backend")?.as_deref() {
        None | Some("filesystem") => {
            if let Some(key) = s3_only.iter().find(|k| table.contains_key(**k)) {
                return Err(format!(
                    "[storage] {key} is set but backend is \"filesystem\"; set backend = \"s3\" \
                     to serve from a bucket, or remove {key}"
                ));
            }
            Ok(Backend::Filesystem)
        }
        Some("s3") => {
            let bucket = keys.string("bucket")?.unwrap_or_default();
            if !valid_bucket(&bucket) {
                return Err(match bucket.is_empty() {
                    true => "[storage] backend = \"s3\" needs a bucket; add bucket = \"<name>\" \
                             (an existing bucket the credentials may write)"
                        .to_owned(),
                    false => format!(
                        "[storage] bucket = {bucket:?} is not a bucket name (3 to 63 lowercase \
                         letters, digits, '.' and '-'); fix the value"
                    ),
                });
            }
            Ok(Backend::S3(S3 {
                bucket,
                prefix: parse_prefix(keys.string("prefix")?.unwrap_or_default())?,
                endpoint: keys
                    .string("endpoint")?
                    .map(|e| parse_endpoint(&e))
                    .transpose()?,
                region: keys.string("region")?.filter(|r| !r.is_empty()),
            }))
        }
        Some(other) => Err(format!(
            "[storage] backend = {other:?} is not one of \"filesystem\", \"s3\"; pick one"
        )),
    }
}

fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'))
}

/// `"mirror"` and `"mirror/"` are the same prefix; segments must be plain names, as in the
/// keys below it.
fn parse_prefix(raw: String) -> Result<String, String> {
    if raw.is_empty() {
        return Ok(raw);
    }
    let trimmed = raw.strip_suffix('/').unwrap_or(&raw);
    let bad = trimmed.split('/').any(|s| {
        s.is_empty() || s == "." || s == ".." || s.chars().any(|c| c.is_control() || c == '\\')
    });
    if bad {
        return Err(format!(
            "[storage] prefix = {raw:?} is not a key prefix; write it as \"name/\" or \
             \"a/b/\" (no leading '/', no empty, '.' or '..' segments), or \"\" for the bucket's root"
        ));
    }
    Ok(format!("{trimmed}/"))
}

/// Plain http is accepted: the endpoint is the operator's own store (often on a private
/// network), not upstream, and SigV4 never sends the secret; a sync says so when the host is
/// not loopback.
fn parse_endpoint(raw: &str) -> Result<Url, String> {
    let bad = |why: &str| format!("[storage] endpoint = {raw:?} {why}");
    let url = Url::parse(raw).map_err(|e| {
        bad(&format!(
            "is not a URL ({e}); write it as https://host[:port]"
        ))
    })?;
    if url.host().is_none() || url.query().is_some() || !url.username().is_empty() {
        return Err(bad(
            "must be a scheme, a host and an optional port; the bucket goes in `bucket`",
        ));
    }
    match url.scheme() {
        "https" | "http" => Ok(url),
        _ => Err(bad("must be an https (or http) URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Backend, String> {
        let table: toml::Table = text.parse().unwrap();
        parse(table.get("storage"))
    }

    #[test]
    fn the_contract_as_written() {
        let b = parse_str(
            "[storage]\nbackend = \"s3\"\nbucket = \"pypi\"\nprefix = \"\"\n\
             endpoint = \"https://s3.example.org\"\nregion = \"us-east-1\"\n",
        )
        .unwrap();
        let Backend::S3(s3) = b else { panic!("{b:?}") };
        assert_eq!(s3.bucket, "pypi");
        assert_eq!(s3.prefix, "");
        assert_eq!(s3.endpoint.unwrap().as_str(), "https://s3.example.org/");
        assert_eq!(s3.region.as_deref(), Some("us-east-1"));
        assert_eq!(parse_str("").unwrap(), Backend::Filesystem);
        assert_eq!(
            parse_str("[storage]\nbackend = \"filesystem\"\n").unwrap(),
            Backend::Filesystem
        );
        let Backend::S3(s3) =
            parse_str("[storage]\nbackend = \"s3\"\nbucket = \"b-1\"\nprefix = \"a/mirror\"\n")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(s3.prefix, "a/mirror/");
        assert_eq!(s3.endpoint, None);
    }

    #[test]
    fn each_mistake_is_one_line_naming_the_key_and_the_fix() {
        for (text, says) in [
            ("backend = \"s3\"", "needs a bucket; add bucket ="),
            (
                "backend = \"s3\"\nbucket = \"UP\"",
                "bucket = \"UP\" is not a bucket name",
            ),
            ("backend = \"gcs\"", "backend = \"gcs\" is not one of"),
            (
                "bucket = \"pypi\"",
                "bucket is set but backend is \"filesystem\"",
            ),
            (
                "backend = \"s3\"\nbucket = \"pypi\"\nprefix = \"/x\"",
                "prefix = \"/x\" is not",
            ),
            (
                "backend = \"s3\"\nbucket = \"pypi\"\nprefix = \"a/../b\"",
                "is not a key prefix",
            ),
            (
                "backend = \"s3\"\nbucket = \"pypi\"\nendpoint = \"ftp://s3.example.org\"",
                "must be an https (or http) URL",
            ),
            (
                "backend = \"s3\"\nbucket = \"pypi\"\nendpoint = \"nope\"",
                "is not a URL",
            ),
            (
                "backend = \"s3\"\nbucket = \"pypi\"\nsecret = \"x\"",
                "unknown key `secret`",
            ),
        ] {
            let e = parse_str(&format!("[storage]\n{text}\n")).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let loopback = parse_str(
            "[storage]\nbackend = \"s3\"\nbucket = \"pypi\"\nendpoint = \"http://127.0.0.1:9000\"\n",
        );
        assert!(loopback.is_ok(), "{loopback:?}");
    }
}
