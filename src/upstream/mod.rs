//! The upstream client: every request pymirror sends goes through here.
//!
//! Two HTTP clients share one configuration: one for metadata (gzip allowed, bodies capped and
//! parsed) and one for files (no transparent decompression, so the bytes hashed are the bytes
//! served). Redirects are followed only within the host first asked, a few times at most.
//!
//! What metadata costs in memory is bounded twice: each body by `max_metadata_bytes`, and all
//! bodies in flight together, with what is parsed from them, by `max_metadata_memory`
//! ([`Budget`]): a body takes its share as it grows and keeps it until the public method that
//! asked for it has parsed it (a JSON API answer keeps it in [`ProjectFetch::Found`], whose
//! raw body goes on to the JSON API mirror with `json = true`; see
//! [`ProjectFetch::release_body`]).

pub mod address;
pub mod feed;
pub mod hosts;
pub mod html;
pub mod json_api;
pub mod pace;
pub mod retry;
pub mod simple;
pub mod snapshot;
pub mod xmlrpc;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use futures::StreamExt;
use reqwest::header::{
    ACCEPT, CONTENT_TYPE, DATE, ETAG, HeaderMap, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use reqwest::{Client, RequestBuilder, Response, StatusCode, Url};

use crate::config::Config;
use crate::types::{PageValidators, ProjectName};
use json_api::ProjectJson;
use simple::{CappedError, Caps, ProjectPage, RootIndex};
use snapshot::MetadataError;
use xmlrpc::{ChangelogRow, Value, XmlRpcError};

pub const USER_AGENT: &str = concat!(
    "pymirror/",
    env!("CARGO_PKG_VERSION"),
    " (+",
    env!("CARGO_PKG_REPOSITORY"),
    ")"
);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{url}: {}", describe(.error))]
    Http { url: String, error: reqwest::Error },
    #[error("{url}: upstream answered {status}")]
    Status { url: String, status: StatusCode },
    #[error(
        "{url}: body larger than the {limit}-byte limit (raise max_metadata_bytes if this is real)"
    )]
    TooLarge { url: String, limit: u64 },
    #[error(
        "{url}: no complete answer within metadata_deadline = {secs} s (upstream too slow, or \
         trickling); raise metadata_deadline if this is real"
    )]
    Deadline { url: String, secs: u64 },
    #[error("{url}: invalid JSON: {message}")]
    Json { url: String, message: String },
    /// A cap passed while the answer was parsed (`max_project_files`, `max_project_releases`).
    #[error("{url}: {error}")]
    Metadata { url: String, error: MetadataError },
    #[error("{url}: {error}")]
    XmlRpc { url: String, error: XmlRpcError },
}

impl UpstreamError {
    /// XML-RPC is switched off upstream, or was never there (a static mirror answers a POST
    /// with 403, 404 or 405): the root index is the way to follow it.
    pub fn is_xmlrpc_unavailable(&self) -> bool {
        matches!(self, UpstreamError::Status { status, .. } if matches!(
            *status,
            StatusCode::BAD_REQUEST
                | StatusCode::FORBIDDEN
                | StatusCode::NOT_FOUND
                | StatusCode::METHOD_NOT_ALLOWED
                | StatusCode::GONE
                | StatusCode::NOT_IMPLEMENTED
        ))
    }
}

/// A project's metadata as upstream answered it.
// One per request, moved straight into a snapshot: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum ProjectFetch {
    Found {
        json: ProjectJson,
        /// `X-PyPI-Last-Serial`, else the body's `last_serial`.
        serial: Option<u64>,
        /// Where the answer came from (after redirects): relative file URLs resolve against it.
        url: Url,
        /// The raw body, for the JSON API mirror.
        body: Vec<u8>,
        /// The body's share of `max_metadata_memory`, held while it and what is parsed from
        /// it live: drop it with them, and never keep it while waiting for another metadata
        /// request (that one may wait for this share: see [`Budget`]).
        hold: MetadataHold,
    },
    /// 404: no such project, or one without releases.
    NotFound,
}

impl ProjectFetch {
    /// Give back the raw body and its share of `max_metadata_memory` when nothing more is to
    /// be made of it (no JSON API mirror): a share kept while other requests wait for the
    /// budget could keep them waiting for ever.
    pub fn release_body(&mut self) {
        if let ProjectFetch::Found { body, hold, .. } = self {
            *body = Vec::new();
            *hold = MetadataHold::default();
        }
    }
}

/// A complete answer to a metadata request.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    /// After redirects.
    url: Url,
    body: Vec<u8>,
    /// The body's share of `max_metadata_memory`.
    hold: MetadataHold,
}

impl Answer {
    /// A JSON answer (PEP 691), as opposed to HTML (PEP 503).
    fn is_json(&self) -> bool {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.to_ascii_lowercase().contains("json"))
    }

    fn success(self, asked: &Url) -> Result<Answer, UpstreamError> {
        match self.status.is_success() {
            true => Ok(self),
            false => Err(UpstreamError::Status {
                url: asked.to_string(),
                status: self.status,
            }),
        }
    }
}

/// Why an attempt failed, and whether another may succeed.
enum Retry {
    Status(StatusCode, Option<Duration>),
    Error(UpstreamError),
    Final(reqwest::Error),
}

pub struct Upstream {
    metadata: Client,
    files: Client,
    rate: RateLimit,
    hosts: hosts::HostLimits,
    /// Metadata requests in flight: adaptive, up to `metadata_workers`.
    pace: Arc<pace::Pace>,
    /// Where the JSON API (`/pypi/<name>/json`) and XML-RPC (`/pypi`) live, no trailing `/`.
    api_base: String,
    /// The simple index root, with its trailing `/`.
    simple_root: String,
    retry: retry::Policy,
    max_metadata_bytes: u64,
    metadata_deadline: Duration,
    budget: Budget,
    caps: Caps,
}

impl Upstream {
    pub fn new(cfg: &Config) -> anyhow::Result<Upstream> {
        // A master on an internal address (a test, or a mirror inside the network) may send us
        // to internal hosts; a public master may not, except to the hosts the configuration
        // names (see `address::Trust`).
        let resolver = address::Trust::of(cfg).resolver();
        let build = |gzip: bool| -> anyhow::Result<Client> {
            let mut b = Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(cfg.timeout)
                .read_timeout(cfg.timeout)
                .pool_max_idle_per_host(cfg.workers.max(cfg.metadata_workers))
                .redirect(same_host_redirects())
                .gzip(gzip);
            if let Some(guarded) = &resolver {
                let resolver: Arc<dyn reqwest::dns::Resolve> = Arc::new(guarded.clone());
                b = b.dns_resolver(resolver);
            }
            if let Some(proxy) = &cfg.proxy {
                b = b.proxy(reqwest::Proxy::all(proxy.clone())?);
            }
            Ok(b.build()?)
        };
        Ok(Upstream {
            metadata: build(true)?,
            files: build(false)?,
            rate: RateLimit::new(cfg.metadata_rate),
            hosts: hosts::HostLimits::new(cfg.max_connections_per_host),
            pace: pace::Pace::new(cfg.metadata_workers),
            api_base: api_base(&cfg.master),
            simple_root: simple_root(&cfg.master),
            retry: retry::Policy {
                retries: cfg.retries,
                delay: cfg.retry_delay,
            },
            max_metadata_bytes: cfg.max_metadata_bytes,
            metadata_deadline: cfg.metadata_deadline,
            budget: Budget::new(cfg.max_metadata_memory, cfg.max_metadata_bytes),
            caps: Caps {
                releases: cfg.max_project_releases,
                files: cfg.max_project_files,
            },
        })
    }

    /// The client for distribution files (no transparent decompression).
    pub fn files(&self) -> &Client {
        &self.files
    }

    /// Held for the duration of one request to `url`'s host (`max_connections_per_host`).
    pub async fn host_permit(&self, url: &Url) -> hosts::HostPermit {
        self.hosts.acquire(url).await
    }

    /// The retry policy every request to upstream follows (`retries`, `retry_delay`).
    pub fn retry_policy(&self) -> retry::Policy {
        self.retry
    }

    fn endpoint(&self, path: &str) -> Url {
        Url::parse(&format!("{}{path}", self.api_base)).expect("master is a valid base URL")
    }

    /// `rest` under the simple index root (`""` for the root itself).
    fn simple(&self, rest: &str) -> Url {
        Url::parse(&format!("{}{rest}", self.simple_root)).expect("master is a valid base URL")
    }

    /// One metadata request, whole: status, headers, final URL and body. Connection errors,
    /// timeouts, a body cut short, 5xx and 429 are retried (honouring `Retry-After`); any other
    /// answer, and a body over the cap, is final. All attempts together get
    /// `metadata_deadline`: an answer trickling in just faster than the read timeout cannot
    /// hold a worker (or the change feed) for ever.
    async fn fetch(
        &self,
        url: &Url,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Answer, UpstreamError> {
        tokio::time::timeout(self.metadata_deadline, self.attempts(url, build))
            .await
            .unwrap_or_else(|_| {
                Err(UpstreamError::Deadline {
                    url: url.to_string(),
                    secs: self.metadata_deadline.as_secs(),
                })
            })
    }

    async fn attempts(
        &self,
        url: &Url,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Answer, UpstreamError> {
        let mut attempt = 0;
        loop {
            self.rate.wait().await;
            let result = {
                let _slot = self.pace.acquire().await;
                let host = self.hosts.acquire(url).await;
                let sent = build().send().await;
                if let Ok(resp) = &sent {
                    match resp.status() {
                        StatusCode::TOO_MANY_REQUESTS => host.too_many(),
                        _ => host.accepted(),
                    }
                }
                match sent {
                    Ok(resp) if retry::is_transient(resp.status()) => Err(Retry::Status(
                        resp.status(),
                        retry::retry_after(resp.headers()),
                    )),
                    Ok(resp) => {
                        let (status, headers, final_url) =
                            (resp.status(), resp.headers().clone(), resp.url().clone());
                        match self.body(url, resp).await {
                            Ok((body, hold)) => Ok(Answer {
                                status,
                                headers,
                                url: final_url,
                                body,
                                hold,
                            }),
                            Err(e @ UpstreamError::TooLarge { .. }) => return Err(e),
                            Err(e) => Err(Retry::Error(e)),
                        }
                    }
                    Err(e) if e.is_redirect() || e.is_builder() => Err(Retry::Final(e)),
                    Err(e) => Err(Retry::Error(UpstreamError::Http {
                        url: url.to_string(),
                        error: e,
                    })),
                }
            };
            match &result {
                Ok(_) => self.pace.success(),
                Err(Retry::Status(..) | Retry::Error(_)) => self.pace.overload(),
                Err(Retry::Final(_)) => {}
            }
            let wait = match result {
                Ok(answer) => return Ok(answer),
                Err(Retry::Final(error)) => {
                    return Err(UpstreamError::Http {
                        url: url.to_string(),
                        error,
                    });
                }
                Err(Retry::Status(status, after)) => match self.retry.next(attempt, after) {
                    Some(wait) => {
                        tracing::debug!("{url}: upstream answered {status}; retrying");
                        wait
                    }
                    None => {
                        return Err(UpstreamError::Status {
                            url: url.to_string(),
                            status,
                        });
                    }
                },
                Err(Retry::Error(e)) => match self.retry.next(attempt, None) {
                    Some(wait) => {
                        tracing::debug!("{e}; retrying");
                        wait
                    }
                    None => return Err(e),
                },
            };
            attempt += 1;
            tokio::time::sleep(wait).await;
        }
    }

    /// Read a whole body, refusing it once it passes the configured cap. The buffer grows
    /// by doubling, never beyond the cap, and each growth first takes its share of the
    /// budget (waiting for it when the bodies in flight hold it all).
    async fn body(
        &self,
        url: &Url,
        resp: Response,
    ) -> Result<(Vec<u8>, MetadataHold), UpstreamError> {
        let limit = self.max_metadata_bytes;
        let too_large = || UpstreamError::TooLarge {
            url: url.to_string(),
            limit,
        };
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut hold = MetadataHold::default();
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| UpstreamError::Http {
                url: url.to_string(),
                error,
            })?;
            let want = body.len() as u64 + chunk.len() as u64;
            if want > limit {
                return Err(too_large());
            }
            if want > body.capacity() as u64 {
                let capacity = (body.capacity() as u64 * 2)
                    .max(want)
                    .max(16 << 10)
                    .min(limit);
                self.budget.grow(&mut hold, capacity).await;
                body.reserve_exact(capacity as usize - body.len());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, hold))
    }

    /// An XML-RPC call's answer, with the share of the budget its body took: keep it until
    /// what is made of the answer is made.
    async fn xmlrpc(
        &self,
        method: &str,
        params: &[Value],
    ) -> Result<(Value, MetadataHold), UpstreamError> {
        let url = self.endpoint("/pypi");
        let call = xmlrpc::method_call(method, params);
        let answer = self
            .fetch(&url, || {
                self.metadata
                    .post(url.clone())
                    .header(CONTENT_TYPE, "text/xml")
                    .body(call.clone())
            })
            .await?
            .success(&url)?;
        let text = String::from_utf8_lossy(&answer.body);
        let value = xmlrpc::parse_response(&text).map_err(|error| UpstreamError::XmlRpc {
            url: url.to_string(),
            error,
        })?;
        Ok((value, answer.hold))
    }

    pub async fn changelog_last_serial(&self) -> Result<u64, UpstreamError> {
        match self.xmlrpc("changelog_last_serial", &[]).await?.0 {
            Value::Int(n) if n >= 0 => Ok(n as u64),
            other => Err(UpstreamError::XmlRpc {
                url: self.endpoint("/pypi").to_string(),
                error: XmlRpcError::Malformed(format!("changelog_last_serial returned {other:?}")),
            }),
        }
    }

    pub async fn list_packages_with_serial(&self) -> Result<HashMap<String, u64>, UpstreamError> {
        let (v, _hold) = self.xmlrpc("list_packages_with_serial", &[]).await?;
        xmlrpc::as_name_serials(v).map_err(|error| UpstreamError::XmlRpc {
            url: self.endpoint("/pypi").to_string(),
            error,
        })
    }

    pub async fn changelog_since_serial(
        &self,
        serial: u64,
    ) -> Result<Vec<ChangelogRow>, UpstreamError> {
        let (v, _hold) = self
            .xmlrpc("changelog_since_serial", &[Value::Int(serial as i64)])
            .await?;
        xmlrpc::as_changelog(v).map_err(|error| UpstreamError::XmlRpc {
            url: self.endpoint("/pypi").to_string(),
            error,
        })
    }

    /// The root index, as PEP 691 JSON where upstream offers it, else PEP 503 HTML.
    pub async fn simple_root(&self) -> Result<RootIndex, UpstreamError> {
        let url = self.simple("");
        let answer = self
            .fetch(&url, || {
                self.metadata
                    .get(url.clone())
                    .header(ACCEPT, simple::ACCEPT_ANY)
            })
            .await?
            .success(&url)?;
        match answer.is_json() {
            true => parse_json(&url, &answer.body),
            false => Ok(html::root(&String::from_utf8_lossy(&answer.body))),
        }
    }

    /// One project's JSON document, with `max_project_releases` and `max_project_files`
    /// applied while it is parsed: the entry past a cap ends the parse.
    fn parse_capped<T: serde::de::DeserializeOwned>(
        &self,
        url: &Url,
        project: &str,
        body: &[u8],
    ) -> Result<T, UpstreamError> {
        simple::parse_capped(body, self.caps).map_err(|e| match e {
            CappedError::Exceeded(e) => UpstreamError::Metadata {
                url: url.to_string(),
                error: MetadataError::TooMany {
                    project: ProjectName::new(project)
                        .map_or_else(|_| crate::types::text::shown(project), |n| n.to_string()),
                    count: None,
                    what: e.what,
                    key: e.key,
                    limit: e.limit,
                },
            },
            CappedError::Json(e) => UpstreamError::Json {
                url: url.to_string(),
                message: crate::types::text::shown(&e.to_string()),
            },
        })
    }

    /// `GET /pypi/<name>/json`; `cache_bust` adds a query string so a CDN cannot answer from
    /// a stale cache entry.
    pub async fn project_json(
        &self,
        name: &str,
        cache_bust: Option<u64>,
    ) -> Result<ProjectFetch, UpstreamError> {
        let mut url = self.endpoint(&format!("/pypi/{name}/json"));
        if let Some(n) = cache_bust {
            url.set_query(Some(&format!("serial={n}")));
        }
        let answer = self.fetch(&url, || self.metadata.get(url.clone())).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(ProjectFetch::NotFound);
        }
        let answer = answer.success(&url)?;
        let json: ProjectJson = self.parse_capped(&url, name, &answer.body)?;
        let serial = last_serial(&answer.headers).or(json.last_serial);
        Ok(ProjectFetch::Found {
            json,
            serial,
            url: answer.url,
            body: answer.body,
            hold: answer.hold,
        })
    }

    /// `GET /simple/<name>/`, PEP 691 JSON where upstream offers it, else PEP 503 HTML.
    /// With `known` (what the page was when last mirrored), asked conditionally: a 304, or a
    /// body with the same digest, is [`PageAnswer::Unchanged`].
    pub async fn project_page(
        &self,
        name: &ProjectName,
        cache_bust: Option<u64>,
        known: Option<&PageValidators>,
    ) -> Result<PageAnswer, UpstreamError> {
        let mut url = self.simple(&format!("{name}/"));
        if let Some(n) = cache_bust {
            url.set_query(Some(&format!("serial={n}")));
        }
        let answer = self
            .fetch(&url, || {
                let mut request = self
                    .metadata
                    .get(url.clone())
                    .header(ACCEPT, simple::ACCEPT_ANY);
                if let Some(etag) = known.and_then(|k| k.etag.as_deref()) {
                    request = request.header(IF_NONE_MATCH, etag);
                }
                if let Some(date) = known.and_then(|k| k.last_modified.as_deref()) {
                    request = request.header(IF_MODIFIED_SINCE, date);
                }
                request
            })
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND | StatusCode::NOT_ACCEPTABLE | StatusCode::GONE => {
                return Ok(PageAnswer::Missing);
            }
            StatusCode::NOT_MODIFIED if known.is_some() => return Ok(PageAnswer::Unchanged),
            _ => {}
        }
        let answer = answer.success(&url)?;
        let validators = validators(&answer);
        if known.is_some_and(|k| k.digest == validators.digest) {
            return Ok(PageAnswer::Unchanged);
        }
        let page: ProjectPage = match answer.is_json() {
            true => self.parse_capped(&url, name.as_str(), &answer.body)?,
            false => html::project_page(name.as_str(), &String::from_utf8_lossy(&answer.body)),
        };
        let serial = last_serial(&answer.headers).or(page.meta.last_serial);
        Ok(PageAnswer::Page {
            page,
            serial,
            url: answer.url,
            validators,
        })
    }
}

/// A project page as upstream answered it.
// One per request, moved straight into a snapshot: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum PageAnswer {
    /// No such page (404, 410), or none in a form we read.
    Missing,
    /// As it was when last mirrored (asked conditionally).
    Unchanged,
    Page {
        page: ProjectPage,
        /// `X-PyPI-Last-Serial`, else the body's.
        serial: Option<u64>,
        /// After redirects: relative file URLs resolve against it.
        url: Url,
        validators: PageValidators,
    },
}

/// What to send back next time to ask whether the page changed. A `Last-Modified` less than
/// two seconds before the answer's `Date` is not kept: a change within the same second would
/// keep the same date and be missed.
fn validators(answer: &Answer) -> PageValidators {
    let header = |name| {
        answer
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 200)
            .map(str::to_owned)
    };
    let date = |name| header(name).and_then(|v| httpdate::parse_http_date(&v).ok());
    let settled = match (date(LAST_MODIFIED), date(DATE)) {
        (Some(modified), Some(now)) => now
            .duration_since(modified)
            .is_ok_and(|d| d >= Duration::from_secs(2)),
        (Some(modified), None) => std::time::SystemTime::now()
            .duration_since(modified)
            .is_ok_and(|d| d >= Duration::from_secs(2)),
        _ => false,
    };
    PageValidators {
        etag: header(ETAG),
        last_modified: header(LAST_MODIFIED).filter(|_| settled),
        digest: crate::types::hashing::sha256(&answer.body),
    }
}

/// Where the JSON API and XML-RPC live: the master, or the parent of a master given as the
/// simple index itself (`…/simple/`, devpi's `…/+simple/`).
fn api_base(master: &Url) -> String {
    let base = master.as_str().trim_end_matches('/');
    match base.rsplit_once('/') {
        Some((parent, last)) if last == "simple" || last == "+simple" => parent.to_owned(),
        _ => base.to_owned(),
    }
}

/// The simple index root: the master itself when it names one, else `<master>/simple/`.
fn simple_root(master: &Url) -> String {
    let base = master.as_str().trim_end_matches('/');
    match api_base(master) == base {
        true => format!("{base}/simple/"),
        false => format!("{base}/"),
    }
}

/// reqwest's own message ("error sending request for url (…)") with its causes, which say
/// what happened: connection refused, timed out, a redirect refused and why.
pub fn describe(error: &reqwest::Error) -> String {
    // The URL is already in our own message.
    let full = error.to_string();
    let mut out = match full.split_once(" for url (") {
        Some((head, _)) => head.to_owned(),
        None => full,
    };
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

fn last_serial(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("x-pypi-last-serial")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Deeply nested JSON is refused by serde_json's recursion limit (128 levels).
fn parse_json<T: serde::de::DeserializeOwned>(url: &Url, body: &[u8]) -> Result<T, UpstreamError> {
    serde_json::from_slice(body).map_err(|e| UpstreamError::Json {
        url: url.to_string(),
        // serde quotes the offending value: upstream's text, cut and escaped.
        message: crate::types::text::shown(&e.to_string()),
    })
}

fn same_host_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        // Host and port: another port on the same host is another server.
        let origin = |u: &Url| (u.host_str().map(str::to_owned), u.port_or_known_default());
        let first = attempt.previous().first().map(origin);
        let downgrade = attempt
            .previous()
            .last()
            .is_some_and(|u| u.scheme() == "https")
            && attempt.url().scheme() != "https";
        if attempt.previous().contains(attempt.url()) {
            attempt.error("redirect loop")
        } else if attempt.previous().len() > 5 {
            attempt.error("too many redirects")
        } else if downgrade {
            attempt.error("redirect from https to plain http refused")
        } else if first != Some(origin(attempt.url())) {
            attempt.error("redirect to another host refused")
        } else {
            attempt.follow()
        }
    })
}

/// At most `per_second` metadata requests per second, spread evenly.
struct RateLimit {
    interval: Option<Duration>,
    next: tokio::sync::Mutex<Instant>,
}

impl RateLimit {
    fn new(per_second: f64) -> RateLimit {
        RateLimit {
            interval: (per_second > 0.0).then(|| Duration::from_secs_f64(1.0 / per_second)),
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    async fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// The budget all metadata bodies in flight share (`max_metadata_memory`), in KiB.
///
/// Bodies grow a piece at a time, so a plain semaphore could deadlock: every body holding
/// part of it, each waiting for more. So the budget is split. A shared part,
/// `max_metadata_memory - max_metadata_bytes`, is taken without waiting while it lasts; the
/// rest, a reserve of `max_metadata_bytes`, goes whole to one body at a time, the first that
/// needs more than the shared part has left. That one can always reach `max_metadata_bytes`
/// and finish (the reserve alone is enough), so the others wait for it, never for each other;
/// a body whose shared part frees up meanwhile goes on without the reserve. Small answers
/// wait only when the shared part is used up.
struct Budget {
    shared: Arc<Semaphore>,
    /// One permit: the reserve.
    reserve: Arc<Semaphore>,
}

/// One body's share of the [`Budget`], given back when dropped.
#[derive(Debug, Default)]
pub struct MetadataHold {
    shared: Option<OwnedSemaphorePermit>,
    /// Holding the reserve: may grow to `max_metadata_bytes` without asking.
    reserve: Option<OwnedSemaphorePermit>,
    /// KiB charged, shared and reserve together.
    kib: u64,
}

impl MetadataHold {
    /// Bytes of the budget held.
    pub fn bytes(&self) -> u64 {
        self.kib << 10
    }
}

impl Budget {
    fn new(total: u64, per_body: u64) -> Budget {
        let shared = total.saturating_sub(per_body) >> 10;
        Budget {
            shared: Arc::new(Semaphore::new(
                (shared as usize).min(Semaphore::MAX_PERMITS),
            )),
            reserve: Arc::new(Semaphore::new(1)),
        }
    }

    /// Make `hold` cover `bytes` (never more than `max_metadata_bytes`).
    async fn grow(&self, hold: &mut MetadataHold, bytes: u64) {
        let kib = bytes.div_ceil(1024);
        if kib <= hold.kib || hold.reserve.is_some() {
            hold.kib = hold.kib.max(kib);
            return;
        }
        let need = u32::try_from(kib - hold.kib).unwrap_or(u32::MAX);
        let taken = match self.shared.clone().try_acquire_many_owned(need) {
            Ok(permit) => Ok(permit),
            Err(_) => tokio::select! {
                permit = self.shared.clone().acquire_many_owned(need) => {
                    Ok(permit.expect("the budget is never closed"))
                }
                reserve = self.reserve.clone().acquire_owned() => {
                    Err(reserve.expect("the budget is never closed"))
                }
            },
        };
        match taken {
            Ok(permit) => match &mut hold.shared {
                Some(held) => held.merge(permit),
                None => hold.shared = Some(permit),
            },
            Err(reserve) => hold.reserve = Some(reserve),
        }
        hold.kib = kib;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many bodies growing a piece at a time, never more than the budget together, all done
    /// (no deadlock), with a budget of a single whole body and with one of a few.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn bodies_in_flight_stay_within_the_budget_and_all_finish() {
        use std::sync::atomic::{AtomicU64, Ordering};
        const BODY: u64 = 1 << 20;
        for total in [BODY, 3 * BODY, 3 * BODY + 5000] {
            let budget = Arc::new(Budget::new(total, BODY));
            let (held, peak) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let tasks: Vec<_> = (0..24u64)
                .map(|i| {
                    let (budget, held, peak) = (budget.clone(), held.clone(), peak.clone());
                    tokio::spawn(async move {
                        let mut hold = MetadataHold::default();
                        // Some small, some whole bodies, grown in 16 KiB steps.
                        let size = if i % 3 == 0 { BODY } else { 40_000 * (i + 1) };
                        let mut len = 0;
                        while len < size {
                            len = (len + (16 << 10)).min(size);
                            let before = hold.bytes();
                            budget.grow(&mut hold, len).await;
                            let now = held.fetch_add(hold.bytes() - before, Ordering::SeqCst)
                                + hold.bytes()
                                - before;
                            peak.fetch_max(now, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                        }
                        held.fetch_sub(hold.bytes(), Ordering::SeqCst);
                        drop(hold);
                    })
                })
                .collect();
            tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(tasks))
                .await
                .expect("bodies waiting for each other for ever");
            let peak = peak.load(Ordering::SeqCst);
            assert!(peak <= total, "{peak} bytes held at once, budget {total}");
            assert!(peak >= BODY, "{peak}");
        }
    }

    /// When the shared part is used up, one body takes the reserve and grows to a whole body
    /// without waiting; a third waits until one of them is done.
    #[tokio::test]
    async fn the_reserve_goes_to_one_body_at_a_time() {
        let budget = Budget::new(3 << 20, 2 << 20);
        let (mut a, mut b, mut c) = Default::default();
        budget.grow(&mut a, 1 << 20).await;
        assert!(a.reserve.is_none());
        budget.grow(&mut b, 64 << 10).await;
        assert!(b.reserve.is_some());
        budget.grow(&mut b, 2 << 20).await;
        let waiting = tokio::time::timeout(Duration::from_millis(100), budget.grow(&mut c, 1024));
        assert!(waiting.await.is_err(), "a third body grew past the budget");
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), budget.grow(&mut c, 1 << 20))
            .await
            .expect("the shared part freed up");
        assert!(c.reserve.is_none());
        drop(b);
    }

    #[test]
    fn a_master_may_name_the_index_root_or_the_simple_index_itself() {
        for (master, api, simple) in [
            (
                "https://h.example",
                "https://h.example",
                "https://h.example/simple/",
            ),
            (
                "https://h.example/",
                "https://h.example",
                "https://h.example/simple/",
            ),
            (
                "https://h.example/api/pypi/repo",
                "https://h.example/api/pypi/repo",
                "https://h.example/api/pypi/repo/simple/",
            ),
            (
                "https://h.example/mirror/simple/",
                "https://h.example/mirror",
                "https://h.example/mirror/simple/",
            ),
            (
                "http://h.example:3141/root/pypi/+simple/",
                "http://h.example:3141/root/pypi",
                "http://h.example:3141/root/pypi/+simple/",
            ),
        ] {
            let url = Url::parse(master).unwrap();
            assert_eq!(api_base(&url), api, "{master}");
            assert_eq!(simple_root(&url), simple, "{master}");
        }
    }
}
