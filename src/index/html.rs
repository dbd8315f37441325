//! PEP 503 HTML pages, with PEP 592 yanks, PEP 629 repository version, PEP 658/714 metadata,
//! PEP 740 provenance and PEP 792 status.
//! <https://packaging.python.org/en/latest/specifications/simple-repository-api/#html-serialization>
//!
//! Rendering is a pure function of recorded state, so the same state always produces
//! byte-identical pages, and a page can be regenerated and compared byte for byte.

use std::fmt::Write as _;
use std::io::Write;

use super::{API_VERSION, Links, ProjectView};

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

/// The project page, `simple/<name>/index.html` (and `index.v1_html`, the same bytes).
pub fn project_page(view: &ProjectView<'_>, links: &Links) -> Vec<u8> {
    let title = escape(view.display_name);
    let mut out = String::with_capacity(512 + view.files.len() * 300);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"{API_VERSION}\">\n"
    );
    if let Some(status) = view.status {
        let _ = writeln!(
            out,
            "    <meta name=\"pypi:project-status\" content=\"{}\">",
            escape(&status.status)
        );
        if let Some(reason) = &status.reason {
            let _ = writeln!(
                out,
                "    <meta name=\"pypi:project-status-reason\" content=\"{}\">",
                escape(reason)
            );
        }
    }
    let _ = write!(
        out,
        "    <title>Links for {title}</title>\n  </head>\n  <body>\n    <h1>Links for {title}</h1>\n"
    );
    for f in view.files() {
        let _ = write!(
            out,
            "    <a href=\"{}#sha256={}\"",
            escape(&links.file(f)),
            f.sha256
        );
        if let Some(rp) = &f.requires_python {
            let _ = write!(out, " data-requires-python=\"{}\"", escape(rp));
        }
        if let Some(h) = f.core_metadata {
            let _ = write!(
                out,
                " data-dist-info-metadata=\"sha256={h}\" data-core-metadata=\"sha256={h}\""
            );
        }
        if let Some(p) = &f.provenance {
            let _ = write!(out, " data-provenance=\"{}\"", escape(p));
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
    let _ = write!(out, "  </body>\n</html>\n<!--SERIAL {}-->\n", view.serial);
    out.into_bytes()
}

pub fn root_header(w: &mut (impl Write + ?Sized)) -> std::io::Result<()> {
    write!(
        w,
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"{API_VERSION}\">\n    <title>Simple index</title>\n  </head>\n  <body>\n"
    )
}

pub fn root_entry(
    w: &mut (impl Write + ?Sized),
    name: &str,
    display_name: &str,
) -> std::io::Result<()> {
    writeln!(
        w,
        "    <a href=\"{}/\">{}</a>",
        escape(name),
        escape(display_name)
    )
}

pub fn root_footer(w: &mut (impl Write + ?Sized)) -> std::io::Result<()> {
    w.write_all(b"  </body>\n</html>\n")
}
