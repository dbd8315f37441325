//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Remove projects upstream removed (or a filter change leaves out) even when there are
    /// more than max_deletions.
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
