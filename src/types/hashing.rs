//! The two digests every mirrored file is checked against, computed in one pass.

use std::io::Read;

use blake2::Digest;

use super::{Blake2b256, Sha256};

type Blake2b256Hasher = blake2::Blake2b<blake2::digest::consts::U32>;

/// Feeds bytes to SHA-256 and BLAKE2b-256 together, counting them.
#[derive(Default)]
pub struct FileHasher {
    sha256: sha2::Sha256,
    blake2b: Blake2b256Hasher,
    len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashes {
    pub sha256: Sha256,
    pub blake2b: Blake2b256,
    pub len: u64,
}

impl FileHasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.blake2b.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Hashes {
        Hashes {
            sha256: Sha256::from_bytes(self.sha256.finalize().into()),
            blake2b: Blake2b256::from_bytes(self.blake2b.finalize().into()),
            len: self.len,
        }
    }
}

/// Hash everything `reader` gives, through the caller's buffer: no allocation per file when
/// hashing millions of them (blocking: call from a blocking context).
pub fn hash_reader(mut reader: impl Read, buf: &mut [u8]) -> std::io::Result<Hashes> {
    let mut hasher = FileHasher::default();
    loop {
        let n = reader.read(buf)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// SHA-256 of bytes in memory (pages).
pub fn sha256(bytes: &[u8]) -> Sha256 {
    Sha256::from_bytes(sha2::Sha256::digest(bytes).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_known_vectors() {
        let mut h = FileHasher::default();
        h.update(b"abc");
        let out = h.finish();
        assert_eq!(
            out.sha256.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // hashlib.blake2b(b"abc", digest_size=32).hexdigest()
        assert_eq!(
            out.blake2b.to_hex(),
            "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"
        );
        assert_eq!(out.len, 3);
    }
}
