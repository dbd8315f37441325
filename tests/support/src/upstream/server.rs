//! HTTP plumbing: the server thread and its runtime, one handler that records every request
//! and applies random faults and latency, routing to the XML-RPC, JSON API, Simple API and
//! download modules, and the response helpers they share.

use std::future::IntoFuture;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request as HttpRequest, State as AxState};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use tokio::sync::oneshot;

use super::Request;
use super::faults::{self, ConnCut, CutListener};
use super::files::download;
use super::json_api::json_api;
use super::personality::{served_file, xmlrpc_off};
use super::simple::{simple_index, simple_project};
use super::state::{Shared, State, lock, normalize};
use super::xmlrpc::{between, xmlrpc};

/// Serve `listener` on a thread of its own with its own 2-worker tokio runtime, until the
/// returned sender is used or dropped.
pub(super) fn spawn(
    listener: std::net::TcpListener,
    port: u16,
    shared: Shared,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (tx, rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("fake-upstream-{port}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("fake upstream: tokio runtime");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("fake upstream: listener");
                let app = Router::new().fallback(handle).with_state(shared);
                let app = app.into_make_service_with_connect_info::<ConnCut>();
                tokio::select! {
                    r = axum::serve(CutListener(listener), app).into_future() => {
                        if let Err(e) = r {
                            eprintln!("fake upstream: server error: {e}");
                        }
                    }
                    _ = rx => {}
                }
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        })
        .expect("fake upstream: spawn thread");
    (tx, thread)
}

async fn handle(
    AxState(shared): AxState<Shared>,
    ConnectInfo(cut): ConnectInfo<ConnCut>,
    req: HttpRequest,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let headers = req.headers();
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let if_modified_since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let absolute_form = req.uri().authority().is_some();
    let at = std::time::Instant::now();
    let body = if method == Method::POST {
        axum::body::to_bytes(req.into_body(), 64 << 20).await.ok()
    } else {
        Some(Bytes::new())
    };
    let xmlrpc_method = body.as_ref().and_then(|b| {
        let text = String::from_utf8_lossy(b);
        between(&text, "<methodName>", "</methodName>").map(|m| m.trim().to_string())
    });
    let path_of_request = path.clone();
    let (resp, latency, trickle) = {
        let mut st = lock(&shared);
        st.in_flight += 1;
        st.max_in_flight = st.max_in_flight.max(st.in_flight);
        let (fault, extra_latency) = faults::random_faults(&mut st, &method, &path);
        let resp = match (fault, body) {
            (Some(answer), _) => answer,
            (None, Some(body)) => {
                let req = Req {
                    method: &method,
                    path: &path,
                    query: query.as_deref(),
                    accept: accept.as_deref(),
                    range: range.as_deref(),
                    if_none_match: if_none_match.as_deref(),
                    if_modified_since: if_modified_since.as_deref(),
                    body: &body,
                    cut: &cut,
                };
                route(&mut st, &req)
            }
            (None, None) => text(StatusCode::BAD_REQUEST, "bad request body"),
        };
        st.requests.push(Request {
            method: method.to_string(),
            path,
            query,
            accept,
            user_agent,
            range,
            if_none_match,
            if_modified_since,
            absolute_form,
            status: resp.status().as_u16(),
            xmlrpc_method,
            at,
        });
        let trickle = st.trickle.get(&path_of_request).copied();
        (resp, st.latency + extra_latency, trickle)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    lock(&shared).in_flight -= 1;
    match trickle {
        Some(every) => faults::trickled(resp, every).await,
        None => resp,
    }
}

/// What routing needs from a request.
pub(super) struct Req<'a> {
    pub(super) method: &'a Method,
    pub(super) path: &'a str,
    pub(super) query: Option<&'a str>,
    pub(super) accept: Option<&'a str>,
    pub(super) range: Option<&'a str>,
    pub(super) if_none_match: Option<&'a str>,
    pub(super) if_modified_since: Option<&'a str>,
    pub(super) body: &'a [u8],
    pub(super) cut: &'a ConnCut,
}

fn route(st: &mut State, req: &Req<'_>) -> Response {
    let Req {
        method,
        path,
        query,
        accept,
        body,
        ..
    } = *req;
    let is_get = method == Method::GET || method == Method::HEAD;
    let decoded = percent_decode(path);
    if let Some(a) = st.raw.get(path).or_else(|| st.raw.get(&decoded)) {
        let mut r = Response::new(Body::from(a.body.clone()));
        *r.status_mut() = status_code(a.status);
        for (name, value) in &a.headers {
            if let (Ok(n), Ok(v)) = (
                header::HeaderName::from_bytes(name.as_bytes()),
                header::HeaderValue::from_str(value),
            ) {
                r.headers_mut().append(n, v);
            }
        }
        return r;
    }
    // Everything lives under the personality's prefix.
    let prefix = st.personality.prefix.clone();
    let Some(rest) = decoded
        .strip_prefix(prefix.as_str())
        .filter(|r| r.starts_with('/'))
    else {
        return not_found();
    };
    if method == Method::POST && !st.personality.xmlrpc {
        return xmlrpc_off();
    }
    if method == Method::POST && matches!(rest, "/pypi" | "/pypi/" | "/RPC2") {
        return xmlrpc(st, body);
    }
    if !is_get {
        return not_found();
    }
    let q = query.map(|q| format!("?{q}")).unwrap_or_default();
    let simple_root = st.personality.simple_root();
    let simple = &simple_root[prefix.len()..];
    if rest == &simple[..simple.len() - 1] {
        return redirect(&format!("{simple_root}{q}"));
    }
    if rest == simple {
        return simple_index(st, accept);
    }
    if let Some(tail) = rest.strip_prefix(simple) {
        let name = tail.strip_suffix('/').unwrap_or(tail);
        if name.is_empty() || name.contains('/') {
            return not_found();
        }
        let norm = normalize(name);
        if name != norm || !tail.ends_with('/') {
            return redirect(&format!("{simple_root}{}/{q}", encode_path(&norm)));
        }
        st.materialize(&norm);
        return simple_project(st, req, &norm);
    }
    if let Some(name) = rest
        .strip_prefix("/pypi/")
        .and_then(|r| r.strip_suffix("/json"))
    {
        if name.is_empty() || name.contains('/') || !st.personality.json_api {
            return not_found();
        }
        st.materialize(&normalize(name));
        return json_api(st, req, name, &q);
    }
    if let Some(rel) = rest.strip_prefix('/') {
        st.materialize_file(rel);
    }
    if let Some(rel) = served_file(st, rest) {
        return download(st, req, &rel);
    }
    not_found()
}

pub(super) fn text(status: StatusCode, msg: &str) -> Response {
    bytes_response(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(msg.to_string()),
    )
}

pub(super) fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "404 Not Found")
}

pub(super) fn bytes_response(status: StatusCode, content_type: &str, body: Bytes) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub(super) fn with_header(mut r: Response, name: header::HeaderName, value: &str) -> Response {
    if let Ok(v) = header::HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
    r
}

pub(super) fn redirect(location: &str) -> Response {
    with_header(
        text(StatusCode::MOVED_PERMANENTLY, "moved"),
        header::LOCATION,
        location,
    )
}

pub(super) fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Percent-encode a URL path, keeping `/`, unreserved chars and path-safe sub-delims.
pub(super) fn encode_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
