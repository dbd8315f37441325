//! pymirror: a PyPI mirror synchronizer. See ARCHITECTURE.md for the path a sync takes.

pub mod cli;
pub mod config;
pub mod download;
pub mod dry_run;
pub mod filter;
pub mod hashing;
pub mod index;
pub mod layout;
pub mod lock;
pub mod metadata;
pub mod nginx;
pub mod plan;
pub mod progress;
pub mod state;
pub mod status;
pub mod sync;
pub mod types;
pub mod upstream;
pub mod verify;
