//! Hex digests as upstream sends them, checked for shape at the boundary so that a bad digest
//! is refused before any download starts.

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{kind} digest {value:?} is not {len} hex characters")]
pub struct InvalidDigest {
    pub kind: &'static str,
    pub value: String,
    pub len: usize,
}

macro_rules! hex_digest {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $bytes:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name([u8; $bytes]);

        impl $name {
            /// Parse hex of exactly the right length (either case; always printed lowercase).
            pub fn from_hex(value: &str) -> Result<Self, InvalidDigest> {
                let mut out = [0u8; $bytes];
                match hex::decode_to_slice(value, &mut out) {
                    Ok(()) => Ok($name(out)),
                    Err(_) => Err(InvalidDigest { kind: $kind, value: value.chars().take(80).collect(), len: $bytes * 2 }),
                }
            }

            pub fn from_bytes(bytes: [u8; $bytes]) -> Self {
                $name(bytes)
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

hex_digest!(
    /// A SHA-256 digest: the hash every index page advertises.
    Sha256,
    "sha256",
    32
);
hex_digest!(
    /// A BLAKE2b-256 digest: PyPI derives a file's storage path from it.
    Blake2b256,
    "blake2b_256",
    32
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_exact_hex_and_prints_lowercase() {
        let upper = "AB".repeat(32);
        assert_eq!(Sha256::from_hex(&upper).unwrap().to_hex(), "ab".repeat(32));
    }

    #[test]
    fn refuses_wrong_length_or_non_hex() {
        assert!(Sha256::from_hex(&"a".repeat(63)).is_err());
        assert!(Sha256::from_hex(&"a".repeat(66)).is_err());
        assert!(Blake2b256::from_hex(&"g".repeat(64)).is_err());
        assert!(Blake2b256::from_hex("").is_err());
    }
}
