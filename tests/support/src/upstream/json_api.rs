//! The JSON API, `GET /pypi/{name}/json`: a 301 to the display name, `X-PyPI-Last-Serial`,
//! and the stale answers of `stale_metadata`.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::faults::take;
use super::files::{file_url, metadata_json};
use super::server::{bytes_response, encode_path, json_response, redirect};
use super::state::{FileRec, Release, State, latest_version, normalize};

pub(super) fn json_api(st: &mut State, name: &str, q: &str) -> Response {
    let key = normalize(name);
    let current = st
        .projects
        .get(&key)
        .or_else(|| st.previous.get(&key).and_then(Option::as_ref));
    if let Some(p) = current
        && p.display != name
    {
        return redirect(&format!("/pypi/{}/json{q}", encode_path(&p.display)));
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
    let base = &st.base_url;
    let latest = latest_version(&p).unwrap_or_default();
    let mut releases = serde_json::Map::new();
    for (v, rel) in &p.releases {
        let mut files: Vec<Value> = rel
            .files
            .values()
            .map(|f| file_json(base, f, rel))
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
    let body = json!({
        "info": {"name": p.display, "version": latest, "requires_python": requires_python, "summary": ""},
        "last_serial": serial,
        "releases": releases,
        "urls": urls,
        "vulnerabilities": [],
    });
    json_response(&body, "application/json", serial)
}

fn file_json(base: &str, f: &FileRec, rel: &Release) -> Value {
    let meta = metadata_json(f);
    json!({
        "filename": f.filename,
        "url": file_url(base, f),
        "size": f.content.len(),
        "packagetype": f.packagetype,
        "python_version": f.python_version,
        "digests": {"md5": f.md5, "sha256": f.sha256, "blake2b_256": f.blake2b},
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
