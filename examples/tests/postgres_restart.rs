//! PostgreSQL stopped or restarted under a stream of pushes. The tests run their own
//! PostgreSQL cluster (initdb in a temp dir, its own port) so that stopping it does not disturb
//! other tests.
//!
//! - Stopped for longer than the database timeout: pushes fail cleanly (5xx with an OCI error
//!   body); after, they succeed; no acknowledged push is lost and no blob is half recorded.
//! - Restarted (as a restart or a managed failover does) while 8 clients push through two
//!   instances: no request fails, every acknowledged push is readable from both.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::time::{Duration, Instant};

use common::pg::Cluster;
use common::{sha256_digest, Server};

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

/// Pushes one blob in chunks (POST, two PATCHes, PUT with the digest) through `server`, so the
/// upload's create, read, append and commit all meet the database. Returns the first status
/// that is not the expected one, with its body.
fn push_chunked(server: &Server, repo: &str, data: &[u8]) -> Result<(), String> {
    let digest = sha256_digest(data);
    let call = |method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>| {
        common::http_request(server.addr(), method, path, headers, body)
            .map_err(|e| format!("{method} {path}: {e}"))
    };
    let resp = call("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], None)?;
    if resp.status != 202 {
        return Err(format!("POST answered {}: {}", resp.status, resp.text()));
    }
    let mut location = resp.header("Location").unwrap_or_default().to_owned();
    let half = data.len() / 2;
    for (start, chunk) in [(0, &data[..half]), (half, &data[half..])] {
        let range = format!("{}-{}", start, start + chunk.len() - 1);
        let resp = call(
            "PATCH",
            &location,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
            ],
            Some(chunk),
        )?;
        if resp.status != 202 {
            return Err(format!("PATCH answered {}: {}", resp.status, resp.text()));
        }
        location = resp.header("Location").unwrap_or_default().to_owned();
    }
    let sep = if location.contains('?') { '&' } else { '?' };
    let resp = call("PUT", &format!("{location}{sep}digest={digest}"), &[], None)?;
    if resp.status != 201 {
        return Err(format!("PUT answered {}: {}", resp.status, resp.text()));
    }
    Ok(())
}

#[test]
fn a_postgres_restart_under_pushes_through_two_instances_fails_no_request() {
    let cluster = Cluster::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "DB_URI: {}\nQUAY_DATABASE_TIMEOUT_SECS: 15\nDISTRIBUTED_STORAGE_CONFIG:\n  us:\n    - LocalStorage\n    - storage_path: {us}\n  eu:\n    - LocalStorage\n    - storage_path: {eu}\n\
             DISTRIBUTED_STORAGE_PREFERENCE: [us, eu]\nDISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [us, eu]\n",
            cluster.url(),
            us = dir.path().join("us").display(),
            eu = dir.path().join("eu").display(),
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let us = Server::start_with(&["--config", &config, "--no-worker"], &[]);
    let eu = Server::start_with(
        &["--config", &config, "--no-worker"],
        &[("QUAY_DISTRIBUTED_STORAGE_PREFERENCE", "eu us")],
    );
    let servers = [&us, &eu];

    const CLIENTS: usize = 8;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let started = Instant::now();
    let (acknowledged, failures, longest) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (stop, servers) = (&stop, &servers);
                scope.spawn(move || {
                    let (mut acked, mut failed, mut longest) =
                        (Vec::new(), Vec::new(), Duration::ZERO);
                    let mut i = 0usize;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let server = servers[(c + i) % 2];
                        let data = format!("client {c} blob {i}: pushed across a database restart")
                            .into_bytes();
                        let t = Instant::now();
                        let outcome = if i % 2 == 0 {
                            match push(server, &data) {
                                (201, _) => Ok(()),
                                (status, body) => Err(format!("POST answered {status}: {body}")),
                            }
                        } else {
                            push_chunked(server, "restart/test", &data)
                        };
                        longest = longest.max(t.elapsed());
                        match outcome {
                            Ok(()) => acked.push(data),
                            Err(e) => {
                                failed.push(format!("{:?} after start: {e}", started.elapsed()))
                            }
                        }
                        i += 1;
                    }
                    (acked, failed, longest)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        cluster.restart();
        std::thread::sleep(Duration::from_secs(3));
        cluster.restart();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = (Vec::new(), Vec::new(), Duration::ZERO);
        for c in clients {
            let (a, f, l) = c.join().unwrap();
            all.0.extend(a);
            all.1.extend(f);
            all.2 = all.2.max(l);
        }
        all
    });
    eprintln!(
        "two restarts under {CLIENTS} clients: {} pushes acknowledged, {} failed, longest request {longest:?}",
        acknowledged.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} requests failed across the restarts: {:#?}\nus log:\n{}\neu log:\n{}",
        failures.len(),
        failures,
        us.log(),
        eu.log()
    );
    assert!(
        acknowledged.len() > 50,
        "only {} pushes",
        acknowledged.len()
    );
    // Every acknowledged push is readable, whole, from both instances.
    for data in &acknowledged {
        let digest = sha256_digest(data);
        for server in servers {
            let resp = server.request(
                "GET",
                &format!("/v2/restart/test/blobs/{digest}"),
                &[],
                None,
            );
            assert_eq!(resp.status, 200, "{digest} lost");
            assert_eq!(resp.body, *data);
        }
    }
}
