//! PEP 691 JSON pages (`application/vnd.pypi.simple.v1+json`), api-version 1.4: PEP 700
//! `versions`, `size`, `upload-time`; PEP 658/714 `core-metadata`; PEP 740 `provenance`;
//! PEP 792 `project-status`; `_last-serial` so another mirror can follow this one.
//! <https://packaging.python.org/en/latest/specifications/simple-repository-api/#json-serialization>

use std::io::Write;

use serde_json::{Map, Value, json};

use super::{API_VERSION, Links, ProjectView};
use crate::types::Serial;

/// The project page, `simple/<name>/index.v1_json`.
pub fn project_page(view: &ProjectView<'_>, links: &Links) -> Vec<u8> {
    let files: Vec<Value> = view
        .files()
        .map(|f| {
            let mut hashes = Map::new();
            hashes.insert("sha256".into(), f.sha256.to_hex().into());
            for (name, hex) in &f.extra_hashes {
                hashes.insert(name.clone(), hex.clone().into());
            }
            let core_metadata = match f.core_metadata {
                Some(h) => json!({ "sha256": h.to_hex() }),
                None => Value::Bool(false),
            };
            let yanked = match (f.yanked, &f.yanked_reason) {
                (true, Some(reason)) if !reason.is_empty() => Value::String(reason.clone()),
                (yanked, _) => Value::Bool(yanked),
            };
            let mut file = json!({
                "filename": f.filename.as_str(),
                "url": links.file(f),
                "hashes": hashes,
                "requires-python": f.requires_python,
                "size": f.size,
                "yanked": yanked,
                "core-metadata": core_metadata,
                "data-dist-info-metadata": core_metadata,
                "provenance": f.provenance,
            });
            if let Some(t) = &f.upload_time {
                file["upload-time"] = t.clone().into();
            }
            file
        })
        .collect();
    let mut page = json!({
        "meta": { "api-version": API_VERSION, "_last-serial": view.serial },
        "name": view.name.as_str(),
        "versions": view.versions,
        "files": files,
    });
    if let Some(status) = view.status {
        let mut s = json!({ "status": status.status });
        if let Some(reason) = &status.reason {
            s["reason"] = reason.clone().into();
        }
        page["project-status"] = s;
    }
    let mut out = serde_json::to_vec(&page).expect("JSON values serialize");
    out.push(b'\n');
    out
}

pub fn root_header(w: &mut (impl Write + ?Sized), serial: Serial) -> std::io::Result<()> {
    write!(
        w,
        "{{\"meta\":{{\"_last-serial\":{serial},\"api-version\":\"{API_VERSION}\"}},\"projects\":["
    )
}

pub fn root_entry(
    w: &mut (impl Write + ?Sized),
    first: bool,
    display_name: &str,
    serial: Serial,
) -> std::io::Result<()> {
    if !first {
        w.write_all(b",")?;
    }
    serde_json::to_writer(
        &mut *w,
        &json!({ "name": display_name, "_last-serial": serial }),
    )?;
    Ok(())
}

pub fn root_footer(w: &mut (impl Write + ?Sized)) -> std::io::Result<()> {
    w.write_all(b"]}\n")
}
