//! The optional JSON API mirror (`json = true`): upstream's `/pypi/<name>/json` answer, with
//! every file URL pointing into this mirror, and only the releases the filters keep and the
//! files the mirror holds listed.

use std::collections::HashMap;

use serde_json::Value;

use super::Links;
use crate::types::FileRecord;

pub fn rewrite(
    upstream: &Value,
    versions: &[String],
    held: &[&FileRecord],
    links: &Links,
) -> Vec<u8> {
    let held: HashMap<&str, &FileRecord> = held.iter().map(|f| (f.filename.as_str(), *f)).collect();
    let mut doc = upstream.clone();
    let fix = |files: &mut Value| {
        if let Value::Array(list) = files {
            list.retain_mut(|file| {
                let Some(record) = file
                    .get("filename")
                    .and_then(Value::as_str)
                    .and_then(|n| held.get(n))
                else {
                    return false;
                };
                file["url"] = links.file(record).into();
                // Only sidecars the mirror holds are advertised, as in the simple pages.
                let held = match record.core_metadata {
                    Some(h) => serde_json::json!({ "sha256": h.to_hex() }),
                    None => Value::Bool(false),
                };
                for key in ["core-metadata", "data_dist_info_metadata"] {
                    if file.get(key).is_some() {
                        file[key] = held.clone();
                    }
                }
                true
            });
        }
    };
    if let Some(Value::Object(releases)) = doc.get_mut("releases") {
        releases.retain(|version, _| versions.contains(version));
        releases.values_mut().for_each(fix);
    }
    if let Some(urls) = doc.get_mut("urls") {
        fix(urls);
    }
    let mut out = serde_json::to_vec(&doc).expect("JSON values serialize");
    out.push(b'\n');
    out
}
