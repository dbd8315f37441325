//! Test support for pymirror, shared by the integration tests and the benches:
//!
//! * [`upstream`]: a fake Warehouse-compatible index on 127.0.0.1 with fault injection;
//! * [`mirror`]: runs the real `pymirror` binary against a sandboxed mirror and reads back
//!   what it produced;
//! * [`bandersnatch`]: the tree bandersnatch 8.2.0 writes for a fake upstream, optionally
//!   damaged;
//! * [`dist`]: small but valid wheels and sdists;
//! * [`s3`]: a real S3-compatible server (s3s-fs) whose buckets are directories;
//! * [`serve`]: real nginx serving a mirror, and pip/uv installing from it;
//! * [`measure`]: the benches' wall/CPU time and peak RSS of one `pymirror` run.
//!
//! It does not depend on the `pymirror` crate: the binary under test is only known to the
//! pymirror package's own tests and benches (`env!("CARGO_BIN_EXE_pymirror")`), which hand its
//! path to [`mirror::Mirror::new`] and [`measure::run_pymirror`].

pub mod bandersnatch;
pub mod dist;
pub mod measure;
pub mod mirror;
pub mod s3;
pub mod serve;
pub mod upstream;
