//! A wheel's core metadata, read from the wheel itself: its PEP 658 `.metadata` file is the
//! wheel's `<name>.dist-info/METADATA`, byte for byte, so a sync that has just downloaded the
//! wheel need not ask upstream for it. The bytes must still hash to the sha256 upstream
//! promised; anything else (not a zip, no such entry, two candidates, too large, another
//! hash) is `None`, and the sidecar is downloaded as before.

use std::io::Read;

use super::fs::Storage;
use crate::types::Sha256;
use crate::types::hashing::{Hashes, hash_reader};

/// The `METADATA` of the wheel at `key` when it hashes to `want`, read through at most
/// `limit` bytes of it, with its digests (hashed once, for the caller to keep).
pub fn metadata(
    storage: &Storage,
    key: &str,
    want: Sha256,
    limit: u64,
) -> Option<(Vec<u8>, Hashes)> {
    let bytes = read_metadata(storage, key, limit)?;
    let hashes = hash_reader(&mut &bytes[..], &mut [0u8; 8192]).ok()?;
    (hashes.sha256 == want).then_some((bytes, hashes))
}

/// The `METADATA` of the wheel at `key` (at most `limit` bytes), whatever it hashes to: for
/// an upstream whose pages do not say (the wheel itself was verified, so its metadata is
/// what upstream published).
pub fn read_metadata(storage: &Storage, key: &str, limit: u64) -> Option<Vec<u8>> {
    let file = storage.open(key).ok()?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file)).ok()?;
    // Exactly one top-level `*.dist-info/METADATA` (the wheel spec allows no other).
    let found: Vec<String> = archive
        .file_names()
        .filter_map(Result::ok)
        .filter(|n| {
            n.strip_suffix("/METADATA")
                .is_some_and(|dir| dir.ends_with(".dist-info") && !dir.contains('/'))
        })
        .take(2)
        .map(|n| n.into_owned())
        .collect();
    let [name] = &found[..] else {
        return None;
    };
    let entry = archive.by_name(name).ok()?;
    if entry.size() > limit {
        return None;
    }
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry.take(limit + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= limit).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::storage::Durability;
    use crate::types::hashing::sha256;

    fn wheel(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut out);
        for (name, bytes) in entries {
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            zip.start_file(*name, options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
        out.into_inner()
    }

    #[test]
    fn reads_the_wheels_metadata_only_when_it_is_what_upstream_promised() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::new(
            &dir.path().join("web"),
            &dir.path().join("tmp"),
            Durability::None,
        );
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::create_dir_all(dir.path().join("web")).unwrap();
        let meta = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n";
        let put = |key: &str, bytes: Vec<u8>| {
            let mut staged = storage.stage();
            staged.write_all(&bytes).unwrap();
            storage.commit(staged, key).unwrap();
        };
        put(
            "w/good.whl",
            wheel(&[
                ("demo/__init__.py", b""),
                ("demo-1.0.dist-info/METADATA", meta),
                ("demo-1.0.dist-info/RECORD", b""),
            ]),
        );
        put(
            "w/two.whl",
            wheel(&[
                ("a-1.0.dist-info/METADATA", meta),
                ("b-1.0.dist-info/METADATA", meta),
            ]),
        );
        put(
            "w/nested.whl",
            wheel(&[("x/demo-1.0.dist-info/METADATA", meta)]),
        );
        put("w/notzip.whl", b"not a zip".to_vec());
        let want = sha256(meta);
        assert_eq!(
            metadata(&storage, "w/good.whl", want, 1 << 20).map(|(bytes, _)| bytes),
            Some(meta.to_vec())
        );
        assert_eq!(
            metadata(&storage, "w/good.whl", sha256(b"other"), 1 << 20),
            None
        );
        assert_eq!(metadata(&storage, "w/good.whl", want, 10), None);
        for key in ["w/two.whl", "w/nested.whl", "w/notzip.whl", "w/absent.whl"] {
            assert_eq!(metadata(&storage, key, want, 1 << 20), None, "{key}");
        }
    }
}
