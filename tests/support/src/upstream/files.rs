//! Files: their PEP 658 metadata field, and downloads of the file at
//! `packages/aa/bb/<60hex>/<filename>` (and `<file>.metadata`; the personality maps the URL it
//! listed to that path) with `Range: bytes=N-`, and the per-file faults (fail, truncate,
//! corrupt) applied to them.

use axum::body::Bytes;
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::faults::take;
use super::server::{Req, bytes_response, not_found, status_code, text, with_header};
use super::state::{FileRec, State};

pub(super) fn metadata_json(f: &FileRec) -> Value {
    match &f.metadata_sha256 {
        Some(h) => json!({ "sha256": h }),
        None => json!(false),
    }
}

pub(super) fn download(st: &mut State, req: &Req<'_>, rel_path: &str) -> Response {
    let Req {
        method, range, cut, ..
    } = *req;
    let (content, is_metadata) = match st.live_file(rel_path) {
        Some(f) => (f.content.clone(), false),
        None => match rel_path
            .strip_suffix(".metadata")
            .and_then(|p| st.live_file(p))
        {
            Some(f) => match &f.metadata {
                Some(m) => (m.clone(), true),
                None => return not_found(),
            },
            None => return not_found(),
        },
    };
    let name = rel_path.rsplit('/').next().unwrap_or_default().to_string();
    let is_get = method == Method::GET;
    if is_get
        && let Some((status, n)) = st.fail.get_mut(&name)
        && *n > 0
    {
        *n -= 1;
        return text(status_code(*status), "injected failure");
    }
    let truncate = is_get && take(&mut st.truncate, &name);
    let mut content = content;
    if is_get && !content.is_empty() && take(&mut st.corrupt, &name) {
        let mut v = content.to_vec();
        let mid = v.len() / 2;
        v[mid] ^= 0xff;
        content = Bytes::from(v);
    }
    let total = content.len() as u64;
    let (status, body, content_range) = match range.and_then(|r| parse_range(r, total)) {
        Some(Ok((start, end))) => (
            StatusCode::PARTIAL_CONTENT,
            content.slice(start as usize..=end as usize),
            Some(format!("bytes {start}-{end}/{total}")),
        ),
        Some(Err(())) => {
            let r = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            return with_header(r, header::CONTENT_RANGE, &format!("bytes */{total}"));
        }
        None => (StatusCode::OK, content, None),
    };
    if truncate && !body.is_empty() {
        // The response itself is complete; the connection stops after half the body.
        cut.arm(body.len() / 2);
    }
    if is_get && !is_metadata {
        st.bytes_served += if truncate { body.len() / 2 } else { body.len() } as u64;
    }
    let mut r = bytes_response(StatusCode::OK, "application/octet-stream", body);
    *r.status_mut() = status;
    r = with_header(r, header::ACCEPT_RANGES, "bytes");
    if let Some(cr) = content_range {
        r = with_header(r, header::CONTENT_RANGE, &cr);
    }
    r
}

/// `bytes=N-` or `bytes=N-M`. None: ignore the header; Err: unsatisfiable.
fn parse_range(h: &str, total: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = h.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => total.saturating_sub(1),
        e => e.parse::<u64>().ok()?.min(total.saturating_sub(1)),
    };
    if start >= total || end < start {
        return Some(Err(()));
    }
    Some(Ok((start, end)))
}
