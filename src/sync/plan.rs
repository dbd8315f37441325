//! Plan: read upstream's change feed since the recorded serial and queue what changed.
//!
//! - XML-RPC, first run: `list_packages_with_serial` (everything, with each project's serial).
//! - XML-RPC, later runs: `changelog_since_serial`, paged until a page is empty, at most
//!   `max_feed_rows` rows a run (a feed that never ends is not read forever: what was read is
//!   queued, the run ends with an error, the next one reads on), and no further page once the
//!   run is told to stop.
//! - PEP 691 root index: each project's `_last-serial` against the one recorded; projects the
//!   mirror holds but the listing lacks are queued too (their metadata fetch answers 404 and
//!   the sync removes them). Used when configured, or when XML-RPC answers 404/405.
//!
//! With an allowlist of names only ([`Scope::only`]) the first run asks about those projects
//! alone: `changelog_last_serial` for the feed serial (no listing), then the changelog as
//! usual, whose rows for other projects the sync drops.
//!
//! A recorded feed serial beyond upstream's current one (an absurd answer was once believed,
//! or upstream was restored from a backup) would make every later run see no change. When
//! the changelog answers nothing, upstream's `changelog_last_serial` is asked: if it is behind
//! ours, the run warns and starts over as a first run (the listing, or every allowlisted
//! project, compared again; files already held are kept), and project serials beyond the
//! feed are forgotten. A serial upstream has confirmed is not asked about again for an hour,
//! so a no-op run is one request.
//!
//! The queue and the new feed serial are committed together ([`State::enqueue`]), so the
//! feed is never read past work that was not saved. A sync commits the changelog page by page
//! as it reads it ([`Batches`]): memory holds one page, and a run killed while reading keeps
//! the pages it read.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::Summary;
use super::filter_change::{FilterChange, Revisits};
use super::guard::Guard;
use super::lock;
use crate::config::Config;

use crate::state::{Change, State};
use crate::types::{ProjectName, Serial};
use crate::upstream::Upstream;
use crate::upstream::feed::{Feed, Source};

#[derive(Debug)]
pub struct Plan {
    pub feed_serial: Serial,
    pub changes: Vec<Change>,
    /// Names in the feed that are not valid project names (never turned into paths).
    pub invalid_names: Vec<String>,
    /// Projects the mirror holds that a full listing (PEP 691 root) lacks: likely removals.
    pub unlisted: usize,
    /// The feed was not read to its end (`max_feed_rows`): why. What was read is queued.
    pub incomplete: Option<String>,
    /// The recorded feed serial was beyond upstream's: this plan starts over (every change
    /// is queued, mirrored or not, when the scope is an allowlist of names).
    pub restarted: bool,
    /// The feed that answered.
    pub source: Option<Source>,
    /// Changes already queued page by page while the feed was read (see [`Scope::batches`]).
    pub queued_in_batches: usize,
}

/// Collects changes keeping, per project, the display name and the lowest and highest
/// serial seen.
#[derive(Default)]
struct Changes {
    by_name: BTreeMap<ProjectName, Change>,
    invalid: Vec<String>,
}

impl Changes {
    fn add(&mut self, display: String, serial: Serial) {
        self.put(display, serial, false);
    }

    /// A project a serial-less feed lists: whether it changed is asked of its page.
    fn add_conditional(&mut self, display: String, serial: Serial) {
        self.put(display, serial, true);
    }

    fn len(&self) -> usize {
        self.by_name.len()
    }

    /// The changes collected so far, leaving the invalid names.
    fn take(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.by_name).into_values().collect()
    }

    fn put(&mut self, display: String, serial: Serial, conditional: bool) {
        let Ok(name) = ProjectName::new(&display) else {
            self.invalid.push(display.chars().take(200).collect());
            return;
        };
        let entry = self.by_name.entry(name.clone()).or_insert(Change {
            name,
            display_name: display.clone(),
            serial,
            first_serial: serial,
            conditional,
        });
        entry.first_serial = entry.first_serial.min(serial);
        entry.conditional &= conditional;
        if serial >= entry.serial {
            entry.display_name = display;
            entry.serial = serial;
        }
    }

    fn into_plan(self, feed_serial: Serial) -> Plan {
        Plan {
            feed_serial,
            changes: self.by_name.into_values().collect(),
            invalid_names: self.invalid,
            unlisted: 0,
            incomplete: None,
            restarted: false,
            source: None,
            queued_in_batches: 0,
        }
    }
}

/// The plan phase of a sync: weigh a filter change (stopping at the mass-delete guard), read
/// the change feed, queue what changed together with the feed's serial, then requeue what a
/// filter change affects and record the new filters. Returns how many projects are queued.
pub async fn run(
    cfg: &Config,
    guard: Guard,
    upstream: &Upstream,
    state: &Arc<Mutex<State>>,
    summary: &mut Summary,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<u64> {
    let started = std::time::Instant::now();
    let (since, filter_change) = {
        let (cfg, state) = (cfg.clone(), state.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let state = lock(&state);
            let since = state.changelog_serial()?;
            let change = FilterChange::detect(state.filters()?.as_deref(), &cfg.filters);
            if let Some(change) = &change
                && since.is_some()
            {
                tracing::info!("the filter configuration changed; weighing what it removes");
                guard.filter_change(&change.impact(&cfg.filters, &state)?)?;
            }
            Ok((since, change))
        })
        .await??
    };
    let mut plan = read(
        cfg,
        upstream,
        state,
        since,
        filter_change.as_ref(),
        Some(stop.clone()),
        true,
    )
    .await?;
    if let Some(why) = plan.incomplete.take() {
        tracing::error!("{why}");
        summary.feed_incomplete = Some(why);
    }
    for name in &plan.invalid_names {
        tracing::warn!("upstream lists {name:?}, which is not a valid project name; skipped");
    }
    summary.refused += plan.invalid_names.len() as u64;
    if let Some(why) = guard.unlisted(plan.unlisted) {
        anyhow::bail!("{why}; nothing was changed");
    }
    let (cfg, state) = (cfg.clone(), state.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let mut state = lock(&state);
        // A feed serial of 0 is none at all (a root index without serials): nothing to
        // measure project serials against.
        let forgotten = match plan.feed_serial.0 {
            0 => 0,
            feed => state.forget_serials_beyond(Serial(feed))?,
        };
        if forgotten > 0 {
            tracing::warn!(
                "{forgotten} projects were recorded at serials beyond upstream's {}; their \
                 serials are forgotten so that upstream's next changes to them are not skipped",
                plan.feed_serial
            );
        }
        if plan.restarted && cfg.filters.listed_projects().is_some() {
            // Which of them changed while the feed serial was wrong is unknown: all of them.
            state.requeue(&plan.changes)?;
        }
        let queued = state.enqueue(&plan.changes, plan.feed_serial)? + plan.queued_in_batches;
        if let Some(source) = plan.source {
            state.set_change_feed(source.key())?;
        }
        // A filter change or a file coming of age is no upstream change: what it queues
        // does not hold the fully synced serial back.
        let first_serial = Serial(plan.feed_serial.0.saturating_add(1));
        // Projects holding back files that have come of age, without any upstream change;
        // all of them when the release or file filters (the cooldown among them) changed.
        let due_by = match &filter_change {
            Some(change) if change.content_changed => i64::MAX,
            _ => cfg.filters.now(),
        };
        let due = state.held_back_due(due_by, first_serial)?;
        if !due.is_empty() {
            state.requeue(&due)?;
            tracing::info!(
                "{} projects hold back files for the cooldown that are now to be judged again",
                due.len()
            );
        }
        if let Some(change) = &filter_change {
            // After the feed's changes are queued: a crash in between re-detects the change.
            let mut revisits = Revisits::default();
            let mut requeued = 0;
            while let Some(batch) =
                change.next_revisits(&cfg.filters, &state, &mut revisits, first_serial)?
            {
                requeued += batch.len();
                state.requeue(&batch)?;
            }
            state.set_filters(&cfg.filters.spec().to_canonical())?;
            if since.is_some() {
                tracing::info!(
                    "the filter configuration changed: {requeued} projects to look at again"
                );
            }
        }
        let pending = state.pending_count()?;
        let took = started.elapsed().as_secs_f64();
        match plan.source.filter(|s| !s.has_serials()) {
            Some(source) => tracing::info!(
                "change feed: {source}: {queued} projects to ask, {pending} queued in all \
                 (planned in {took:.2} s)"
            ),
            None => tracing::info!(
                "upstream serial {}: {} changed projects queued, {} to sync (planned in \
                 {took:.2} s)",
                plan.feed_serial,
                queued,
                pending
            ),
        }
        Ok(pending)
    })
    .await?
}

/// Read the change feed in the filters' scope, dropping the projects they leave out.
/// `commit`: queue the changelog's changes page by page as it is read (a sync), rather than
/// only hand them back (a dry run).
pub async fn read(
    cfg: &Config,
    upstream: &Upstream,
    state: &Mutex<State>,
    since: Option<Serial>,
    filter_change: Option<&FilterChange>,
    stop: Option<Arc<AtomicBool>>,
    commit: bool,
) -> anyhow::Result<Plan> {
    let only = cfg.filters.listed_projects();
    // With an allowlist of names, projects newly listed are requeued by name instead.
    let relist = since.is_some()
        && only.is_none()
        && filter_change.is_some_and(|c| c.may_add_projects(&cfg.filters));
    let scope = Scope {
        only,
        relist,
        max_rows: cfg.max_feed_rows,
        stop,
        batches: commit.then_some(Batches {
            state,
            filters: &cfg.filters,
        }),
    };
    let feed = Feed::new(upstream, cfg.change_feed);
    let mut plan = plan(&feed, state, since, &scope).await.map_err(|e| {
        e.context("cannot read upstream's change feed; nothing was changed, try again later")
    })?;
    plan.changes
        .retain(|c| cfg.filters.allows_project(&c.name).is_ok());
    Ok(plan)
}

/// What the filters let the plan ask about.
#[derive(Default)]
pub struct Scope<'a> {
    /// An allowlist of names only: the projects the mirror can hold, all of them.
    pub only: Option<Vec<ProjectName>>,
    /// Read the full XML-RPC listing besides the changelog, to find projects a filter change
    /// lets in (the PEP 691 root listing is read every run anyway).
    pub relist: bool,
    /// Changelog rows one run reads at most (`max_feed_rows`; 0: no cap).
    pub max_rows: u64,
    /// Set on SIGINT/SIGTERM: read no further page, keep what was read.
    pub stop: Option<Arc<AtomicBool>>,
    /// Where each changelog page's changes are queued, with the serial read up to, as soon as
    /// the page is read: memory holds one page, and a run killed while reading keeps what it
    /// read.
    pub batches: Option<Batches<'a>>,
}

/// Queue a changelog page's changes (those the filters let in) and advance the feed serial
/// to its end, in one transaction (or a first run's listing, a part at a time).
pub struct Batches<'a> {
    pub state: &'a Mutex<State>,
    pub filters: &'a crate::filter::Filters,
}

/// Projects of a first run's listing queued per transaction.
const LISTING_BATCH: usize = 50_000;

impl Batches<'_> {
    /// Queue `changes` (those the filters let in) and advance the feed serial to `serial`;
    /// `None` for part of a first run's listing, whose last part's transaction records it.
    fn commit(&self, mut changes: Vec<Change>, serial: Option<Serial>) -> anyhow::Result<usize> {
        changes.retain(|c| self.filters.allows_project(&c.name).is_ok());
        Ok(tokio::task::block_in_place(|| {
            let mut state = lock(self.state);
            match serial {
                Some(serial) => state.enqueue(&changes, serial),
                None => state.enqueue_listed(&changes),
            }
        })?)
    }
}

/// Ask upstream what changed since `since` (`None`: never synced).
pub async fn plan(
    feed: &Feed<'_>,
    state: &Mutex<State>,
    since: Option<Serial>,
    scope: &Scope<'_>,
) -> anyhow::Result<Plan> {
    let (plan, source) = plan_since(feed, state, since, scope).await?;
    let now = crate::filter::cooldown::unix_now();
    // A serial upstream itself just named (its current one on a first run, a changelog row's)
    // is one it has reached: the next no-op need not ask again. (A dry run writes nothing:
    // its database is read-only.)
    if source == Some(Source::XmlRpc)
        && since.is_none_or(|s| plan.feed_serial > s)
        && scope.batches.is_some()
    {
        tokio::task::block_in_place(|| lock(state).set_feed_confirmed(plan.feed_serial, now))?;
    }
    // Nothing since ours: is ours beyond upstream's? (XML-RPC only: the root index compares
    // serials itself.)
    let Some(ours) = since.filter(|&s| {
        source == Some(Source::XmlRpc) && plan.feed_serial == s && plan.changes.is_empty()
    }) else {
        return Ok(plan);
    };
    // Asked once per serial and hour at most: a no-op run is then one request.
    let confirmed = tokio::task::block_in_place(|| lock(state).feed_confirmed())?;
    if confirmed.is_some_and(|(serial, at)| serial == ours && now - at < RECHECK_EVERY) {
        return Ok(plan);
    }
    let upstream_serial = match feed.upstream().changelog_last_serial().await {
        Ok(serial) => Serial(serial),
        Err(e) => {
            tracing::debug!("cannot check upstream's serial: {e:#}");
            return Ok(plan);
        }
    };
    if upstream_serial >= ours {
        // A dry run (nothing committed) writes nothing: its database is read-only.
        if scope.batches.is_some() {
            tokio::task::block_in_place(|| lock(state).set_feed_confirmed(ours, now))?;
        }
        return Ok(plan);
    }
    tracing::warn!(
        "the recorded change-feed serial {ours} is beyond upstream's current serial \
         {upstream_serial} (an absurd answer was recorded, or upstream was restored from a \
         backup); starting over from upstream's serial: every project is compared again, files \
         already held are kept"
    );
    let (mut plan, _) = plan_since(feed, state, None, scope).await?;
    plan.restarted = true;
    Ok(plan)
}

/// How long a feed serial upstream confirmed is not asked about again (seconds).
const RECHECK_EVERY: i64 = 3600;

async fn plan_since(
    feed: &Feed<'_>,
    state: &Mutex<State>,
    since: Option<Serial>,
    scope: &Scope<'_>,
) -> anyhow::Result<(Plan, Option<Source>)> {
    if let (None, Some(names)) = (since, &scope.only) {
        let plan = first_run_of(feed, names).await?;
        return Ok((plan, None));
    }
    // An allowlist on an upstream known to have no serials: its names, asked conditionally,
    // rather than a listing of every project (tens of MB) that says nothing about change.
    let recorded = tokio::task::block_in_place(|| lock(state).change_feed())?;
    if let (Some(names), Some(Source::RootWithoutSerials | Source::Allowlist)) =
        (&scope.only, recorded.as_deref().and_then(Source::from_key))
        && since == Some(Serial(0))
    {
        let mut changes = Changes::default();
        for name in names {
            changes.add_conditional(name.to_string(), Serial(0));
        }
        let plan = Plan {
            source: Some(Source::Allowlist),
            ..changes.into_plan(Serial(0))
        };
        return Ok((plan, Some(Source::Allowlist)));
    }
    let (mut plan, source) = feed
        .pick(
            from_xmlrpc(feed.upstream(), since, scope),
            from_simple_root(feed.upstream(), state, since, scope.only.as_deref()),
        )
        .await?;
    let source = *plan.source.get_or_insert(source);
    Ok((plan, Some(source)))
}

/// A first run with an allowlist of names: those projects, and the serial to follow the
/// changelog from (without XML-RPC: 0, and the root index from the next run on; where that
/// has no serials, the allowlisted pages asked conditionally from the run after).
async fn first_run_of(feed: &Feed<'_>, names: &[ProjectName]) -> anyhow::Result<Plan> {
    let (serial, source) = feed
        .pick(
            async { Ok(feed.upstream().changelog_last_serial().await?) },
            async { Ok(0) },
        )
        .await?;
    let feed_serial = Serial(serial);
    let mut changes = Changes::default();
    for name in names {
        changes.add(name.to_string(), Serial(0));
    }
    Ok(Plan {
        // Without XML-RPC, which root index upstream has is learned on the next run.
        source: (source == Source::XmlRpc).then_some(Source::XmlRpc),
        ..changes.into_plan(feed_serial)
    })
}

async fn from_xmlrpc(
    upstream: &Upstream,
    since: Option<Serial>,
    scope: &Scope<'_>,
) -> anyhow::Result<Plan> {
    let mut changes = Changes::default();
    let Some(since) = since else {
        let listing = upstream.list_packages_with_serial().await?;
        let feed_serial = Serial(listing.iter().map(|(_, s)| *s).max().unwrap_or(0));
        // Queued a part at a time: a PyPI-sized listing held whole, twice over (names and
        // queue entries), would be most of the run's memory.
        let mut queued_in_batches = 0;
        for (display, serial) in listing {
            changes.add(display, Serial(serial));
            if let Some(batches) = &scope.batches
                && changes.len() >= LISTING_BATCH
            {
                queued_in_batches += batches.commit(changes.take(), None)?;
            }
        }
        return Ok(Plan {
            queued_in_batches,
            ..changes.into_plan(feed_serial)
        });
    };
    // Read pages until one is empty rather than until one is short of Warehouse's page size
    // (50,000 rows): correct whatever page size upstream uses, for one extra request only
    // when there were changes.
    let mut cursor = since;
    let mut read = 0u64;
    let mut incomplete = None;
    let mut queued_in_batches = 0;
    loop {
        if scope
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            tracing::info!("stopping: the change feed is read up to serial {cursor}");
            break;
        }
        let rows = upstream.changelog_since_serial(cursor.0).await?;
        let before = cursor;
        read += rows.len() as u64;
        for row in rows {
            changes.add(row.name, Serial(row.serial));
            cursor = cursor.max(Serial(row.serial));
        }
        // An empty page ends the feed; so does one that does not advance (a buggy or hostile
        // feed must not make us loop forever).
        if cursor == before {
            break;
        }
        if let Some(batches) = &scope.batches {
            queued_in_batches += batches.commit(changes.take(), Some(cursor))?;
        }
        if scope.max_rows > 0 && read >= scope.max_rows {
            incomplete = Some(format!(
                "the change feed did not end within max_feed_rows = {} rows (read from serial \
                 {since} to {cursor}); what was read is queued and the feed is read on from \
                 there next run. If upstream really has that many changes, raise max_feed_rows",
                scope.max_rows
            ));
            break;
        }
    }
    if scope.relist && incomplete.is_none() {
        for (display, serial) in upstream.list_packages_with_serial().await? {
            changes.add(display, Serial(serial));
        }
    }
    Ok(Plan {
        incomplete,
        queued_in_batches,
        ..changes.into_plan(cursor)
    })
}

/// How far behind ours the root index's serial may be and still be a stale copy.
const FAR_BEHIND: u64 = 10_000_000;

async fn from_simple_root(
    upstream: &Upstream,
    state: &Mutex<State>,
    since: Option<Serial>,
    only: Option<&[ProjectName]>,
) -> anyhow::Result<Plan> {
    let root = upstream.simple_root().await?;
    let serials =
        root.meta.last_serial.is_some() || root.projects.iter().any(|p| p.last_serial.is_some());
    let listed_max = root
        .projects
        .iter()
        .filter_map(|p| p.last_serial)
        .max()
        .unwrap_or(0);
    let feed_serial = Serial(root.meta.last_serial.unwrap_or(listed_max));
    let mut changes = Changes::default();
    let mut restarted = false;
    if let Some(ours) = since.filter(|&s| feed_serial < s) {
        // A CDN's stale copy is minutes behind; an absurd serial once believed (or upstream
        // restored from a backup) is far beyond anything upstream says.
        if ours.0 - feed_serial.0 <= FAR_BEHIND {
            tracing::warn!(
                "upstream root index is at serial {feed_serial}, behind ours ({ours}); treating \
                 it as stale (no changes)"
            );
            return Ok(changes.into_plan(ours));
        }
        tracing::warn!(
            "the recorded change-feed serial {ours} is far beyond upstream's root index \
             ({feed_serial}): an absurd answer was recorded, or upstream was restored from a \
             backup; starting over from upstream's serial: every project is compared again, \
             files already held are kept"
        );
        restarted = true;
    }
    let mut known = tokio::task::block_in_place(|| lock(state).project_serials())?;
    if restarted {
        // Project serials beyond the feed's are as unbelievable as the feed serial was.
        known.retain(|_, s| *s <= feed_serial);
    }
    let mut listed = HashSet::with_capacity(root.projects.len());
    // An allowlist of names: the rest of a listing of hundreds of thousands is not kept.
    let only: Option<HashSet<&str>> = only.map(|o| o.iter().map(ProjectName::as_str).collect());
    let in_scope = |name: &str| only.as_ref().is_none_or(|o| o.contains(name));
    for p in root.projects {
        let name = ProjectName::new(&p.name);
        if name.as_ref().is_ok_and(|n| !in_scope(n.as_str())) {
            continue;
        }
        if let Ok(name) = name {
            listed.insert(name.as_str().to_owned());
        }
        let Some(serial) = p.last_serial else {
            changes.add_conditional(p.name, feed_serial);
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
    for (name, _) in known
        .into_iter()
        .filter(|(n, _)| !listed.contains(n) && in_scope(n))
    {
        changes.add(name, feed_serial);
        unlisted += 1;
    }
    Ok(Plan {
        unlisted,
        restarted,
        source: Some(match serials {
            true => Source::SimpleRoot,
            false => Source::RootWithoutSerials,
        }),
        ..changes.into_plan(feed_serial)
    })
}
