//! Domain newtypes. Each validates at the boundary where upstream data enters, so the rest of
//! the program can take names, digests and paths as already safe.

mod digest;
mod name;
mod package_path;
mod serial;

pub use digest::{Blake2b256, InvalidDigest, Sha256};
pub use name::{InvalidName, ProjectName, is_valid_display_name};
pub use package_path::{Filename, PackagePath, UnsafePath};
pub use serial::Serial;
