//! The Simple API, `GET <prefix>/<simple>/` and `GET <prefix>/<simple>/{normalized}/`: PEP 503
//! HTML or PEP 691 JSON depending on `Accept` (or HTML only), in the personality's api-version
//! and serial form, with its file URLs and validators.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::faults::take;
use super::files::metadata_json;
use super::personality::{
    ApiVersion, Page, Pages, RootIndex, Serials, UrlStyle, answer_page, file_url, link,
    serial_value,
};
use super::server::{Req, bytes_response, encode_path, not_found, with_header};
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

/// The `pypi:repository-version` of HTML pages.
fn repository_version(st: &State) -> &'static str {
    if st.personality.api_version == ApiVersion::V1_0 {
        "1.0"
    } else {
        "1.1"
    }
}

pub(super) fn simple_index(st: &State, accept: Option<&str>) -> Response {
    let pers = &st.personality;
    let root_serials = pers.root != RootIndex::JsonWithoutSerials;
    if wants_json(accept) && pers.root != RootIndex::HtmlOnly {
        let serial = |n: u64| serial_value(st, n).filter(|_| root_serials);
        let mut projects: Vec<Value> = Vec::new();
        st.each_listed(|p| {
            if !p.quarantined {
                let mut v = json!({"name": p.display});
                if let Some(s) = serial(p.serial) {
                    v["_last-serial"] = s;
                }
                projects.push(v);
            }
        });
        let mut meta = json!({"api-version": pers.api_version.as_str()});
        if let Some(s) = serial(st.serial) {
            meta["_last-serial"] = s;
        }
        let body = json!({"meta": meta, "projects": projects});
        let r = bytes_response(StatusCode::OK, SIMPLE_JSON, Bytes::from(body.to_string()));
        return serial_header(st, r, st.serial);
    }
    let mut html = format!(
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"{}\">\n    <title>Simple index</title>\n  </head>\n  <body>\n",
        repository_version(st)
    );
    let root = pers.simple_root();
    st.each_listed(|p| {
        let key = p.key;
        html.push_str(&format!(
            "    <a href=\"{}\">{}</a>\n",
            html_escape(&match pers.file_urls {
                UrlStyle::Absolute => encode_path(&format!("{root}{key}/")),
                UrlStyle::Relative => link(st, &format!("{root}{key}/"), &root),
            }),
            html_escape(p.display)
        ));
    });
    html.push_str("  </body>\n</html>\n");
    let content_type = match pers.root {
        RootIndex::HtmlOnly => "text/html",
        _ => html_type(accept),
    };
    let r = bytes_response(StatusCode::OK, content_type, Bytes::from(html));
    serial_header(st, r, st.serial)
}

fn serial_header(st: &State, r: Response, serial: u64) -> Response {
    if !st.personality.serial_headers {
        return r;
    }
    with_header(
        r,
        header::HeaderName::from_static("x-pypi-last-serial"),
        &serial.to_string(),
    )
}

pub(super) fn simple_project(st: &mut State, req: &Req<'_>, key: &str) -> Response {
    let accept = req.accept;
    // `stale_metadata`: the project as it was before its latest change, as a stale CDN copy.
    let previous = match take(&mut st.stale, key) {
        true => Some(st.previous.get(key).cloned().flatten()),
        false => None,
    };
    let p = match &previous {
        Some(Some(p)) => p,
        Some(None) => return not_found(),
        None => match st.projects.get(key) {
            Some(p) => p,
            None => return not_found(),
        },
    };
    let pers = &st.personality;
    let api = pers.api_version;
    let doc_path = format!("{}{key}/", pers.simple_root());
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
    let (content_type, body) = if wants_json(accept) && pers.pages == Pages::Negotiated {
        let files: Vec<Value> = files
            .iter()
            .map(|(f, rel)| {
                let meta = metadata_json(f);
                let mut hashes = json!({"sha256": f.sha256});
                for (name, hex) in &f.extra_hashes {
                    hashes[name] = json!(hex);
                }
                let mut v = json!({
                    "filename": f.filename,
                    "url": file_url(st, f, &doc_path),
                    "hashes": hashes,
                    "requires-python": f.requires_python,
                    "yanked": yanked(rel),
                    "data-dist-info-metadata": meta,
                });
                if api >= ApiVersion::V1_1 {
                    v["size"] = json!(f.content.len());
                    v["upload-time"] = json!(f.upload_time_iso);
                    v["core-metadata"] = meta;
                }
                if api >= ApiVersion::V1_3 {
                    v["provenance"] = json!(f.provenance.as_ref().map(|p| {
                        if p.starts_with('/') {
                            format!("{}{p}", st.base_url)
                        } else {
                            p.clone()
                        }
                    }));
                }
                v
            })
            .collect();
        let mut meta = json!({"api-version": api.as_str()});
        if let Some(s) = serial_value(st, p.last_serial) {
            meta["_last-serial"] = s;
        }
        let mut body = json!({"meta": meta, "name": key, "files": files});
        if api >= ApiVersion::V1_1 {
            body["versions"] = json!(versions);
        }
        if api >= ApiVersion::V1_4
            && let Some((status, reason)) = &p.status
        {
            body["project-status"] = json!({"status": status, "reason": reason});
        }
        (SIMPLE_JSON, body.to_string())
    } else {
        let title = html_escape(&p.display);
        let mut html = format!(
            "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"{}\">\n    <title>Links for {title}</title>\n  </head>\n  <body>\n    <h1>Links for {title}</h1>\n",
            repository_version(st)
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
                attrs.push_str(&format!(" data-dist-info-metadata=\"sha256={h}\""));
                if api >= ApiVersion::V1_1 {
                    attrs.push_str(&format!(" data-core-metadata=\"sha256={h}\""));
                }
            }
            let href = html_escape(&format!(
                "{}#sha256={}",
                file_url(st, f, &doc_path),
                f.sha256
            ));
            html.push_str(&format!(
                "    <a href=\"{href}\"{attrs}>{}</a><br />\n",
                html_escape(&f.filename)
            ));
        }
        html.push_str("  </body>\n</html>\n");
        if pers.serials != Serials::Absent {
            html.push_str(&format!("<!--SERIAL {}-->", p.last_serial));
        }
        let content_type = match pers.pages {
            Pages::HtmlOnly => "text/html",
            Pages::Negotiated => html_type(accept),
        };
        (content_type, html)
    };
    let page = Page {
        content_type,
        body: Bytes::from(body),
        serial: p.last_serial,
        key: key.to_string(),
    };
    answer_page(st, req, page)
}

fn html_escape(s: &str) -> String {
    xml_escape(s).replace('"', "&quot;")
}
