//! Fetch: a queued project's metadata, at least as new as the serial the feed promised.
//!
//! The JSON API and (with `simple_json`) the PEP 691 page are asked together. An answer older
//! than the feed's serial is a stale CDN copy: it is asked again with a cache-busting query,
//! on the upstream's retry policy, `stale_retries` times. The result is validated into a
//! [`ProjectSnapshot`] at the older of the two answers' serials, so what the newer one adds is
//! fetched again next time rather than recorded as mirrored.
//!
//! An answer's serial beyond what the change feed announced (`announced`, the feed serial of
//! this run) is not believed: the project is recorded at the feed's serial, so one absurd
//! `X-PyPI-Last-Serial` (say 2^64 - 1) cannot make the mirror skip its later changes.

use tokio::sync::Semaphore;

use crate::config::Config;
use crate::state::Todo;
use crate::types::{ProjectSnapshot, Serial};
use crate::upstream::snapshot::{self, UrlPolicy};
use crate::upstream::{ProjectFetch, Upstream};

/// What upstream has for a project now: `None` when it has no such project (404 from every
/// source asked). With `json = true`, also upstream's JSON API document, for the JSON API
/// mirror.
pub type Fetched = Option<(ProjectSnapshot, Option<serde_json::Value>)>;

pub async fn fetch_fresh(
    cfg: &Config,
    upstream: &Upstream,
    permits: &Semaphore,
    policy: &UrlPolicy,
    todo: &Todo,
    announced: Serial,
) -> anyhow::Result<Fetched> {
    let bound = announced.max(todo.serial);
    let retry = upstream.retry_policy().with_retries(cfg.stale_retries);
    let mut attempt = 0;
    loop {
        let (json, page) = {
            let _permit = permits.acquire().await?;
            let bust = (attempt > 0).then_some(todo.serial.0);
            let page = async {
                match cfg.simple_json {
                    true => upstream.project_page(&todo.name, bust).await,
                    false => Ok(None),
                }
            };
            let (json, page) = tokio::join!(upstream.project_json(&todo.display_name, bust), page);
            (json?, page?)
        };
        let json_serial = match &json {
            ProjectFetch::Found { serial, .. } => Some(Serial(serial.unwrap_or(0))),
            ProjectFetch::NotFound => None,
        };
        let page_serial = page.as_ref().map(|(_, s, _)| Serial(s.unwrap_or(0)));
        let stale = [json_serial, page_serial]
            .into_iter()
            .flatten()
            .find(|&s| s < todo.serial);
        let Some(serial) = stale else {
            if json_serial.is_none() && page_serial.is_none() {
                return Ok(None);
            }
            let answered = json_serial
                .into_iter()
                .chain(page_serial)
                .min()
                .unwrap_or_default();
            let serial = believable(&todo.display_name, answered, bound);
            let (page, page_url) = match page {
                Some((p, _, url)) => (Some(p), Some(url)),
                None => (None, None),
            };
            let (json, url, raw) = match json {
                ProjectFetch::Found {
                    json, url, body, ..
                } => {
                    let raw = if cfg.json {
                        Some(serde_json::from_slice(&body).map_err(|e| {
                            anyhow::anyhow!("{url}: invalid JSON for the JSON API mirror: {e}")
                        })?)
                    } else {
                        None
                    };
                    (Some(json), Some(url), raw)
                }
                ProjectFetch::NotFound => (None, None, None),
            };
            let answers = snapshot::Answers {
                json: json.zip(url.as_ref()),
                page: page.zip(page_url.as_ref()),
            };
            return Ok(Some((
                snapshot::snapshot(&todo.name, &todo.display_name, answers, serial, policy)?,
                raw,
            )));
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
