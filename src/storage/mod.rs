//! Storage: the only code that reads or writes the served tree.
//!
//! - `fs`: the tree on a local filesystem, addressed by keys ([`Storage`]); the seam where an
//!   object-storage backend plugs in.
//! - `download`: the strategy that puts a verified upstream file at its key.
//! - `layout`: the mirror directory on local disk (state database, lock, `status`, `tmp/`).
//! - `lock`: one writer per mirror.

pub mod download;
pub mod fs;
pub mod layout;
pub mod lock;
pub mod wheel;

pub use fs::{Durability, Storage};
pub use layout::Layout;
pub use lock::MirrorLock;
