//! Storage: the only code that reads or writes the served tree.
//!
//! - `fs`: the tree addressed by keys ([`Storage`]), on a local filesystem or, through `s3`,
//!   in an S3-compatible bucket.
//! - `s3`: the bucket backend (`object_store`).
//! - `download`: the strategy that puts a verified upstream file at its key.
//! - `inline`: whether a small verified file is written on the async worker or handed off.
//! - `layout`: the mirror directory on local disk (state database, lock, `status`, `tmp/`).
//! - `lock`: one writer per mirror.

pub mod download;
pub mod fs;
pub mod inline;
pub mod layout;
pub mod lock;
pub mod s3;
pub mod wheel;

pub use fs::{Durability, Storage};
pub use layout::Layout;
pub use lock::MirrorLock;
