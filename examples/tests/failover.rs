//! Issue 5: the us region's S3 server process is killed for real (SIGKILL) while two
//! `quay-server` instances (us, eu) share one PostgreSQL database. Pulls keep working through
//! both instances, a push to the us instance lands in eu, the health endpoints say what is
//! down, and when the us server comes back replication copies the new blobs back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::s3::{location_yaml, S3Process};
use common::{build_oci_layout, run_with_timeout, sha256_digest, skopeo, OciImage, Server};

const TIMEOUT_SECS: u64 = 3;

/// The two-region config.yaml: one PostgreSQL database, the us and eu S3 servers, replication
/// on, proxy or redirect mode.
fn write_config(dir: &Path, db_url: &str, us: &S3Process, eu: &S3Process, proxy: bool) -> PathBuf {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "DB_URI: {db_url}\nDISTRIBUTED_STORAGE_CONFIG:\n  usstorage:\n{}  eustorage:\n{}\
             DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [usstorage, eustorage]\n\
             DISTRIBUTED_STORAGE_PREFERENCE: [usstorage, eustorage]\n\
             FEATURE_STORAGE_REPLICATION: true\nFEATURE_PROXY_STORAGE: {proxy}\n\
             QUAY_STORAGE_TIMEOUT_SECS: {TIMEOUT_SECS}\nQUAY_REPLICATION_LEASE_SECS: 5\n\
             QUAY_RECONCILE_INTERVAL_SECS: 2\n",
            location_yaml(us.port),
            location_yaml(eu.port)
        ),
    )
    .unwrap();
    config
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
    let config = write_config(dir.path(), &db.url, &us_s3, &eu_s3, true);
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

fn fetch(server: &Server, repo: &str, digest: &str) -> Result<u16, String> {
    common::fetch_blob(server.addr(), repo, digest)
}

/// Issue 14, redirect mode (Quay's default `FEATURE_PROXY_STORAGE: false`): the us S3 server is
/// killed for real. From the first failed probe on, no GET through the us instance is redirected
/// into it and every GET of a replicated blob succeeds through both instances; once the server
/// is back, redirects return to it only after a server-side probe passed.
#[test]
fn redirects_never_lead_into_a_dead_location() {
    let (rt, db) = common::fresh_postgres();
    let dir = tempfile::tempdir().unwrap();
    let mut us_s3 = S3Process::start(&dir.path().join("s3-us"), 0);
    let eu_s3 = S3Process::start(&dir.path().join("s3-eu"), 0);
    let config = write_config(dir.path(), &db.url, &us_s3, &eu_s3, false);
    let cfg = config.to_str().unwrap();
    let start = |region: &str| {
        Server::start_with(
            &["--config", cfg, "--health-interval-secs", "1"],
            &[("QUAY_DISTRIBUTED_STORAGE_PREFERENCE", region)],
        )
    };
    let us = start("usstorage eustorage");
    let eu = start("eustorage usstorage");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let image = build_oci_layout(&work.join("image"), "v1", 3);
    push(&work, &us, &image, "geo/redirect");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quayctl"));
    cmd.args(["--config", cfg, "status", "--wait", "--timeout", "120"]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(150));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let digests = blobs(&image);
    // Healthy: each instance redirects into its own region.
    for d in &digests {
        assert_eq!(
            fetch(&us, "geo/redirect", d),
            Ok(us_s3.port),
            "us before the kill"
        );
        assert_eq!(
            fetch(&eu, "geo/redirect", d),
            Ok(eu_s3.port),
            "eu before the kill"
        );
    }

    let us_port = us_s3.port;
    us_s3.kill();
    let killed = Instant::now();
    wait_until(
        "the first failed probe of usstorage",
        Duration::from_secs(10),
        || health(&us, "/health/endtoend").1["data"]["services"]["storage_usstorage"] == false,
    );
    eprintln!(
        "first failed probe seen {:?} after the kill",
        killed.elapsed()
    );
    let (mut tried, mut ok, mut into_dead) = (0, 0, 0);
    for _ in 0..25 {
        for server in [&us, &eu] {
            for d in &digests {
                tried += 1;
                match fetch(server, "geo/redirect", d) {
                    Ok(port) if port == us_port => into_dead += 1,
                    Ok(_) => ok += 1,
                    Err(e) => eprintln!("GET {d}: {e}"),
                }
            }
        }
    }
    eprintln!(
        "redirect mode, us storage dead: {ok}/{tried} GETs succeeded, {into_dead} sent into it"
    );
    assert_eq!(
        into_dead, 0,
        "a client was redirected into the dead location"
    );
    assert_eq!(ok, tried, "every GET of a replicated blob must succeed");

    // Back: the next probe passes, and only then do redirects return to us.
    let us_s3 = S3Process::start(&dir.path().join("s3-us"), us_port);
    let back = Instant::now();
    let mut first_redirect = None;
    while back.elapsed() < Duration::from_secs(20) {
        let d = &digests[0];
        match fetch(&us, "geo/redirect", d) {
            Ok(port) if port == us_s3.port => {
                first_redirect = Some(back.elapsed());
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("GET {d} after the server returned: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let first_redirect = first_redirect.expect("redirects never returned to the us location");
    assert_eq!(
        health(&us, "/health/endtoend").1["data"]["services"]["storage_usstorage"],
        true,
        "a redirect into us before a probe passed"
    );
    eprintln!("redirects back into us {first_redirect:?} after it returned");
    drop(us);
    drop(eu);
    let _ = rt.block_on(db.drop_database());
}
