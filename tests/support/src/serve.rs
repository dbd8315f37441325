//! Real programs for the end-to-end tests: nginx serving a mirror (or any tree of the same
//! layout) with the configuration `pymirror nginx-config` prints, and the pip, uv and curl
//! that talk to it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use crate::mirror::Mirror;

pub struct Tools {
    pub nginx: PathBuf,
    pub curl: PathBuf,
    pub python: PathBuf,
    pub uv: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Tools {
    /// The programs, or a failing test that names what is missing and how to get it. With
    /// PYMIRROR_SKIP_E2E=1 the caller skips, saying so, instead.
    pub fn find() -> Option<Tools> {
        if std::env::var_os("PYMIRROR_SKIP_E2E").is_some_and(|v| v == "1") {
            eprintln!("SKIPPED: end-to-end test (PYMIRROR_SKIP_E2E=1)");
            return None;
        }
        let uv = std::env::var_os("PYMIRROR_UV")
            .map(PathBuf::from)
            .or_else(|| {
                // The workspace root's venv (this crate lives in tests/support).
                Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.e2e-venv/bin/uv"))
                    .filter(|p| p.is_file())
            })
            .or_else(|| on_path("uv"));
        let python = on_path("python3").filter(|p| {
            Command::new(p)
                .args(["-m", "pip", "--version"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        let found = [
            ("nginx", on_path("nginx"), "apt-get install nginx-light"),
            ("curl", on_path("curl"), "apt-get install curl"),
            ("python3 with pip", python, "apt-get install python3-pip"),
            (
                "uv",
                uv,
                "python3 -m venv .e2e-venv && .e2e-venv/bin/pip install uv",
            ),
        ];
        let missing: Vec<String> = found
            .iter()
            .filter(|(_, p, _)| p.is_none())
            .map(|(name, _, how)| format!("{name} ({how})"))
            .collect();
        assert!(
            missing.is_empty(),
            "end-to-end tests need real nginx, curl, pip and uv; missing: {}. \
             `scripts/test` installs them; PYMIRROR_SKIP_E2E=1 skips these tests knowingly",
            missing.join(", ")
        );
        let [nginx, curl, python, uv] = found.map(|(_, p, _)| p.expect("checked"));
        Some(Tools {
            nginx,
            curl,
            python,
            uv,
        })
    }
}

/// nginx on 127.0.0.1 serving `mirror`, stopped on drop.
pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx serving `mirror` with the site `pymirror nginx-config` prints for its config.
    pub fn start(tools: &Tools, mirror: &Mirror) -> Nginx {
        Nginx::serve(
            tools,
            &mirror.bin,
            &mirror.config,
            tempfile::tempdir().unwrap(),
        )
    }

    /// nginx serving `<directory>/web` of a tree pymirror did not write (a bandersnatch
    /// mirror's `directory`, say), with the same site: `bin`'s `pymirror nginx-config` for a
    /// configuration naming that directory.
    pub fn serve_dir(tools: &Tools, bin: &Path, directory: &Path) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("mirror.toml");
        std::fs::write(
            &config,
            format!(
                "[mirror]\ndirectory = \"{}\"\nmaster = \"http://127.0.0.1:9/\"\n",
                directory.display()
            ),
        )
        .unwrap();
        Nginx::serve(tools, bin, &config, dir)
    }

    /// nginx with the site `pymirror nginx-config` prints for the configuration `config`.
    pub fn serve_config(tools: &Tools, bin: &Path, config: &Path) -> Nginx {
        Nginx::serve(tools, bin, config, tempfile::tempdir().unwrap())
    }

    fn serve(tools: &Tools, bin: &Path, config: &Path, dir: tempfile::TempDir) -> Nginx {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let site = Command::new(bin)
            .args(["nginx-config", "--config", config.to_str().unwrap()])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--server-name",
                "localhost",
            ])
            .output()
            .unwrap();
        assert!(
            site.status.success(),
            "{}",
            String::from_utf8_lossy(&site.stderr)
        );
        std::fs::write(dir.path().join("pymirror.conf"), &site.stdout).unwrap();
        let d = dir.path().display();
        // Only the wrapper nginx needs to run unprivileged in a sandbox; the site is shipped.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;\n"
        } else {
            ""
        };
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "{user}daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{}}\nhttp {{\n  access_log {d}/access.log combined;\n  client_body_temp_path {d}/body;\n\
                 proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
                 scgi_temp_path {d}/scgi;\n  include {d}/pymirror.conf;\n}}\n"
            ),
        )
        .unwrap();
        let child = Command::new(&tools.nginx)
            .args([
                "-p",
                &d.to_string(),
                "-c",
                &format!("{d}/nginx.conf"),
                "-e",
                &format!("{d}/error.log"),
            ])
            .spawn()
            .unwrap();
        let nginx = Nginx { child, port, dir };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not start: {}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The distributions installed in `dir` (its `*.dist-info` directories), sorted.
pub fn installed(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".dist-info"))
        .collect();
    names.sort();
    names
}

/// `requirement` installed from `index` by pip into `<work>/pip`, then by uv into
/// `<work>/uv`; each must succeed. What each installed.
pub fn install_with_pip_and_uv(
    tools: &Tools,
    index: &str,
    work: &Path,
    requirement: &str,
) -> [Vec<String>; 2] {
    let (pip, uv) = (work.join("pip"), work.join("uv"));
    let python = tools.python.to_str().unwrap();
    let (pip_dir, uv_dir) = (pip.to_str().unwrap(), uv.to_str().unwrap());
    let by_pip = [
        "-m",
        "pip",
        "install",
        "--index-url",
        index,
        "--target",
        pip_dir,
    ];
    ok(&run(&tools.python, &[&by_pip[..], &[requirement]].concat()));
    let by_uv = [
        "pip",
        "install",
        "--python",
        python,
        "--index-url",
        index,
        "--target",
        uv_dir,
    ];
    ok(&run(&tools.uv, &[&by_uv[..], &[requirement]].concat()));
    [installed(&pip), installed(&uv)]
}

/// Run a program with an environment that keeps pip and uv on our index only.
pub fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_CACHE_DIR", "1")
        .env("PIP_NO_INPUT", "1")
        .env("UV_NO_CONFIG", "1")
        .env("UV_NO_CACHE", "1")
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env_remove("PIP_INDEX_URL")
        .env_remove("PIP_FIND_LINKS")
        .env_remove("PIP_EXTRA_INDEX_URL")
        .env_remove("UV_INDEX_URL")
        .env_remove("UV_EXTRA_INDEX_URL")
        .env_remove("UV_DEFAULT_INDEX")
        .env_remove("UV_INDEX")
        .env("NO_PROXY", "*")
        .output()
        .unwrap()
}

#[track_caller]
pub fn ok(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "command failed:\n{text}");
    text
}
