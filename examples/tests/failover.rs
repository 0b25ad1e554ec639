//! Issue 5: the us region's S3 server process is killed for real (SIGKILL) while two
//! `quay-server` instances (us, eu) share one PostgreSQL database. Pulls keep working through
//! both instances, a push to the us instance lands in eu, the health endpoints say what is
//! down, and when the us server comes back replication copies the new blobs back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{build_oci_layout, run_with_timeout, sha256_digest, skopeo, OciImage, Server};

const BUCKET: &str = "quay";
const ACCESS: &str = "failover-access";
const SECRET: &str = "failover-secret";
const TIMEOUT_SECS: u64 = 3;

/// An `s3-test-server` process.
struct S3Process {
    child: Child,
    port: u16,
    dir: PathBuf,
}

fn s3_binary() -> PathBuf {
    // Built with quay-storage's `testkit` feature, next to this test's own binaries.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("s3-test-server");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p quay-storage --features testkit --bin s3-test-server` \
         (scripts/test.sh does)",
        bin.display()
    );
    bin
}

impl S3Process {
    fn start(dir: &Path, port: u16) -> S3Process {
        let mut child = Command::new(s3_binary())
            .args(["--port", &port.to_string(), "--dir"])
            .arg(dir)
            .args([
                "--access-key",
                ACCESS,
                "--secret-key",
                SECRET,
                "--bucket",
                BUCKET,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from s3-test-server: {line:?}"));
        S3Process {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    fn kill(&mut self) {
        let _ = Command::new("kill")
            .arg("-9")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    fn holds(&self, digest: &str) -> bool {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let path = self
            .dir
            .join(BUCKET)
            .join("quaydata/sha256")
            .join(&hex[..2])
            .join(hex);
        std::fs::read(path)
            .map(|b| sha256_digest(&b) == digest)
            .unwrap_or(false)
    }
}

impl Drop for S3Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn location_yaml(port: u16) -> String {
    format!(
        "    - GoogleCloudStorage\n    - access_key: {ACCESS}\n      secret_key: {SECRET}\n      \
         bucket_name: {BUCKET}\n      storage_path: /quaydata\n      endpoint_url: http://127.0.0.1:{port}\n"
    )
}

fn push(work: &Path, server: &Server, image: &OciImage, repo: &str) -> Duration {
    let src = format!("oci:{}:{}", image.dir.display(), image.tag);
    let dst = format!("docker://{}/{repo}:{}", server.host(), image.tag);
    let started = Instant::now();
    let out = skopeo(work, &["copy", "--dest-tls-verify=false", &src, &dst]);
    assert!(
        out.status.success(),
        "push failed: {}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        out.status,
        server.log()
    );
    started.elapsed()
}

fn blobs(image: &OciImage) -> Vec<String> {
    let mut v = vec![image.config_digest.clone()];
    v.extend(image.layers.iter().map(|l| l.digest.clone()));
    v
}

fn health(server: &Server, path: &str) -> (u16, serde_json::Value) {
    let resp = server.request("GET", path, &[], None);
    (
        resp.status,
        serde_json::from_slice(&resp.body).unwrap_or_default(),
    )
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn us_storage_killed_for_real() {
    let (rt, db) = common::fresh_postgres();
    let dir = tempfile::tempdir().unwrap();
    let mut us_s3 = S3Process::start(&dir.path().join("s3-us"), 0);
    let eu_s3 = S3Process::start(&dir.path().join("s3-eu"), 0);
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "DB_URI: {}\nDISTRIBUTED_STORAGE_CONFIG:\n  usstorage:\n{}  eustorage:\n{}\
             DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [usstorage, eustorage]\n\
             DISTRIBUTED_STORAGE_PREFERENCE: [usstorage, eustorage]\n\
             FEATURE_STORAGE_REPLICATION: true\nFEATURE_PROXY_STORAGE: true\n\
             QUAY_STORAGE_TIMEOUT_SECS: {TIMEOUT_SECS}\nQUAY_REPLICATION_LEASE_SECS: 5\n\
             QUAY_RECONCILE_INTERVAL_SECS: 2\n",
            db.url,
            location_yaml(us_s3.port),
            location_yaml(eu_s3.port)
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let start = |region: &str| {
        Server::start_with(
            &["--config", cfg, "--health-interval-secs", "1"],
            &[("QUAY_DISTRIBUTED_STORAGE_PREFERENCE", region)],
        )
    };
    let us = start("usstorage eustorage");
    let eu = start("eustorage usstorage");
    let quayctl_wait = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quayctl"));
        cmd.args(["--config", cfg, "status", "--wait", "--timeout", "120"]);
        run_with_timeout(&mut cmd, Duration::from_secs(150))
    };
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();

    // An image replicated to both regions before the outage.
    let before = build_oci_layout(&work.join("before"), "v1", 3);
    push(&work, &us, &before, "geo/before");
    let out = quayctl_wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for d in blobs(&before) {
        assert!(
            us_s3.holds(&d) && eu_s3.holds(&d),
            "{d} not in both regions"
        );
    }

    // The us S3 server dies.
    us_s3.kill();

    // Every pull of a replicated blob succeeds, through both instances.
    let limit = Duration::from_secs(TIMEOUT_SECS + 2);
    let (mut tried, mut ok, mut longest) = (0, 0, Duration::ZERO);
    for round in 0..20 {
        for server in [&us, &eu] {
            for d in blobs(&before) {
                let started = Instant::now();
                let resp = server.request("GET", &format!("/v2/geo/before/blobs/{d}"), &[], None);
                let took = started.elapsed();
                longest = longest.max(took);
                tried += 1;
                if resp.status == 200 && sha256_digest(&resp.body) == d {
                    ok += 1;
                } else {
                    eprintln!("round {round}: GET {d} answered {}", resp.status);
                }
            }
        }
    }
    eprintln!("outage pulls: {ok}/{tried} succeeded, longest {longest:?}");
    assert_eq!(ok, tried, "every pull must succeed during the outage");
    assert!(longest < limit, "a pull took {longest:?}, over {limit:?}");

    // Health: us fails end-to-end naming usstorage; eu reports it down but stays up.
    wait_until(
        "us /health/endtoend to fail",
        Duration::from_secs(20),
        || health(&us, "/health/endtoend").0 == 503,
    );
    let (code, body) = health(&us, "/health/endtoend");
    assert_eq!(code, 503);
    assert_eq!(body["status_code"], 503);
    assert_eq!(
        body["data"]["services"]["storage_usstorage"], false,
        "{body}"
    );
    assert!(body["data"]["services_expanded"]["storage_usstorage"]["message"].is_string());
    let (code, body) = health(&eu, "/health/endtoend");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["data"]["services"]["storage_usstorage"], false,
        "{body}"
    );
    assert_eq!(
        body["data"]["services"]["storage_eustorage"], true,
        "{body}"
    );
    assert_eq!(health(&eu, "/health/instance").0, 200);

    // A push to the us instance succeeds, written to eu.
    let during = build_oci_layout(&work.join("during"), "v2", 2);
    let took = push(&work, &us, &during, "geo/during");
    eprintln!("push during the outage took {took:?}");
    for d in blobs(&during) {
        assert!(eu_s3.holds(&d), "{d} not written to eu");
    }

    // The us server comes back; replication copies the new blobs there.
    let recovered = Instant::now();
    let us_s3 = S3Process::start(&dir.path().join("s3-us"), us_s3.port);
    let out = quayctl_wait();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "full replication {:?} after the us server returned",
        recovered.elapsed()
    );
    for d in blobs(&during) {
        assert!(us_s3.holds(&d), "{d} not copied back to us");
    }
    wait_until(
        "us /health/endtoend to recover",
        Duration::from_secs(20),
        || health(&us, "/health/endtoend").0 == 200,
    );
    drop(us);
    drop(eu);
    let _ = rt.block_on(db.drop_database());
}
