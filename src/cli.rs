//! Command-line interface.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pymirror",
    version,
    about = "Mirror a Python package index to a static tree served by any web server"
)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring the mirror up to date with upstream (first run: a full mirror).
    Sync(SyncArgs),
    /// Show the mirror's serial, upstream's, the lag, pending projects and the last run.
    Status(StatusArgs),
    /// Print an nginx configuration (a conf.d file) that serves this mirror.
    NginxConfig(NginxArgs),
    /// Check the mirror against its state database (and upstream); repair what is wrong.
    /// Exit 0: clean; 1: problems found; 2: verify could not run (or not check everything).
    Verify(VerifyArgs),
    /// Take over an existing bandersnatch mirror (the tree at [mirror] directory) without
    /// downloading it again; offline. Exit 0: all adopted; 1: files missing or damaged
    /// (queued for the next sync); 2: adopt could not run.
    Adopt(AdoptArgs),
}

#[derive(Debug, Args)]
pub struct AdoptArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Also hash every file (SHA-256 against its page, BLAKE2b-256 against its path).
    #[arg(long)]
    pub hash: bool,
    /// Test hook: exit as if killed (code 137) once N projects are recorded.
    #[cfg(feature = "test-hooks")]
    #[arg(long, value_name = "N", hide = true)]
    pub test_exit_after: Option<u64>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("fix").multiple(true).args(["repair", "delete_orphans"])))]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Also re-hash every file (SHA-256 and BLAKE2b-256), on every core.
    #[arg(long)]
    pub hash: bool,
    /// Also compare each project's serial and files with upstream, and report drift.
    #[arg(long)]
    pub upstream: bool,
    /// Print the report as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Fetch missing or corrupt files again, rewrite wrong or missing pages, remove pages of
    /// projects the mirror does not hold, queue drifted projects (takes the mirror lock).
    #[arg(long)]
    pub repair: bool,
    /// Delete orphan files and leftover temporary files (takes the mirror lock).
    #[arg(long)]
    pub delete_orphans: bool,
    /// Show what --repair / --delete-orphans would change, and change nothing.
    #[arg(long, requires = "fix")]
    pub dry_run: bool,
    /// Continue the last verify that was interrupted, from its checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Threads checking files and pages [default: twice the cores, at least 8, at most 64].
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Test hook: exit as if killed (code 137) after N units of work.
    #[cfg(feature = "test-hooks")]
    #[arg(long, value_name = "N", hide = true)]
    pub test_exit_after: Option<u64>,
    /// Test hook: stop as on SIGINT after N units of work.
    #[cfg(feature = "test-hooks")]
    #[arg(long, value_name = "N", hide = true)]
    pub test_stop_after: Option<u64>,
}

#[derive(Debug, Args)]
pub struct NginxArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// nginx `listen` value.
    #[arg(long, default_value = "80")]
    pub listen: String,
    /// nginx `server_name` value.
    #[arg(long, default_value = "_")]
    pub server_name: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Remove projects upstream removed (or a filter change leaves out), empty projects, and
    /// delete files, even beyond max_deletions (and max_deletion_share of the files looked at).
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Print what a sync would download, keep and delete (with byte totals) and change
    /// nothing; it reads upstream's change feed and metadata but downloads no file.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The mirror's configuration file (see mirror.toml.example).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
}
