//! The integration tests, one binary: each module drives the real `pymirror` binary against the
//! fake upstream of `pymirror-testkit` (tests/support) and checks what it published.

mod adopt;
mod consistency;
mod e2e;
mod filters;
mod hardening_fs;
mod hardening_net;
mod hostile;
mod index;
mod network;
mod personalities;
mod s3;
mod supply_chain;
mod sync;
mod verify;

/// The binary under test, built by Cargo for this package's integration tests (only its own
/// tests can name it, so they hand it to the testkit).
const PYMIRROR: &str = env!("CARGO_BIN_EXE_pymirror");
