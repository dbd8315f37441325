//! Fetch: a queued project's metadata, at least as new as the serial the feed promised.
//!
//! The JSON API and (with `simple_json`, or when upstream has no JSON API) the project page
//! (PEP 691 JSON, or PEP 503 HTML) are asked together. A project a serial-less feed queued
//! is asked conditionally: its page first, with what it was when last mirrored (`ETag`,
//! `Last-Modified`, digest), and an unchanged page ends there. An answer older
//! than the feed's serial is a stale CDN copy: it is asked again with a cache-busting query,
//! on the upstream's retry policy, `stale_retries` times. The result is validated into a
//! [`ProjectSnapshot`] at the older of the two answers' serials, so what the newer one adds is
//! fetched again next time rather than recorded as mirrored.
//!
//! An answer's serial beyond what the change feed announced (`announced`, the feed serial of
//! this run) is not believed: the project is recorded at the feed's serial, so one absurd
//! `X-PyPI-Last-Serial` (say 2^64 - 1) cannot make the mirror skip its later changes.

use reqwest::Url;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::state::Todo;
use crate::types::{PageValidators, ProjectName, ProjectSnapshot, Serial};
use crate::upstream::json_api::ProjectJson;
use crate::upstream::simple::{PageFile, ProjectPage};
use crate::upstream::snapshot::{self, UrlPolicy};
use crate::upstream::{PageAnswer, ProjectFetch, Upstream, UpstreamError};

/// What upstream has for a project now.
// One at a time per project, moved, never stored in bulk: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Fetched {
    /// No such project (404 from every source asked).
    Gone,
    /// Asked conditionally (a serial-less feed), its page is as mirrored.
    Unchanged,
    /// With `json = true`, also upstream's JSON API document, for the JSON API mirror.
    Found(ProjectSnapshot, Option<serde_json::Value>),
}

/// The answers of one look at upstream.
// One at a time per project, moved, never stored in bulk: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Asked {
    Unchanged,
    Answers {
        /// `None`: not asked (the page was enough).
        json: Option<ProjectFetch>,
        page: Option<(ProjectPage, Option<u64>, Url, PageValidators)>,
    },
}

impl Asked {
    /// The older of the serials the answers carry; `None` when none carries one (no header,
    /// nothing in the body: an index without serials).
    pub fn serial(&self) -> Option<Serial> {
        self.serials().min()
    }

    /// The serial of each answer that carries one.
    fn serials(&self) -> impl Iterator<Item = Serial> {
        let (json, page) = match self {
            Asked::Answers { json, page } => (
                match json {
                    Some(ProjectFetch::Found { serial, .. }) => *serial,
                    Some(ProjectFetch::NotFound) | None => None,
                },
                page.as_ref().and_then(|(_, s, _, _)| *s),
            ),
            Asked::Unchanged => (None, None),
        };
        json.into_iter().chain(page).map(Serial)
    }
}

/// One look at upstream, with as few documents as do:
/// - `simple_json` (the default) and not `json`: the project page alone (PEP 691 JSON, else
///   PEP 503 HTML), which carries everything the index needs. The JSON API is asked too only
///   for what the page lacks: no page at all, a file whose version its name does not tell,
///   a yank without its reason, or (with a cooldown) an upload time.
/// - `json = true`: the JSON API (its document is mirrored), and the page with `simple_json`.
/// - `simple_json = false`: the JSON API alone, and the page only where it has nothing.
///
/// With `known` (a conditional entry), the page is asked first, conditionally, and an
/// unchanged page ends the look there.
pub async fn ask(
    cfg: &Config,
    upstream: &Upstream,
    name: &ProjectName,
    display_name: &str,
    bust: Option<u64>,
    known: Option<&PageValidators>,
) -> Result<Asked, UpstreamError> {
    let page_of = |answer: PageAnswer| match answer {
        PageAnswer::Page {
            page,
            serial,
            url,
            validators,
        } => Some((page, serial, url, validators)),
        PageAnswer::Missing | PageAnswer::Unchanged => None,
    };
    let page_first = known.is_some() || (cfg.simple_json && !cfg.json);
    if page_first {
        let page = match upstream.project_page(name, bust, known).await? {
            PageAnswer::Unchanged => return Ok(Asked::Unchanged),
            answer => page_of(answer),
        };
        // The cooldown needs each file's upload time, which PEP 503 HTML and PEP 691 1.0
        // pages do not give: the JSON API does.
        let timed = cfg.filters.cooldown_applies(name);
        let lacking = page.as_ref().is_none_or(|(p, ..)| {
            p.files
                .iter()
                .any(|f| lacks(name, f) || (timed && f.upload_time.is_none()))
        });
        let json = match lacking || cfg.json || !cfg.simple_json {
            true => {
                // Asked after the page: its share of `max_metadata_memory` is never held while
                // another request of this look waits for the budget.
                let mut json = upstream.project_json(display_name, bust).await?;
                if !cfg.json {
                    json.release_body();
                }
                Some(json)
            }
            false => None,
        };
        return Ok(Asked::Answers { json, page });
    }
    let page = async {
        match cfg.simple_json {
            true => upstream.project_page(name, bust, None).await.map(page_of),
            false => Ok(None),
        }
    };
    let (json, mut page) = match cfg.json {
        // The JSON API body goes on to the JSON API mirror, keeping its share of
        // `max_metadata_memory` until `validate`: it is asked after the page, never while
        // another request of this look may wait for the budget its share is part of (both
        // could wait for ever).
        true => {
            let page = page.await?;
            (upstream.project_json(display_name, bust).await?, page)
        }
        // Nothing more is made of the body: its bytes and share go at once, so the page asked
        // beside it never waits on them.
        false => {
            let json = async {
                let mut json = upstream.project_json(display_name, bust).await?;
                json.release_body();
                Ok(json)
            };
            let (json, page) = tokio::join!(json, page);
            (json?, page?)
        }
    };
    if matches!(json, ProjectFetch::NotFound) && !cfg.simple_json {
        page = page_of(upstream.project_page(name, bust, None).await?);
    }
    Ok(Asked::Answers {
        json: Some(json),
        page,
    })
}

/// Whether the JSON API knows something about a page's file that the page does not tell: its
/// version, where the file name does not say it reliably (legacy installers, `bdist_dumb`
/// archives that read as sdists but name no PEP 440 version), or why it was yanked (a page may say only that it was).
fn lacks(name: &ProjectName, f: &PageFile) -> bool {
    use crate::types::dist::{DistFilename, PackageType};
    let reliable = DistFilename::parse(&f.filename).is_some_and(|d| {
        matches!(
            d.packagetype,
            PackageType::Wheel | PackageType::Sdist | PackageType::Egg
        ) && d
            .version(name)
            .is_some_and(|v| crate::filter::pep440::Version::parse(&v).is_some())
    });
    !reliable || f.yanked == Some(serde_json::Value::Bool(true))
}

/// Validate a look's answers into a snapshot at `serial` (`None`: upstream has neither), and
/// with `json = true` keep the JSON API document.
pub fn validate(
    cfg: &Config,
    policy: &UrlPolicy,
    name: &ProjectName,
    display_name: &str,
    asked: Asked,
    serial: Serial,
) -> anyhow::Result<Fetched> {
    let Asked::Answers { json, page } = asked else {
        return Ok(Fetched::Unchanged);
    };
    let (page, page_url, validators) = match page {
        Some((p, _, url, v)) => (Some(p), Some(url), Some(v)),
        None => (None, None, None),
    };
    // The JSON API body's share of `max_metadata_memory`, kept until the JSON API mirror's
    // document and the snapshot are made of it.
    let mut hold = None;
    let (json, url, raw): (Option<ProjectJson>, _, _) = match json {
        Some(ProjectFetch::Found {
            json,
            url,
            body,
            hold: held,
            ..
        }) => {
            hold = Some(held);
            let raw = match cfg.json {
                true => Some(serde_json::from_slice(&body).map_err(|e| {
                    anyhow::anyhow!("{url}: invalid JSON for the JSON API mirror: {e}")
                })?),
                false => None,
            };
            (Some(json), Some(url), raw)
        }
        Some(ProjectFetch::NotFound) | None => (None, None, None),
    };
    if json.is_none() && page.is_none() {
        return Ok(Fetched::Gone);
    }
    let answers = snapshot::Answers {
        json: json.zip(url.as_ref()),
        page: page.zip(page_url.as_ref()),
    };
    let mut snap = snapshot::snapshot(name, display_name, answers, serial, policy)?;
    snap.validators = validators;
    drop(hold);
    Ok(Fetched::Found(snap, raw))
}

/// Look at a queued project until the answers are at least as new as the serial the feed
/// promised (`known`: the page as last mirrored, for a conditional entry).
pub async fn fetch_fresh(
    cfg: &Config,
    upstream: &Upstream,
    permits: &Semaphore,
    policy: &UrlPolicy,
    todo: &Todo,
    announced: Serial,
    known: Option<&PageValidators>,
) -> anyhow::Result<Fetched> {
    let bound = announced.max(todo.serial);
    let retry = upstream.retry_policy().with_retries(cfg.stale_retries);
    let mut attempt = 0;
    loop {
        let asked = {
            let _permit = permits.acquire().await?;
            let bust = (attempt > 0).then_some(todo.serial.0);
            ask(cfg, upstream, &todo.name, &todo.display_name, bust, known).await?
        };
        // An answer without any serial cannot be told stale: it is taken as current, at the
        // serial the feed promised (a serial-less feed promises 0).
        let stale = asked.serials().find(|&s| s < todo.serial);
        let Some(serial) = stale else {
            let serial = match asked.serial() {
                Some(answered) => believable(&todo.display_name, answered, bound),
                None => todo.serial,
            };
            return validate(cfg, policy, &todo.name, &todo.display_name, asked, serial);
        };
        let Some(wait) = retry.next(attempt, None) else {
            anyhow::bail!(
                "upstream metadata is stale (serial {serial}, expected at least {}) after {} attempts",
                todo.serial,
                attempt + 1
            );
        };
        tracing::debug!(
            "{}: stale metadata (serial {serial} < {}); retrying",
            todo.name,
            todo.serial
        );
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// How far beyond the feed's serial an answer may be before it is worth a warning: a project
/// changed while the run went on is a little beyond, an absurd serial is far beyond.
const FAR_BEYOND: u64 = 10_000_000;

/// The serial to record for an answer at `answered` when the feed announced up to `bound`:
/// never beyond `bound`.
fn believable(display_name: &str, answered: Serial, bound: Serial) -> Serial {
    if answered <= bound {
        return answered;
    }
    if answered.0 - bound.0 > FAR_BEYOND {
        tracing::warn!(
            "{display_name}: upstream answered serial {answered}, far beyond the change feed's {bound}; \
             recorded at {bound}"
        );
    }
    bound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serial_beyond_the_feed_is_recorded_at_the_feed() {
        assert_eq!(believable("demo", Serial(5), Serial(7)), Serial(5));
        assert_eq!(believable("demo", Serial(9), Serial(7)), Serial(7));
        assert_eq!(believable("demo", Serial(u64::MAX), Serial(7)), Serial(7));
    }
}
