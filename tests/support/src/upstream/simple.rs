//! The Simple API, `GET /simple/` and `GET /simple/{normalized}/`: PEP 503 HTML or PEP 691
//! v1.1 JSON depending on `Accept`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::files::{file_url, metadata_json};
use super::server::{bytes_response, encode_path, json_response, not_found, with_header};
use super::state::{FileRec, Release, State, version_key};
use super::xmlrpc::xml_escape;

fn wants_json(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.contains("application/vnd.pypi.simple.v1+json")
            || a.contains("application/vnd.pypi.simple.latest+json")
    })
}

fn html_type(accept: Option<&str>) -> &'static str {
    if accept.is_some_and(|a| a.contains("application/vnd.pypi.simple.v1+html")) {
        "application/vnd.pypi.simple.v1+html"
    } else {
        "text/html; charset=utf-8"
    }
}

const SIMPLE_JSON: &str = "application/vnd.pypi.simple.v1+json";

pub(super) fn simple_index(st: &State, accept: Option<&str>) -> Response {
    if wants_json(accept) {
        let projects: Vec<Value> = st
            .projects
            .values()
            .filter(|p| !p.quarantined())
            .map(|p| json!({"name": p.display, "_last-serial": p.last_serial}))
            .collect();
        let body = json!({"meta": {"api-version": "1.4", "_last-serial": st.serial}, "projects": projects});
        return json_response(&body, SIMPLE_JSON, st.serial);
    }
    let mut html = String::from(
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"1.1\">\n    <title>Simple index</title>\n  </head>\n  <body>\n",
    );
    for (key, p) in &st.projects {
        html.push_str(&format!(
            "    <a href=\"/simple/{}/\">{}</a>\n",
            html_escape(&encode_path(key)),
            html_escape(&p.display)
        ));
    }
    html.push_str("  </body>\n</html>\n");
    let r = bytes_response(StatusCode::OK, html_type(accept), Bytes::from(html));
    with_header(
        r,
        header::HeaderName::from_static("x-pypi-last-serial"),
        &st.serial.to_string(),
    )
}

pub(super) fn simple_project(st: &State, key: &str, accept: Option<&str>) -> Response {
    let Some(p) = st.projects.get(key) else {
        return not_found();
    };
    let mut versions: Vec<&String> = p.releases.keys().collect();
    versions.sort_by_key(|v| version_key(v));
    let files: Vec<(&Arc<FileRec>, &Release)> = versions
        .iter()
        .flat_map(|v| {
            let rel = &p.releases[*v];
            rel.files.values().map(move |f| (f, rel))
        })
        .filter(|_| !p.quarantined())
        .collect();
    let yanked = |rel: &Release| -> Value {
        match (&rel.yanked, &rel.yanked_reason) {
            (true, Some(r)) if !r.is_empty() => json!(r),
            (y, _) => json!(y),
        }
    };
    if wants_json(accept) {
        let files: Vec<Value> = files
            .iter()
            .map(|(f, rel)| {
                let meta = metadata_json(f);
                let mut hashes = json!({"sha256": f.sha256});
                for (name, hex) in &f.extra_hashes {
                    hashes[name] = json!(hex);
                }
                let provenance = f.provenance.as_ref().map(|p| {
                    if p.starts_with('/') {
                        format!("{}{p}", st.base_url)
                    } else {
                        p.clone()
                    }
                });
                json!({
                    "filename": f.filename,
                    "url": file_url(&st.base_url, f),
                    "hashes": hashes,
                    "provenance": provenance,
                    "requires-python": f.requires_python,
                    "yanked": yanked(rel),
                    "size": f.content.len(),
                    "upload-time": f.upload_time_iso,
                    "core-metadata": meta,
                    "data-dist-info-metadata": meta,
                })
            })
            .collect();
        let mut body = json!({
            "meta": {"api-version": "1.4", "_last-serial": p.last_serial},
            "name": key,
            "files": files,
            "versions": versions,
        });
        if let Some((status, reason)) = &p.status {
            body["project-status"] = json!({"status": status, "reason": reason});
        }
        return json_response(&body, SIMPLE_JSON, p.last_serial);
    }
    let title = html_escape(&p.display);
    let mut html = format!(
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"1.1\">\n    <title>Links for {title}</title>\n  </head>\n  <body>\n    <h1>Links for {title}</h1>\n"
    );
    for (f, rel) in &files {
        let mut attrs = String::new();
        if let Some(rp) = &f.requires_python {
            attrs.push_str(&format!(" data-requires-python=\"{}\"", html_escape(rp)));
        }
        if rel.yanked {
            attrs.push_str(&format!(
                " data-yanked=\"{}\"",
                html_escape(rel.yanked_reason.as_deref().unwrap_or(""))
            ));
        }
        if let Some(h) = &f.metadata_sha256 {
            attrs.push_str(&format!(
                " data-dist-info-metadata=\"sha256={h}\" data-core-metadata=\"sha256={h}\""
            ));
        }
        let href = html_escape(&format!(
            "{}#sha256={}",
            file_url(&st.base_url, f),
            f.sha256
        ));
        html.push_str(&format!(
            "    <a href=\"{href}\"{attrs}>{}</a><br />\n",
            html_escape(&f.filename)
        ));
    }
    html.push_str(&format!(
        "  </body>\n</html>\n<!--SERIAL {}-->",
        p.last_serial
    ));
    let r = bytes_response(StatusCode::OK, html_type(accept), Bytes::from(html));
    with_header(
        r,
        header::HeaderName::from_static("x-pypi-last-serial"),
        &p.last_serial.to_string(),
    )
}

fn html_escape(s: &str) -> String {
    xml_escape(s).replace('"', "&quot;")
}
