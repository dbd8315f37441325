//! The change feed: how the mirror learns what changed upstream, one choice for every command
//! that asks (the sync's plan and dry run, `status`, `verify --upstream`).
//!
//! - XML-RPC (`changelog_since_serial`, `list_packages_with_serial`,
//!   `changelog_last_serial`): Warehouse's mirror interface, exact and cheap per run.
//! - The PEP 691 root index (`/simple/` as JSON, each project with its `_last-serial`): for
//!   upstreams without XML-RPC (another mirror).
//! - A root index without serials (PEP 503 HTML, devpi, Artifactory): the listing, and every
//!   listed project's page asked conditionally each run (one request per project, mostly
//!   304s or a page compared by digest).
//! - An allowlist of names, on an upstream without serials: those pages only, conditionally.
//!
//! `change_feed = "auto"` tries XML-RPC and falls back to the root index when upstream answers
//! 404 or 405 for it.

use std::future::Future;

use super::{Upstream, UpstreamError};
use crate::config::ChangeFeed;
use crate::types::Serial;

/// Which feed answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    XmlRpc,
    /// The root index with a serial per project.
    SimpleRoot,
    /// A root index without serials (PEP 503 HTML, or JSON without `_last-serial`): its
    /// listing gives additions and removals; each listed project's page is asked
    /// conditionally (`ETag`, `Last-Modified`, else a digest of the page).
    RootWithoutSerials,
    /// An allowlist of names asked one by one, conditionally: no listing read at all.
    Allowlist,
}

impl Source {
    /// How it is recorded in the database.
    pub fn key(self) -> &'static str {
        match self {
            Source::XmlRpc => "xmlrpc",
            Source::SimpleRoot => "root",
            Source::RootWithoutSerials => "root-without-serials",
            Source::Allowlist => "allowlist",
        }
    }

    pub fn from_key(key: &str) -> Option<Source> {
        [
            Source::XmlRpc,
            Source::SimpleRoot,
            Source::RootWithoutSerials,
            Source::Allowlist,
        ]
        .into_iter()
        .find(|s| s.key() == key)
    }

    /// Whether its changes carry serials (else each is asked conditionally).
    pub fn has_serials(self) -> bool {
        matches!(self, Source::XmlRpc | Source::SimpleRoot)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::XmlRpc => "XML-RPC",
            Source::SimpleRoot => "the PEP 691 root index",
            Source::RootWithoutSerials => {
                "the root index without serials (each project's page asked conditionally)"
            }
            Source::Allowlist => "the allowlisted projects' pages, asked conditionally",
        })
    }
}

pub struct Feed<'a> {
    upstream: &'a Upstream,
    choice: ChangeFeed,
}

impl<'a> Feed<'a> {
    pub fn new(upstream: &'a Upstream, choice: ChangeFeed) -> Feed<'a> {
        Feed { upstream, choice }
    }

    pub fn upstream(&self) -> &'a Upstream {
        self.upstream
    }

    /// Ask the configured feed: `xmlrpc` through XML-RPC, `root` through the root index (each
    /// is only awaited if that feed is the one asked).
    pub async fn pick<T>(
        &self,
        xmlrpc: impl Future<Output = anyhow::Result<T>>,
        root: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<(T, Source)> {
        let unavailable = |e: &anyhow::Error| {
            e.downcast_ref::<UpstreamError>()
                .is_some_and(UpstreamError::is_xmlrpc_unavailable)
        };
        match self.choice {
            ChangeFeed::Simple => Ok((root.await?, Source::SimpleRoot)),
            ChangeFeed::XmlRpc => Ok((xmlrpc.await?, Source::XmlRpc)),
            ChangeFeed::Auto => match xmlrpc.await {
                Err(e) if unavailable(&e) => {
                    tracing::info!(
                        "XML-RPC unavailable upstream ({e}); using the PEP 691 root index"
                    );
                    Ok((root.await?, Source::SimpleRoot))
                }
                other => Ok((other?, Source::XmlRpc)),
            },
        }
    }

    /// Upstream's current serial; `None` from a root index without serials.
    pub async fn last_serial(&self) -> anyhow::Result<Option<u64>> {
        let root = async {
            let root = self.upstream.simple_root().await?;
            Ok(root
                .meta
                .last_serial
                .or_else(|| root.projects.iter().filter_map(|p| p.last_serial).max()))
        };
        let xmlrpc = async { Ok(Some(self.upstream.changelog_last_serial().await?)) };
        Ok(self.pick(xmlrpc, root).await?.0)
    }

    /// Every project upstream lists, with its serial.
    pub async fn listing(&self) -> anyhow::Result<Vec<(String, Serial)>> {
        let root = async {
            let root = self.upstream.simple_root().await?;
            let serial = root.meta.last_serial.unwrap_or(0);
            anyhow::Ok(
                root.projects
                    .into_iter()
                    .map(|p| (p.name, Serial(p.last_serial.unwrap_or(serial))))
                    .collect(),
            )
        };
        let xmlrpc = async {
            Ok(self
                .upstream
                .list_packages_with_serial()
                .await?
                .into_iter()
                .map(|(name, serial)| (name, Serial(serial)))
                .collect::<Vec<_>>())
        };
        Ok(self.pick(xmlrpc, root).await?.0)
    }
}
