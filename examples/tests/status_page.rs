//! Replication stopped, then resumed, as an operator sees it: two regions on one database,
//! the server running with `--no-worker`. `quayctl status` warns that no worker drains the
//! queue and `status --wait` gives up saying so; the status page, rendered by headless
//! Chromium (screenshots saved under the target folder's `test-output/`), shows the missing
//! blob. A `quayctl worker` then copies it, `status` lists the worker by its heartbeat, and
//! the page shows nothing missing.
//!
//! Chromium is Debian's `chromium` package (`scripts/test.sh` installs it); without it the test
//! fails and says how to install it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{run_with_timeout, sha256_digest, Server};

const QUAYCTL: &str = env!("CARGO_BIN_EXE_quayctl");

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The Chromium binary, or a failure that says how to get it.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let path = Path::new(dir).join(name);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!(
        "headless Chromium is needed for this test: install Debian's package \
         (apt-get install chromium), or run ./scripts/test.sh, which does"
    );
}

/// Runs headless Chromium on `url` with `what` (`--dump-dom` or `--screenshot=FILE`) and a
/// fresh profile; returns its standard output.
fn browse(url: &str, what: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = run_with_timeout(
        Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(what)
            .arg(url),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "chromium {what}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Takes a screenshot of `url` into the test-output folder; returns its path.
fn screenshot(url: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-output");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    browse(url, &format!("--screenshot={}", path.display()));
    let png = std::fs::read(&path).unwrap_or_else(|e| panic!("no screenshot {path:?}: {e}"));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{path:?} is not a PNG"
    );
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    assert_eq!(width, 1280, "{path:?}: the window's width");
    println!("status page screenshot: {}", path.display());
    path
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        let p = dir.path();
        std::fs::write(
            &config,
            format!(
                "DB_URI: sqlite://{db}?mode=rwc\n\
                 DISTRIBUTED_STORAGE_CONFIG:\n  \
                 us: [LocalStorage, {{storage_path: {us:?}}}]\n  \
                 eu: [LocalStorage, {{storage_path: {eu:?}}}]\n\
                 DISTRIBUTED_STORAGE_PREFERENCE: [us, eu]\n\
                 DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [us, eu]\n\
                 FEATURE_STORAGE_REPLICATION: true\n\
                 FEATURE_PROXY_STORAGE: true\n",
                db = p.join("metadata.db").display(),
                us = p.join("us"),
                eu = p.join("eu"),
            ),
        )
        .unwrap();
        Setup { dir, config }
    }

    fn quayctl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(QUAYCTL);
        cmd.arg("--config").arg(&self.config).args(args);
        cmd
    }

    fn quayctl_run(&self, args: &[&str]) -> Output {
        run_with_timeout(&mut self.quayctl(args), Duration::from_secs(90))
    }

    fn worker(&self) -> Child {
        let log = std::fs::File::create(self.dir.path().join("worker.log")).unwrap();
        self.quayctl(&["worker"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap()
    }
}

/// The row of `location` in the page's locations table (as Chromium rendered it).
fn row<'a>(dom: &'a str, location: &str) -> &'a str {
    let start = dom
        .find(&format!("data-location=\"{location}\""))
        .unwrap_or_else(|| panic!("no row of {location} in the page:\n{dom}"));
    let rest = &dom[start..];
    &rest[..rest.find("</tr>").unwrap_or(rest.len())]
}

#[test]
fn status_shows_a_missing_blob_while_replication_is_stopped() {
    let setup = Setup::new();
    let config = setup.config.to_str().unwrap().to_owned();
    let server = Server::start_with(
        &["--config", &config, "--no-worker"],
        &[("QUAY_DISTRIBUTED_STORAGE_PREFERENCE", "us eu")],
    );
    let blob = b"a layer that waits for its second copy".to_vec();
    let digest = sha256_digest(&blob);
    let resp = server.request(
        "POST",
        &format!("/v2/demo/app/blobs/uploads/?digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        Some(&blob),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());

    // quayctl: the copy is missing, and nobody is working on it.
    let out = setup.quayctl_run(&["status"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("WARNING: no replication worker seen") && text.contains("in progress"),
        "{text}"
    );
    let out = setup.quayctl_run(&["status", "--wait", "--timeout", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no replication worker seen in the last 30s")
            && stderr.contains("not complete after 2s: 1 copies missing"),
        "{stderr}"
    );

    // The page, as a browser renders it.
    let url = format!("http://{}/status", server.addr());
    let dom = browse(&url, "--dump-dom");
    assert!(
        dom.contains("http-equiv=\"refresh\""),
        "it refreshes itself:\n{dom}"
    );
    let eu = row(&dom, "eu");
    assert!(eu.contains("data-missing=\"1\""), "eu lacks the blob: {eu}");
    assert!(eu.contains(">up<"), "eu is up: {eu}");
    assert!(row(&dom, "us").contains("data-missing=\"0\""), "{dom}");
    assert!(dom.contains("No worker seen in the last 30s"), "{dom}");
    assert!(
        dom.contains("1 copy missing, and no replication worker seen"),
        "{dom}"
    );
    screenshot(&url, "status-replication-stopped.png");
    let access = server.log();
    assert!(
        access.contains(r#"method=GET path="/status" status=200"#),
        "the page's requests are access-logged:\n{access}"
    );

    // A worker comes: it copies the blob and reports by its heartbeat.
    let mut worker = setup.worker();
    let out = setup.quayctl_run(&["status", "--wait", "--timeout", "60"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = setup.quayctl_run(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("(quayctl worker)") && text.contains("replication complete"),
        "{text}"
    );
    assert!(!text.contains("WARNING"), "{text}");
    let dom = browse(&url, "--dump-dom");
    assert!(row(&dom, "eu").contains("data-missing=\"0\""), "{dom}");
    assert!(
        dom.contains("quayctl worker"),
        "the worker is listed:\n{dom}"
    );
    assert!(dom.contains("Replication complete"), "{dom}");
    screenshot(&url, "status-replication-complete.png");
    assert!(
        setup
            .dir
            .path()
            .join("eu")
            .join(format!("sha256/{}", &digest[7..9]))
            .is_dir(),
        "the copy is in eu"
    );
    let _ = worker.kill();
    let _ = worker.wait();
}
