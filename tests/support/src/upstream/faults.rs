//! Fault injection: the knobs a test turns (latency, corrupt, truncated or failed downloads,
//! stale metadata, XML-RPC switched off, hostile JSON entries, canned answers at any path), the
//! seeded random faults of `FaultRates`, and the connection layer that cuts a download short.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::server::{percent_decode, text, with_header};
use super::state::{State, normalize};
use super::{FakeUpstream, RawAnswer};

/// Faults injected at random, each a probability per request (seeded, so runs repeat).
/// 5xx and 429 hit any request; truncation and corruption hit file downloads.
#[derive(Clone, Debug, Default)]
pub struct FaultRates {
    pub seed: u64,
    pub server_error: f64,
    pub too_many: f64,
    /// `Retry-After` seconds sent with injected 429 and 503 answers.
    pub retry_after: Option<u64>,
    pub truncate: f64,
    pub corrupt: f64,
    /// Extra latency, uniform in 0..=max_latency.
    pub max_latency: Duration,
}

/// How many random faults `FaultRates` injected so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub server_error: u32,
    pub too_many: u32,
    pub truncate: u32,
    pub corrupt: u32,
    /// Answered 429 by the rate limit (`rate_limit`), not at random.
    pub rate_limited: u32,
}

/// A token bucket, like a rate-limiting proxy in front of an index: `per_second` tokens a
/// second, at most `per_second` saved up (one second's burst); a request finding the bucket
/// empty is answered 429 with `Retry-After: 1`, and takes no token.
pub(super) struct Bucket {
    per_second: f64,
    tokens: f64,
    at: std::time::Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let earned = now.duration_since(self.at).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.per_second);
        self.at = now;
        let ok = self.tokens >= 1.0;
        if ok {
            self.tokens -= 1.0;
        }
        ok
    }
}

impl State {
    /// splitmix64: uniform in [0, 1), consecutive rolls independent.
    fn roll(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Decrement a fault counter; true if the fault fires now.
pub(super) fn take(map: &mut HashMap<String, u32>, key: &str) -> bool {
    match map.get_mut(key) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

/// This request's random faults (see [`FaultRates`]): an injected 503 or 429 answer, if one
/// fires, and the extra latency; a file download may also get one truncation or corruption of
/// its file armed.
pub(super) fn random_faults(
    st: &mut State,
    method: &Method,
    path: &str,
) -> (Option<Response>, Duration) {
    if st.rate_limit.as_mut().is_some_and(|b| !b.take()) {
        st.injected.rate_limited += 1;
        let r = text(StatusCode::TOO_MANY_REQUESTS, "rate limited");
        return (
            Some(with_header(r, header::RETRY_AFTER, "1")),
            Duration::ZERO,
        );
    }
    let faults = st.faults.clone();
    let (fault, extra_latency) = {
        let r = st.roll();
        let fault = if r < faults.server_error {
            st.injected.server_error += 1;
            Some(StatusCode::SERVICE_UNAVAILABLE)
        } else if r < faults.server_error + faults.too_many {
            st.injected.too_many += 1;
            Some(StatusCode::TOO_MANY_REQUESTS)
        } else {
            None
        };
        (fault, faults.max_latency.mul_f64(st.roll()))
    };
    if fault.is_none() && method == Method::GET && path.starts_with("/packages/") {
        let name = percent_decode(path.rsplit('/').next().unwrap_or_default());
        let r = st.roll();
        if r < faults.truncate {
            st.injected.truncate += 1;
            *st.truncate.entry(name).or_insert(0) += 1;
        } else if r < faults.truncate + faults.corrupt {
            st.injected.corrupt += 1;
            *st.corrupt.entry(name).or_insert(0) += 1;
        }
    }
    let answer = fault.map(|status| {
        let r = text(status, "injected fault");
        match faults.retry_after {
            Some(secs) => with_header(r, header::RETRY_AFTER, &secs.to_string()),
            None => r,
        }
    });
    (answer, extra_latency)
}

impl FakeUpstream {
    /// Inject faults at random from now on (see [`FaultRates`]); `FaultRates::default()` stops.
    pub fn set_fault_rates(&self, rates: FaultRates) {
        let mut st = self.st();
        st.rng = rates.seed;
        st.faults = rates;
    }

    /// The random faults injected so far.
    pub fn faults_injected(&self) -> FaultCounts {
        self.st().injected
    }

    /// Answer 429 (`Retry-After: 1`) to requests beyond `per_second` a second (a token
    /// bucket with one second's burst); `None` lifts the limit.
    pub fn rate_limit(&self, per_second: Option<f64>) {
        self.st().rate_limit = per_second.map(|per_second| Bucket {
            per_second,
            tokens: per_second,
            at: std::time::Instant::now(),
        });
    }

    pub fn set_latency(&self, d: Duration) {
        self.st().latency = d;
    }

    /// `filename` is the last path segment; use `"<file>.metadata"` to target PEP 658 metadata.
    pub fn corrupt_downloads(&self, filename: &str, times: u32) {
        self.st().corrupt.insert(filename.to_string(), times);
    }

    pub fn truncate_downloads(&self, filename: &str, times: u32) {
        self.st().truncate.insert(filename.to_string(), times);
    }

    pub fn fail_downloads(&self, filename: &str, status: u16, times: u32) {
        self.st().fail.insert(filename.to_string(), (status, times));
    }

    /// The next `times` JSON API or project page answers for it serve the project as it was
    /// before its latest change (a stale CDN copy), with that serial.
    pub fn stale_metadata(&self, display_name: &str, times: u32) {
        self.st().stale.insert(normalize(display_name), times);
    }

    pub fn set_xmlrpc_status(&self, status: Option<u16>) {
        self.st().xmlrpc_status = status;
    }

    /// Append a raw file object to the JSON API `releases[version]` (creating project/release if
    /// needed). Journal row `"add {python_version or py3} file {filename or <injected>}"`.
    pub fn inject_file_json(&self, display_name: &str, version: &str, file: Value) -> u64 {
        let mut st = self.st();
        let key = normalize(display_name);
        st.snapshot(&key);
        st.ensure_project(display_name);
        st.ensure_release(&key, version);
        let filename = file
            .get("filename")
            .and_then(Value::as_str)
            .unwrap_or("<injected>")
            .to_string();
        let pyver = file
            .get("python_version")
            .and_then(Value::as_str)
            .unwrap_or("py3")
            .to_string();
        let p = st.projects.get_mut(&key).expect("ensured");
        p.releases
            .get_mut(version)
            .expect("ensured")
            .injected
            .push(file);
        st.journal(&key, Some(version), format!("add {pyver} file {filename}"))
    }

    /// The JSON API claims `serial` (header `X-PyPI-Last-Serial` and `last_serial`) for the
    /// project from now on; `None` goes back to its real serial.
    pub fn claim_json_serial(&self, display_name: &str, serial: Option<u64>) {
        let mut st = self.st();
        let key = normalize(display_name);
        match serial {
            Some(s) => st.json_serial.insert(key, s),
            None => st.json_serial.remove(&key),
        };
    }

    /// `changelog_last_serial` answers `serial` from now on; `None` goes back to the real one.
    pub fn claim_last_serial(&self, serial: Option<i64>) {
        self.st().last_serial = serial;
    }

    /// `changelog_since_serial(n)` answers, from now on (`false`: no longer), a full page
    /// (`set_changelog_page`) of names never seen before, all at serial n + 1: a feed that
    /// never ends.
    pub fn endless_changelog(&self, on: bool) {
        self.st().endless_changelog = on;
    }

    /// Answers to exactly `path` (`/pypi` for XML-RPC) send their body one byte every
    /// `every` (status and headers at once), for ever slower than any sane deadline.
    pub fn trickle(&self, path: &str, every: Duration) {
        self.st().trickle.insert(path.to_owned(), every);
    }

    /// Serve `content` with status 200 for any request to exactly `path` (raw or
    /// percent-decoded), overriding all routes (`/pypi` overrides XML-RPC).
    pub fn serve_raw(&self, path: &str, content: Vec<u8>) {
        self.serve_response(
            path,
            RawAnswer {
                status: 200,
                headers: vec![("content-type".into(), "application/octet-stream".into())],
                body: content,
            },
        );
    }

    /// Answer every request to exactly `path` with `answer`, overriding all routes (redirects,
    /// odd statuses, malformed bodies).
    pub fn serve_response(&self, path: &str, answer: RawAnswer) {
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        self.st().raw.insert(path, answer);
    }

    /// Stop overriding `path` (see `serve_response`): its route answers again.
    pub fn clear_response(&self, path: &str) {
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        self.st().raw.remove(&path);
    }
}

/// `resp` with its body sent one byte every `every`.
pub(super) async fn trickled(resp: Response, every: Duration) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let stream = futures::stream::unfold(0usize, move |i| {
        let bytes = bytes.clone();
        async move {
            if i >= bytes.len() {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok::<_, std::io::Error>(bytes.slice(i..i + 1)), i + 1))
        }
    });
    let mut resp = Response::from_parts(parts, axum::body::Body::from_stream(stream));
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    resp
}

// ---- connection layer: truncated downloads ----
//
// hyper drops whatever it still buffers when a body ends short of its Content-Length, so a
// truncated download cannot be made from a short body. Instead every connection's socket is
// wrapped: the handler arms it with how many body bytes may pass, the wrapper lets the response
// head and that many body bytes through, then fails the write, and hyper closes the connection.
// (HTTP/1.1 only, like every client of this server.)

#[derive(Clone, Copy, Debug)]
enum Cut {
    Off,
    /// Still in the response head; `matched` bytes of "\r\n\r\n" seen so far.
    Head {
        matched: u8,
        allowed: usize,
    },
    Body {
        left: usize,
    },
    Dead,
}

/// Per-connection truncation switch, handed to the handler as `ConnectInfo`.
#[derive(Clone, Debug)]
pub(super) struct ConnCut(Arc<Mutex<Cut>>);

impl ConnCut {
    fn get(&self) -> Cut {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, c: Cut) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = c;
    }

    pub(super) fn arm(&self, allowed: usize) {
        self.set(Cut::Head {
            matched: 0,
            allowed,
        });
    }
}

pub(super) struct CutListener(pub(super) tokio::net::TcpListener);

impl axum::serve::Listener for CutListener {
    type Io = CutIo;
    type Addr = ConnCut;

    async fn accept(&mut self) -> (CutIo, ConnCut) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let cut = ConnCut(Arc::new(Mutex::new(Cut::Off)));
                    return (
                        CutIo {
                            stream,
                            cut: cut.clone(),
                        },
                        cut,
                    );
                }
                // e.g. too many open files: back off, like axum's own listener.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<ConnCut> {
        Ok(ConnCut(Arc::new(Mutex::new(Cut::Off))))
    }
}

impl Connected<axum::serve::IncomingStream<'_, CutListener>> for ConnCut {
    fn connect_info(stream: axum::serve::IncomingStream<'_, CutListener>) -> Self {
        stream.remote_addr().clone()
    }
}

pub(super) struct CutIo {
    stream: tokio::net::TcpStream,
    cut: ConnCut,
}

/// Scan for the end of an HTTP head: (index just past "\r\n\r\n" if found, matcher state).
fn head_end(mut matched: u8, buf: &[u8]) -> (Option<usize>, u8) {
    const PAT: &[u8; 4] = b"\r\n\r\n";
    for (i, &b) in buf.iter().enumerate() {
        if b == PAT[matched as usize] {
            matched += 1;
            if matched == 4 {
                return (Some(i + 1), 4);
            }
        } else {
            matched = u8::from(b == b'\r');
        }
    }
    (None, matched)
}

impl AsyncRead for CutIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CutIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let state = self.cut.get();
        let limit = match state {
            Cut::Off => buf.len(),
            Cut::Head { matched, allowed } => match head_end(matched, buf).0 {
                Some(i) => (i + allowed).min(buf.len()),
                None => buf.len(),
            },
            Cut::Body { left } => left.min(buf.len()),
            Cut::Dead => 0,
        };
        if limit == 0 && !buf.is_empty() {
            self.cut.set(Cut::Dead);
            let e = io::Error::new(io::ErrorKind::ConnectionAborted, "fake upstream: truncated");
            return Poll::Ready(Err(e));
        }
        let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &buf[..limit]))?;
        let next = match state {
            Cut::Head { matched, allowed } => match head_end(matched, &buf[..n]) {
                (Some(i), _) => Cut::Body {
                    left: allowed - (n - i),
                },
                (None, m) => Cut::Head {
                    matched: m,
                    allowed,
                },
            },
            Cut::Body { left } => Cut::Body { left: left - n },
            other => other,
        };
        self.cut.set(match next {
            Cut::Body { left: 0 } => Cut::Dead,
            other => other,
        });
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
