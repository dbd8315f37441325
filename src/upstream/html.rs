//! PEP 503 HTML pages as upstream serves them, read into the types of the PEP 691 JSON form
//! ([`RootIndex`], [`ProjectPage`]), so everything after this reads one shape.
//! <https://packaging.python.org/en/latest/specifications/simple-repository-api/#base-html-api>
//!
//! Only anchors matter: the root's anchor texts are project names; a project page's anchor
//! texts are file names, each `href` the file's URL with `#<hash name>=<hex>`, and the
//! `data-*` attributes of PEP 503, 592, 658/714 and 740 its other fields. A serial comes from
//! the `<!--SERIAL n-->` comment mirrors append. HTML has no size, upload time or versions:
//! the size is learned while downloading, the rest is left out. The reader is a scanner, not
//! a DOM: linear in the page, bounded by the body cap, tolerant of any markup around anchors.

use std::collections::BTreeMap;

use super::simple::{CoreMetadata, Meta, PageFile, ProjectPage, RootIndex, RootProject};

/// The root index (`/simple/`): one project per anchor.
pub fn root(body: &str) -> RootIndex {
    RootIndex {
        meta: meta(body),
        projects: anchors(body)
            .map(|a| RootProject {
                name: a.text.trim().to_owned(),
                last_serial: None,
            })
            .filter(|p| !p.name.is_empty())
            .collect(),
    }
}

/// A project page (`/simple/<name>/`); `name` is the project asked for (HTML does not say).
pub fn project_page(name: &str, body: &str) -> ProjectPage {
    let files = anchors(body)
        .filter_map(|a| {
            let href = a.attr("href")?;
            let (url, fragment) = match href.split_once('#') {
                Some((url, fragment)) => (url.to_owned(), Some(fragment)),
                None => (href.to_owned(), None),
            };
            let hashes: BTreeMap<String, String> = fragment
                .and_then(|f| f.split_once('='))
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
                .into_iter()
                .collect();
            let metadata = |key| {
                a.attr(key).map(|v| match v.split_once('=') {
                    Some((k, h)) => CoreMetadata::Hashes(
                        [(k.to_ascii_lowercase(), h.to_owned())]
                            .into_iter()
                            .collect(),
                    ),
                    None => CoreMetadata::Flag(!v.eq_ignore_ascii_case("false")),
                })
            };
            Some(PageFile {
                filename: a.text.trim().to_owned(),
                url,
                hashes,
                requires_python: a.attr("data-requires-python").map(str::to_owned),
                // PEP 592: the attribute's presence yanks; its value, if any, is the reason.
                yanked: a.attr("data-yanked").map(|r| match r.is_empty() {
                    true => serde_json::Value::Bool(true),
                    false => serde_json::Value::String(r.to_owned()),
                }),
                size: None,
                upload_time: None,
                core_metadata: metadata("data-core-metadata"),
                data_dist_info_metadata: metadata("data-dist-info-metadata"),
                provenance: a.attr("data-provenance").map(str::to_owned),
            })
        })
        .collect();
    ProjectPage {
        meta: meta(body),
        name: name.to_owned(),
        files,
        versions: None,
        project_status: None,
    }
}

/// `<meta name="pypi:repository-version" content="1.1">` and the `<!--SERIAL n-->` comment.
fn meta(body: &str) -> Meta {
    let serial = body.rfind("<!--SERIAL ").and_then(|at| {
        let rest = &body[at + "<!--SERIAL ".len()..];
        rest[..rest.find("-->")?].trim().parse().ok()
    });
    let api_version = tags(body, "meta")
        .find(|t| t.attr("name") == Some("pypi:repository-version"))
        .and_then(|t| t.attr("content").map(str::to_owned))
        .unwrap_or_else(|| "1.0".to_owned());
    Meta {
        api_version,
        last_serial: serial,
    }
}

/// One `<a …>text</a>`, attributes and text entity-decoded.
struct Anchor {
    attrs: Vec<(String, String)>,
    text: String,
}

impl Anchor {
    fn attr(&self, name: &str) -> Option<&str> {
        attr(&self.attrs, name)
    }
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn anchors(body: &str) -> impl Iterator<Item = Anchor> + '_ {
    tags(body, "a").map(move |t| {
        let rest = &body[t.end..];
        let text = match find_ci(rest, "</a") {
            Some(end) => &rest[..end],
            None => rest,
        };
        Anchor {
            attrs: t.attrs,
            text: decode(strip_tags(text).as_ref()),
        }
    })
}

/// A start tag: its attributes and the byte offset just past its `>`.
struct Tag {
    attrs: Vec<(String, String)>,
    end: usize,
}

impl Tag {
    fn attr(&self, name: &str) -> Option<&str> {
        attr(&self.attrs, name)
    }
}

/// Every start tag named `name` (ASCII case-insensitive), in order.
fn tags<'a>(body: &'a str, name: &'a str) -> impl Iterator<Item = Tag> + 'a {
    let mut at = 0;
    std::iter::from_fn(move || {
        loop {
            let open = at + body[at..].find('<')?;
            let after = open + 1;
            at = after;
            let bytes = body.as_bytes();
            let end_of_name = after + name.len();
            let named = body
                .get(after..end_of_name)
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
                && bytes
                    .get(end_of_name)
                    .is_some_and(|&b| b.is_ascii_whitespace() || b == b'>' || b == b'/');
            if !named {
                continue;
            }
            let (attrs, end) = attributes(body, end_of_name);
            at = end;
            return Some(Tag { attrs, end });
        }
    })
}

/// Attributes from `start` to the tag's `>`: `name`, `name=value`, `name='value'`,
/// `name="value"`; names lowercased, values entity-decoded.
fn attributes(body: &str, start: usize) -> (Vec<(String, String)>, usize) {
    let b = body.as_bytes();
    let mut i = start;
    let mut attrs = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            return (attrs, b.len());
        }
        if b[i] == b'>' {
            return (attrs, i + 1);
        }
        if b[i] == b'/' {
            i += 1;
            continue;
        }
        let name_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && !b"=>/".contains(&b[i]) {
            i += 1;
        }
        let name = body[name_start..i].to_ascii_lowercase();
        skip_ws(&mut i);
        let mut value = String::new();
        if i < b.len() && b[i] == b'=' {
            i += 1;
            skip_ws(&mut i);
            let quote = b.get(i).copied().filter(|q| *q == b'"' || *q == b'\'');
            let value_start = i + usize::from(quote.is_some());
            i = value_start;
            while i < b.len()
                && match quote {
                    Some(q) => b[i] != q,
                    None => !b[i].is_ascii_whitespace() && b[i] != b'>',
                }
            {
                i += 1;
            }
            value = decode(&body[value_start..i]);
            if quote.is_some() && i < b.len() {
                i += 1;
            }
        }
        if !name.is_empty() {
            attrs.push((name, value));
        }
    }
}

fn find_ci(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Anchor text without markup inside it (`<a …><b>name</b></a>`).
fn strip_tags(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('<') {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        match c {
            '<' => inside = true,
            '>' => inside = false,
            c if !inside => out.push(c),
            _ => {}
        }
    }
    out.into()
}

/// HTML character references: the named ones pages use, and numeric ones.
fn decode(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity.strip_prefix('#').and_then(|n| {
                let code = match n.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => n.parse().ok(),
                };
                code.and_then(char::from_u32)
            }),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_project_page_as_mirrors_write_it() {
        let e60 = "e".repeat(60);
        let sha = "a".repeat(64);
        let body = format!(
            "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.1\">\
             <title>Links for Demo</title></head><body><h1>Links for Demo</h1>\n\
             <a href=\"../../packages/ab/cd/{e60}/demo-1.0.tar.gz#sha256={sha}\" \
             data-requires-python=\"&gt;=3.8\" data-yanked=\"\">demo-1.0.tar.gz</a><br/>\n\
             <A HREF='/x/+f/abc/def/demo-1.0-py3-none-any.whl#SHA256={sha}' \
             data-dist-info-metadata=\"sha256={sha}\" data-core-metadata=\"sha256={sha}\" \
             data-yanked=\"bad &amp; broken\">demo-1.0-py3-none-any.whl</A>\n\
             <a href=\"demo-0.9.zip\" data-core-metadata=\"true\">demo-0.9.zip</a>\n\
             <a name=\"nohref\">nothing</a>\n\
             </body></html>\n<!--SERIAL 1234-->"
        );
        let page = project_page("demo", &body);
        assert_eq!(page.meta.last_serial, Some(1234));
        assert_eq!(page.meta.api_version, "1.1");
        assert_eq!(page.name, "demo");
        assert_eq!(page.files.len(), 3, "{:?}", page.files);
        let [sdist, wheel, zip] = &page.files[..] else {
            unreachable!()
        };
        assert_eq!(sdist.filename, "demo-1.0.tar.gz");
        assert_eq!(
            sdist.url,
            format!("../../packages/ab/cd/{e60}/demo-1.0.tar.gz")
        );
        assert_eq!(sdist.hashes.get("sha256"), Some(&sha));
        assert_eq!(sdist.requires_python.as_deref(), Some(">=3.8"));
        assert_eq!(sdist.yanked, Some(serde_json::Value::Bool(true)));
        assert!(sdist.size.is_none() && sdist.core_metadata.is_none());
        assert_eq!(wheel.url, "/x/+f/abc/def/demo-1.0-py3-none-any.whl");
        assert_eq!(wheel.hashes.get("sha256"), Some(&sha));
        assert_eq!(
            wheel.yanked,
            Some(serde_json::Value::String("bad & broken".into()))
        );
        assert_eq!(
            wheel.core_metadata.as_ref().and_then(|c| c.sha256()),
            Some(sha.as_str())
        );
        assert!(zip.hashes.is_empty());
        assert!(matches!(zip.core_metadata, Some(CoreMetadata::Flag(true))));
    }

    #[test]
    fn reads_a_root_index_and_tolerates_broken_markup() {
        let body = "<html><body>\n<a href=\"/simple/a/\">A</a>\n<a href=\"b/\"><b>b&#46;c</b></a>\
                    <abbr>not</abbr><a href=\"c/\">c-&#x64;</a><a href=\"unterminated\">tail";
        let root = root(body);
        let names: Vec<&str> = root.projects.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["A", "b.c", "c-d", "tail"]);
        assert_eq!(root.meta.last_serial, None);
        assert_eq!(decode("&bogus; & &#xZZ; &amp"), "&bogus; & &#xZZ; &amp");
    }
}
