//! pymirror: a PyPI mirror synchronizer. See ARCHITECTURE.md for the floors and the path a
//! sync takes through them. Each module imports only the ones listed above it.

pub mod adopt;
pub mod cli;
pub mod config;
pub mod filter;
pub mod index;
pub mod nginx;
pub mod progress;
pub mod state;
pub mod status;
pub mod storage;
pub mod sync;
pub mod types;
pub mod upstream;
pub mod verify;
