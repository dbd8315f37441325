//! Storage: the mirror directory on local disk (`layout`), the one writer's lock (`lock`),
//! and the download strategy that places verified files in the served tree (`download`).

pub mod download;
pub mod layout;
pub mod lock;

pub use layout::Layout;
pub use lock::MirrorLock;
