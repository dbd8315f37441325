//! Plan: read upstream's change feed since the recorded serial and queue what changed.
//!
//! - XML-RPC, first run: `list_packages_with_serial` (everything, with each project's serial).
//! - XML-RPC, later runs: `changelog_since_serial`, paged until a page is empty.
//! - PEP 691 root index: each project's `_last-serial` against the one recorded; projects the
//!   mirror holds but the listing lacks are queued too (their metadata fetch answers 404 and
//!   the sync removes them). Used when configured, or when XML-RPC answers 404/405.
//!
//! With an allowlist of names only ([`Scope::only`]) the first run asks about those projects
//! alone: `changelog_last_serial` for the feed serial (no listing), then the changelog as
//! usual, whose rows for other projects the sync drops.
//!
//! The queue and the new feed serial are committed together ([`State::enqueue`]), so the
//! feed is never read past work that was not saved.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use crate::config::ChangeFeed;
use crate::state::{Change, State};
use crate::types::{ProjectName, Serial};
use crate::upstream::{Upstream, UpstreamError};

#[derive(Debug)]
pub struct Plan {
    pub feed_serial: Serial,
    pub changes: Vec<Change>,
    /// Names in the feed that are not valid project names (never turned into paths).
    pub invalid_names: Vec<String>,
    /// Projects the mirror holds that a full listing (PEP 691 root) lacks: likely removals.
    pub unlisted: usize,
}

/// Collects changes keeping, per project, the display name and the lowest and highest
/// serial seen.
#[derive(Default)]
struct Changes {
    by_name: BTreeMap<ProjectName, (String, Serial, Serial)>,
    invalid: Vec<String>,
}

impl Changes {
    fn add(&mut self, display: String, serial: Serial) {
        match ProjectName::new(&display) {
            Ok(name) => {
                let entry = self
                    .by_name
                    .entry(name)
                    .or_insert((display.clone(), serial, serial));
                entry.1 = entry.1.min(serial);
                if serial >= entry.2 {
                    entry.0 = display;
                    entry.2 = serial;
                }
            }
            Err(_) => self.invalid.push(display.chars().take(200).collect()),
        }
    }

    fn into_plan(self, feed_serial: Serial) -> Plan {
        Plan {
            feed_serial,
            changes: self
                .by_name
                .into_iter()
                .map(|(name, (display_name, first_serial, serial))| Change {
                    name,
                    display_name,
                    serial,
                    first_serial,
                })
                .collect(),
            invalid_names: self.invalid,
            unlisted: 0,
        }
    }
}

/// What the filters let the plan ask about.
#[derive(Debug, Default)]
pub struct Scope {
    /// An allowlist of names only: the projects the mirror can hold, all of them.
    pub only: Option<Vec<ProjectName>>,
    /// Read the full XML-RPC listing besides the changelog, to find projects a filter change
    /// lets in (the PEP 691 root listing is read every run anyway).
    pub relist: bool,
}

/// Ask upstream what changed since `since` (`None`: never synced).
pub async fn plan(
    upstream: &Upstream,
    state: &Mutex<State>,
    feed: ChangeFeed,
    since: Option<Serial>,
    scope: &Scope,
) -> anyhow::Result<Plan> {
    if let (None, Some(names)) = (since, &scope.only) {
        return Ok(first_run_of(upstream, feed, names).await?);
    }
    match feed {
        ChangeFeed::Simple => from_simple_root(upstream, state, since).await,
        ChangeFeed::XmlRpc => Ok(from_xmlrpc(upstream, since, scope.relist).await?),
        ChangeFeed::Auto => match from_xmlrpc(upstream, since, scope.relist).await {
            Err(e) if e.is_xmlrpc_unavailable() => {
                tracing::info!("XML-RPC unavailable upstream ({e}); using the PEP 691 root index");
                from_simple_root(upstream, state, since).await
            }
            other => Ok(other?),
        },
    }
}

/// A first run with an allowlist of names: those projects, and the serial to follow the
/// changelog from (without XML-RPC: 0, and the PEP 691 root index from the next run on).
async fn first_run_of(
    upstream: &Upstream,
    feed: ChangeFeed,
    names: &[ProjectName],
) -> Result<Plan, UpstreamError> {
    let feed_serial = match feed {
        ChangeFeed::Simple => Serial(0),
        ChangeFeed::XmlRpc => Serial(upstream.changelog_last_serial().await?),
        ChangeFeed::Auto => match upstream.changelog_last_serial().await {
            Err(e) if e.is_xmlrpc_unavailable() => Serial(0),
            other => Serial(other?),
        },
    };
    let mut changes = Changes::default();
    for name in names {
        changes.add(name.to_string(), Serial(0));
    }
    Ok(changes.into_plan(feed_serial))
}

async fn from_xmlrpc(
    upstream: &Upstream,
    since: Option<Serial>,
    relist: bool,
) -> Result<Plan, UpstreamError> {
    let mut changes = Changes::default();
    let Some(since) = since else {
        let listing = upstream.list_packages_with_serial().await?;
        let feed_serial = Serial(listing.values().copied().max().unwrap_or(0));
        for (display, serial) in listing {
            changes.add(display, Serial(serial));
        }
        return Ok(changes.into_plan(feed_serial));
    };
    // Read pages until one is empty rather than until one is short of Warehouse's page size
    // (50,000 rows): correct whatever page size upstream uses, for one extra request only
    // when there were changes.
    let mut cursor = since;
    loop {
        let rows = upstream.changelog_since_serial(cursor.0).await?;
        let before = cursor;
        for row in rows {
            changes.add(row.name, Serial(row.serial));
            cursor = cursor.max(Serial(row.serial));
        }
        // An empty page ends the feed; so does one that does not advance (a buggy or hostile
        // feed must not make us loop forever).
        if cursor == before {
            break;
        }
    }
    if relist {
        for (display, serial) in upstream.list_packages_with_serial().await? {
            changes.add(display, Serial(serial));
        }
    }
    Ok(changes.into_plan(cursor))
}

async fn from_simple_root(
    upstream: &Upstream,
    state: &Mutex<State>,
    since: Option<Serial>,
) -> anyhow::Result<Plan> {
    let root = upstream.simple_root().await?;
    let listed_max = root
        .projects
        .iter()
        .filter_map(|p| p.last_serial)
        .max()
        .unwrap_or(0);
    let feed_serial = Serial(root.meta.last_serial.unwrap_or(listed_max));
    let mut changes = Changes::default();
    if since.is_some_and(|s| feed_serial < s) {
        tracing::warn!(
            "upstream root index is at serial {feed_serial}, behind ours; treating it as stale (no changes)"
        );
        return Ok(changes.into_plan(since.unwrap_or_default()));
    }
    let known = state
        .lock()
        .expect("state lock poisoned")
        .project_serials()?;
    let mut listed = HashSet::with_capacity(root.projects.len());
    for p in root.projects {
        if let Ok(name) = ProjectName::new(&p.name) {
            listed.insert(name.as_str().to_owned());
        }
        let Some(serial) = p.last_serial else {
            changes.add(p.name, feed_serial);
            continue;
        };
        let mirrored = ProjectName::new(&p.name)
            .ok()
            .and_then(|name| known.get(name.as_str()).copied());
        if mirrored.is_some_and(|s| s >= Serial(serial)) {
            continue;
        }
        changes.add(p.name, Serial(serial));
    }
    let mut unlisted = 0;
    for (name, _) in known.into_iter().filter(|(n, _)| !listed.contains(n)) {
        changes.add(name, feed_serial);
        unlisted += 1;
    }
    Ok(Plan {
        unlisted,
        ..changes.into_plan(feed_serial)
    })
}
