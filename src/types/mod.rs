//! Domain newtypes. Each validates at the boundary where upstream data enters, so the rest of
//! the program can take names, digests and paths as already safe.

mod digest;
pub mod dist;
pub mod hashing;
pub mod keys;
mod name;
mod package_path;
pub mod problem;
mod record;
mod serial;
pub mod text;

pub use digest::{Blake2b256, InvalidDigest, Sha256};
pub use name::{InvalidName, ProjectName, is_valid_display_name};
pub use package_path::{Filename, PACKAGES, PackagePath, UnsafePath};
pub use record::{
    FileRecord, HeldFile, JsonApiRecord, PageValidators, ProjectSnapshot, ProjectStatus,
    RemoteFile, StoredProject, Unknown,
};
pub use serial::Serial;
