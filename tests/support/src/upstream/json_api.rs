//! The JSON API, `GET <prefix>/pypi/{name}/json`: a 301 to the display name,
//! `X-PyPI-Last-Serial`, the stale answers of `stale_metadata`, and the personality's serial
//! form, file URLs, digests and validators.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::faults::take;
use super::files::metadata_json;
use super::personality::{Page, answer_page, file_url, serial_value};
use super::server::{Req, bytes_response, encode_path, redirect};
use super::state::{FileRec, Project, Release, State, latest_version, normalize};

pub(super) fn json_api(st: &mut State, req: &Req<'_>, name: &str, q: &str) -> Response {
    let prefix = st.personality.prefix.clone();
    let key = normalize(name);
    let current = st
        .projects
        .get(&key)
        .or_else(|| st.previous.get(&key).and_then(Option::as_ref));
    if let Some(p) = current
        && p.display != name
    {
        return redirect(&format!(
            "{prefix}/pypi/{}/json{q}",
            encode_path(&p.display)
        ));
    }
    let project = if take(&mut st.stale, &key) {
        st.previous.get(&key).cloned().flatten()
    } else {
        st.projects.get(&key).cloned()
    };
    let Some(p) = project.filter(|p| !p.releases.is_empty() && !p.quarantined()) else {
        return bytes_response(
            StatusCode::NOT_FOUND,
            "application/json",
            Bytes::from(r#"{"message": "Not Found"}"#),
        );
    };
    let (body, serial) = document(st, &p);
    let page = Page {
        content_type: "application/json",
        body: Bytes::from(body.to_string()),
        serial,
        key,
    };
    answer_page(st, req, page)
}

/// The JSON API document of `p` as this upstream serves it, and the serial it claims.
pub(super) fn document(st: &State, p: &Project) -> (Value, u64) {
    let prefix = &st.personality.prefix;
    let key = normalize(&p.display);
    let doc_path = format!("{prefix}/pypi/{}/json", p.display);
    let latest = latest_version(p).unwrap_or_default();
    let mut releases = serde_json::Map::new();
    for (v, rel) in &p.releases {
        let mut files: Vec<Value> = rel
            .files
            .values()
            .map(|f| file_json(st, f, rel, &doc_path))
            .collect();
        files.extend(rel.injected.iter().cloned());
        releases.insert(v.clone(), Value::Array(files));
    }
    let urls = releases.get(&latest).cloned().unwrap_or_else(|| json!([]));
    let requires_python = p
        .releases
        .get(&latest)
        .and_then(|r| r.files.values().find_map(|f| f.requires_python.clone()));
    let serial = st.json_serial.get(&key).copied().unwrap_or(p.last_serial);
    let mut body = json!({
        "info": {"name": p.display, "version": latest, "requires_python": requires_python, "summary": ""},
        "releases": releases,
        "urls": urls,
        "vulnerabilities": [],
    });
    if let Some(s) = serial_value(st, serial) {
        body["last_serial"] = s;
    }
    (body, serial)
}

fn file_json(st: &State, f: &FileRec, rel: &Release, doc_path: &str) -> Value {
    let meta = metadata_json(f);
    let mut digests = json!({"md5": f.md5, "sha256": f.sha256});
    if st.personality.json_api_blake2b {
        digests["blake2b_256"] = json!(f.blake2b);
    }
    json!({
        "filename": f.filename,
        "url": file_url(st, f, doc_path),
        "size": f.content.len(),
        "packagetype": f.packagetype,
        "python_version": f.python_version,
        "digests": digests,
        "md5_digest": f.md5,
        "requires_python": f.requires_python,
        "upload_time": f.upload_time,
        "upload_time_iso_8601": f.upload_time_iso,
        "yanked": rel.yanked,
        "yanked_reason": rel.yanked_reason,
        "core-metadata": meta,
        "data_dist_info_metadata": meta,
        "comment_text": "",
        "has_sig": false,
        "downloads": -1,
    })
}
