//! Warehouse's journal serial: a monotonically increasing event number for the whole index.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
#[serde(transparent)]
pub struct Serial(pub u64);

impl Serial {
    /// SQLite stores integers as i64; serials are far below that bound.
    pub fn to_db(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    pub fn from_db(value: i64) -> Self {
        Serial(u64::try_from(value).unwrap_or(0))
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
