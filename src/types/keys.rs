//! Where everything lives in the served tree: the one owner of page names and keys, used by
//! the index writer that puts pages there, the state that trashes them, and verify that checks
//! them. Keys are relative to the tree's root (`web/` on a filesystem); a key ending in `/` is
//! a directory.

use super::ProjectName;

/// The simple index's page files, in every directory that has pages (the root and each
/// project's). `index.html` and `index.v1_html` hold the same PEP 503 page: the first for
/// clients that ask for nothing in particular, the second for those that ask for
/// `application/vnd.pypi.simple.v1+html`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Html,
    V1Html,
    V1Json,
}

impl Page {
    pub fn file_name(self) -> &'static str {
        match self {
            Page::Html => "index.html",
            Page::V1Html => "index.v1_html",
            Page::V1Json => "index.v1_json",
        }
    }

    pub fn is_json(self) -> bool {
        self == Page::V1Json
    }
}

/// The directory of the simple index.
pub const SIMPLE: &str = "simple/";

/// A root page: `simple/index.html`, …
pub fn root_page(page: Page) -> String {
    format!("{SIMPLE}{}", page.file_name())
}

/// What changed in the list of projects since the root pages were written, and so which of
/// them must be written again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootChange {
    /// A project came, went or changed its display name: every root page.
    Names,
    /// Only projects' serials: the PEP 691 JSON root alone, since the HTML root lists no
    /// serial. (A full mirror's root pages are tens of MB each, rewritten by every sync that
    /// changed anything.)
    Serials,
}

/// A project's page directory: `simple/<name>/`.
pub fn project_dir(name: &ProjectName) -> String {
    format!("{SIMPLE}{name}/")
}

/// One of a project's pages: `simple/<name>/index.html`, …
pub fn project_page(name: &ProjectName, page: Page) -> String {
    format!("{SIMPLE}{name}/{}", page.file_name())
}

/// The trees of the optional JSON API mirror, each with the depth of its documents below it:
/// `json/<name>` and `pypi/<name>/json`.
pub const JSON_API_TREES: [&str; 2] = ["json/", "pypi/"];

/// The JSON API mirror's documents of a project, `json/<name>` first, each with the relative
/// path from it back up to the tree's root (for links).
pub fn json_api_docs(name: &ProjectName) -> [(String, &'static str); 2] {
    [
        (format!("json/{name}"), "../"),
        (format!("pypi/{name}/json"), "../../"),
    ]
}

/// What is removed with a project: its page directory and its JSON API documents (the
/// `pypi/<name>/` directory with its one document).
pub fn project_keys(name: &ProjectName) -> [String; 3] {
    [
        project_dir(name),
        format!("json/{name}"),
        format!("pypi/{name}/"),
    ]
}

/// The project whose key (one of [`project_keys`]) this is, if it is one: the inverse that
/// lets a deletion queued for a removed project be dropped when the project came back.
pub fn project_of_key(key: &str) -> Option<&str> {
    key.strip_prefix(SIMPLE)
        .and_then(|rest| rest.strip_suffix('/'))
        .or_else(|| key.strip_prefix("pypi/")?.strip_suffix('/'))
        .or_else(|| key.strip_prefix("json/"))
        .filter(|name| !name.is_empty() && !name.contains('/'))
}

/// The `Content-Type` an object at `key` is served with (set on upload to a bucket; the
/// nginx configuration for a local tree says the same by file name).
pub fn content_type(key: &str) -> &'static str {
    let name = key.rsplit('/').next().unwrap_or(key);
    if key.starts_with("json/") || (key.starts_with("pypi/") && name == "json") {
        return "application/json";
    }
    match name {
        "index.v1_json" => "application/vnd.pypi.simple.v1+json",
        "index.v1_html" => "application/vnd.pypi.simple.v1+html",
        _ if name.ends_with(".html") => "text/html",
        _ if name.ends_with(".metadata") => "text/plain",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_key_names_its_project_and_nothing_else_does() {
        let name = ProjectName::new("Demo.Pkg").unwrap();
        for key in project_keys(&name) {
            assert_eq!(project_of_key(&key), Some(name.as_str()), "{key}");
        }
        for key in [
            root_page(Page::Html),
            project_page(&name, Page::V1Json),
            "packages/aa/bb/cc/demo.tar.gz".to_string(),
            "pypi/demo/json".to_string(),
            "simple//".to_string(),
        ] {
            assert_eq!(project_of_key(&key), None, "{key}");
        }
    }

    #[test]
    fn each_page_kind_has_its_content_type() {
        for (key, want) in [
            ("simple/index.html", "text/html"),
            ("simple/six/index.html", "text/html"),
            (
                "simple/six/index.v1_html",
                "application/vnd.pypi.simple.v1+html",
            ),
            (
                "simple/six/index.v1_json",
                "application/vnd.pypi.simple.v1+json",
            ),
            ("json/six", "application/json"),
            ("pypi/six/json", "application/json"),
            (
                "packages/aa/bb/cc/six-1.0-py3-none-any.whl",
                "application/octet-stream",
            ),
            (
                "packages/aa/bb/cc/six-1.0-py3-none-any.whl.metadata",
                "text/plain",
            ),
        ] {
            assert_eq!(content_type(key), want, "{key}");
        }
    }
}
