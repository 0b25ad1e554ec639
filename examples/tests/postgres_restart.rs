//! Issue 5: PostgreSQL is stopped and started again during a stream of pushes. The test runs
//! its own PostgreSQL cluster (initdb in a temp dir, its own port) so that stopping it does
//! not disturb other tests. While it is down, pushes fail cleanly (5xx with an OCI error
//! body); after, they succeed; no acknowledged push is lost and no blob is half recorded.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{sha256_digest, Server};

/// A private PostgreSQL cluster, run as the `postgres` user (the server refuses root).
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

fn pg_bin() -> PathBuf {
    let base = Path::new("/usr/lib/postgresql");
    let version = std::fs::read_dir(base)
        .ok()
        .and_then(|rd| rd.flatten().map(|e| e.path()).max())
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries not found under {}",
                base.display()
            )
        });
    version.join("bin")
}

fn as_postgres(cmd: &str, args: &[&str]) -> std::process::Output {
    let mut c = if unsafe_is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", cmd]);
        c
    } else {
        Command::new(cmd)
    };
    c.args(args).output().unwrap()
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("quay-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        if unsafe_is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status();
        }
        let bin = pg_bin();
        let out = as_postgres(
            bin.join("initdb").to_str().unwrap(),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = Cluster {
            bin,
            data,
            port,
            _dir: dir,
        };
        c.start();
        c
    }

    fn ctl(&self, args: &[&str]) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.display()
        );
        let mut all = vec![
            "-D",
            self.data.to_str().unwrap(),
            "-o",
            &opts,
            "-w",
            "-t",
            "60",
        ];
        all.extend_from_slice(args);
        let out = as_postgres(self.bin.join("pg_ctl").to_str().unwrap(), &all);
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start(&self) {
        self.ctl(&["-l", self.data.join("log").to_str().unwrap(), "start"]);
    }

    fn stop(&self) {
        self.ctl(&["-m", "fast", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(
            self.bin.join("pg_ctl").to_str().unwrap(),
            &["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}

/// Pushes one blob monolithically; returns the status and the body.
fn push(server: &Server, data: &[u8]) -> (u16, String) {
    let digest = sha256_digest(data);
    match common::http_request(
        server.addr(),
        "POST",
        &format!("/v2/restart/test/blobs/uploads/?digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        Some(data),
    ) {
        Ok(resp) => (resp.status, resp.text()),
        Err(e) => (0, e.to_string()),
    }
}

#[test]
fn pushes_survive_a_postgres_restart() {
    let cluster = Cluster::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "DB_URI: {}\nQUAY_DATABASE_TIMEOUT_SECS: 2\nDISTRIBUTED_STORAGE_CONFIG:\n  local:\n    - LocalStorage\n    - storage_path: {}\n\
             DISTRIBUTED_STORAGE_PREFERENCE: [local]\nDISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [local]\n",
            cluster.url(),
            dir.path().join("storage").display()
        ),
    )
    .unwrap();
    let server = Server::start_with(&["--config", config.to_str().unwrap()], &[]);

    let mut acknowledged = Vec::new();
    let (mut failed_clean, mut longest) = (0, Duration::ZERO);
    let blob = |i: usize| format!("blob number {i} pushed during a database restart").into_bytes();
    let mut i = 0;
    let mut round = |phase: &str, n: usize, acknowledged: &mut Vec<Vec<u8>>| {
        for _ in 0..n {
            let data = blob(i);
            i += 1;
            let started = Instant::now();
            let (status, body) = push(&server, &data);
            longest = longest.max(started.elapsed());
            match status {
                201 => acknowledged.push(data),
                500..=599 => {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| {
                        panic!("{phase}: a {status} without an OCI error body: {body}")
                    });
                    assert!(v["errors"][0]["code"].is_string(), "{phase}: {body}");
                    failed_clean += 1;
                }
                other => panic!("{phase}: unexpected {other}: {body}"),
            }
        }
    };
    round("before", 10, &mut acknowledged);
    assert_eq!(acknowledged.len(), 10, "{}", server.log());
    cluster.stop();
    round("down", 5, &mut acknowledged);
    cluster.start();
    // The pool reconnects on its own; allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    while push(&server, b"probe after restart").0 != 201 {
        assert!(
            Instant::now() < deadline,
            "pushes did not recover:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    round("after", 10, &mut acknowledged);
    eprintln!(
        "postgres restart: {} pushes acknowledged, {failed_clean} failed cleanly while down, longest request {longest:?}",
        acknowledged.len()
    );
    assert!(
        failed_clean >= 5,
        "pushes while the database was down must fail"
    );
    assert!(
        longest < Duration::from_secs(2 + 3),
        "a push took {longest:?}, over the 2 s database timeout plus a margin"
    );

    // Every acknowledged push is there, whole.
    for data in &acknowledged {
        let digest = sha256_digest(data);
        let resp = server.request(
            "GET",
            &format!("/v2/restart/test/blobs/{digest}"),
            &[],
            None,
        );
        assert_eq!(resp.status, 200, "{digest} lost");
        assert_eq!(resp.body, *data);
    }
    // Nothing half recorded: the database knows exactly the acknowledged blobs (and the
    // probe), each with its placement, and each has its object.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stats = rt.block_on(async {
        use quay_core::PlacementIndex;
        let store = quay_storage::SqlMetadataStore::connect(&cluster.url())
            .await
            .unwrap();
        store
            .location_stats(&["local".parse().unwrap()])
            .await
            .unwrap()
    });
    assert_eq!(stats[0].blobs, acknowledged.len() as u64 + 1, "{stats:?}");
    assert_eq!(stats[0].missing_blobs, 0, "{stats:?}");
    let mut objects = 0;
    common::walk_files(&dir.path().join("storage/sha256"), &mut |_| objects += 1);
    assert!(objects > acknowledged.len(), "{objects} objects");
}
