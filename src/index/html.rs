//! PEP 503 HTML pages (with PEP 592 yanks and PEP 629 repository version).
//! <https://packaging.python.org/en/latest/specifications/simple-repository-api/#html-serialization>
//!
//! Rendering is a pure function of the recorded files, sorted here, so the same state always
//! produces byte-identical pages and `verify` can regenerate a page and compare bytes.

use std::fmt::Write as _;
use std::io::Write;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::metadata::FileRecord;

/// The HTML format carries only 1.0 features (new ones go to JSON only, PEP 833).
const REPOSITORY_VERSION: &str = "1.0";

/// Characters that may not appear raw in a URL path segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// Link from `simple/<project>/` to a file: relative, so the tree can be served from anywhere.
pub fn file_href(file: &FileRecord) -> String {
    let relative = file.path.relative();
    let (dir, name) = relative
        .rsplit_once('/')
        .expect("package paths have a directory");
    format!(
        "../../{dir}/{}#sha256={}",
        utf8_percent_encode(name, SEGMENT),
        file.sha256
    )
}

/// The project page, `simple/<name>/index.html`.
pub fn project_page(display_name: &str, files: &[&FileRecord]) -> Vec<u8> {
    let mut sorted = files.to_vec();
    sorted.sort_by(|a, b| a.filename.cmp(&b.filename));
    let title = escape(display_name);
    let mut out = String::with_capacity(512 + files.len() * 256);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"{REPOSITORY_VERSION}\">\n    <title>Links for {title}</title>\n  </head>\n  <body>\n    <h1>Links for {title}</h1>\n"
    );
    for f in sorted {
        let _ = write!(out, "    <a href=\"{}\"", escape(&file_href(f)));
        if let Some(rp) = &f.requires_python {
            let _ = write!(out, " data-requires-python=\"{}\"", escape(rp));
        }
        if f.yanked {
            let _ = write!(
                out,
                " data-yanked=\"{}\"",
                escape(f.yanked_reason.as_deref().unwrap_or(""))
            );
        }
        let _ = writeln!(out, ">{}</a><br />", escape(f.filename.as_str()));
    }
    out.push_str("  </body>\n</html>\n");
    out.into_bytes()
}

pub fn root_header(w: &mut impl Write) -> std::io::Result<()> {
    write!(
        w,
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"{REPOSITORY_VERSION}\">\n    <title>Simple index</title>\n  </head>\n  <body>\n"
    )
}

pub fn root_entry(w: &mut impl Write, name: &str, display_name: &str) -> std::io::Result<()> {
    writeln!(
        w,
        "    <a href=\"{}/\">{}</a>",
        escape(name),
        escape(display_name)
    )
}

pub fn root_footer(w: &mut impl Write) -> std::io::Result<()> {
    w.write_all(b"  </body>\n</html>\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Filename, PackagePath, Sha256};

    fn record(filename: &str, requires_python: Option<&str>, yanked: Option<&str>) -> FileRecord {
        let name = Filename::new(filename).unwrap();
        let path = PackagePath::from_url_path(
            &format!(
                "/packages/ab/cd/{}/{}",
                "e".repeat(60),
                filename.replace('+', "%2B")
            ),
            &name,
        )
        .unwrap();
        FileRecord {
            version: "1.0".into(),
            filename: name,
            path,
            size: 1,
            sha256: Sha256::from_hex(&"1".repeat(64)).unwrap(),
            upload_time: None,
            requires_python: requires_python.map(str::to_owned),
            yanked: yanked.is_some(),
            yanked_reason: yanked.filter(|r| !r.is_empty()).map(str::to_owned),
            packagetype: None,
            python_version: None,
        }
    }

    #[test]
    fn renders_escaped_attributes_and_sorted_links() {
        let b = record("b-1.0+local.tar.gz", Some(">=3.8,<4"), None);
        let a = record("a-1.0.whl", None, Some("broken \"build\""));
        let page = String::from_utf8(project_page("My<Pkg>", &[&b, &a])).unwrap();
        let e60 = "e".repeat(60);
        let sha = "1".repeat(64);
        assert!(page.contains("<title>Links for My&lt;Pkg&gt;</title>"));
        let a_line = format!(
            "<a href=\"../../packages/ab/cd/{e60}/a-1.0.whl#sha256={sha}\" data-yanked=\"broken &quot;build&quot;\">a-1.0.whl</a><br />"
        );
        let b_line = format!(
            "<a href=\"../../packages/ab/cd/{e60}/b-1.0+local.tar.gz#sha256={sha}\" data-requires-python=\"&gt;=3.8,&lt;4\">b-1.0+local.tar.gz</a><br />"
        );
        let (ia, ib) = (page.find(&a_line).unwrap(), page.find(&b_line).unwrap());
        assert!(ia < ib, "links not sorted:\n{page}");
    }

    #[test]
    fn yanked_without_reason_gets_an_empty_attribute() {
        let page =
            String::from_utf8(project_page("x", &[&record("x-1.whl", None, Some(""))])).unwrap();
        assert!(page.contains(" data-yanked=\"\">x-1.whl</a>"), "{page}");
    }
}
