//! XML-RPC at `POST /pypi` (also `/RPC2`): `list_packages_with_serial`,
//! `changelog_last_serial` and `changelog_since_serial(n)` (paged), marshalled like Python's
//! xmlrpc.client.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;

use super::server::{bytes_response, status_code, text};
use super::state::State;

enum Xv {
    Int(i64),
    Str(String),
    Nil,
    Array(Vec<Xv>),
    Struct(Vec<(String, Xv)>),
}

/// Marshal like Python's xmlrpc.client.Marshaller.
fn xml_dump(v: &Xv, out: &mut String) {
    match v {
        Xv::Int(i) => out.push_str(&format!("<value><int>{i}</int></value>\n")),
        Xv::Str(s) => out.push_str(&format!(
            "<value><string>{}</string></value>\n",
            xml_escape(s)
        )),
        Xv::Nil => out.push_str("<value><nil/></value>"),
        Xv::Array(items) => {
            out.push_str("<value><array><data>\n");
            items.iter().for_each(|i| xml_dump(i, out));
            out.push_str("</data></array></value>\n");
        }
        Xv::Struct(members) => {
            out.push_str("<value><struct>\n");
            for (k, v) in members {
                out.push_str(&format!("<member>\n<name>{}</name>\n", xml_escape(k)));
                xml_dump(v, out);
                out.push_str("</member>\n");
            }
            out.push_str("</struct></value>\n");
        }
    }
}

fn xml_response(inner: String) -> Response {
    let body = format!("<?xml version='1.0'?>\n<methodResponse>\n{inner}</methodResponse>\n");
    bytes_response(StatusCode::OK, "text/xml", Bytes::from(body))
}

fn xml_ok(v: Xv) -> Response {
    let mut s = String::from("<params>\n<param>\n");
    xml_dump(&v, &mut s);
    s.push_str("</param>\n</params>\n");
    xml_response(s)
}

fn xml_fault(code: i64, msg: &str) -> Response {
    let mut s = String::from("<fault>\n");
    let v = Xv::Struct(vec![
        ("faultCode".into(), Xv::Int(code)),
        ("faultString".into(), Xv::Str(msg.into())),
    ]);
    xml_dump(&v, &mut s);
    s.push_str("</fault>\n");
    xml_response(s)
}

pub(super) fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let len = s[start..].find(close)?;
    Some(&s[start..start + len])
}

pub(super) fn xmlrpc(st: &mut State, body: &[u8]) -> Response {
    if let Some(code) = st.xmlrpc_status {
        return text(status_code(code), "XML-RPC disabled");
    }
    let text = String::from_utf8_lossy(body);
    let Some(method) = between(&text, "<methodName>", "</methodName>").map(str::trim) else {
        return xml_fault(-32700, "parse error. not well formed");
    };
    let params = between(&text, "<params>", "</params>").unwrap_or("");
    let param = ["int", "i4", "i8"]
        .iter()
        .find_map(|t| between(params, &format!("<{t}>"), &format!("</{t}>")))
        .map(|s| s.trim().parse::<i64>());
    let result = match method {
        "list_packages_with_serial" => {
            let mut all = Vec::new();
            st.each_listed(|p| all.push((p.display.to_string(), Xv::Int(p.serial as i64))));
            Xv::Struct(all)
        }
        "changelog_last_serial" => Xv::Int(st.last_serial.unwrap_or(st.serial as i64)),
        "changelog_since_serial" => {
            let since = match param {
                Some(Ok(n)) => n,
                _ => return xml_fault(-32602, "server error; invalid method params"),
            };
            if st.endless_changelog {
                let next = since.saturating_add(1);
                let rows = (0..st.changelog_page)
                    .map(|i| {
                        Xv::Array(vec![
                            Xv::Str(format!("endless-{next}-{i}")),
                            Xv::Str("1.0".into()),
                            Xv::Int(0),
                            Xv::Str("new release".into()),
                            Xv::Int(next),
                        ])
                    })
                    .collect();
                return xml_ok(Xv::Array(rows));
            }
            let generated: Vec<Xv> = st
                .catalog
                .iter()
                .flat_map(|c| c.changelog(since, st.changelog_page))
                .map(|(name, serial)| {
                    Xv::Array(vec![
                        Xv::Str(name),
                        Xv::Str("1.0".into()),
                        Xv::Int(super::state::fake_epoch(serial)),
                        Xv::Str("create".into()),
                        Xv::Int(serial as i64),
                    ])
                })
                .collect();
            let rest = st.changelog_page - generated.len();
            let rows = generated
                .into_iter()
                .chain(
                    st.journal
                        .iter()
                        .filter(|r| r.serial as i64 > since)
                        .take(rest)
                        .map(|r| {
                            Xv::Array(vec![
                                Xv::Str(r.name.clone()),
                                r.version.clone().map(Xv::Str).unwrap_or(Xv::Nil),
                                Xv::Int(r.timestamp),
                                Xv::Str(r.action.clone()),
                                Xv::Int(r.serial as i64),
                            ])
                        }),
                )
                .collect();
            Xv::Array(rows)
        }
        other => {
            return xml_fault(
                -32601,
                &format!("server error; requested method not found: {other}"),
            );
        }
    };
    xml_ok(result)
}

pub(super) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
