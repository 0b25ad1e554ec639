//! An attacker with an ordinary account against the real `quay-server` (access control on, one
//! LocalStorage location):
//!
//! - PATCHes that declare a length and stop sending, held past the storage timeout: another
//!   user's pushes and pulls keep succeeding, `/health/instance` stays 200, the location is
//!   never marked down, and the stalled requests end with the client's timeout;
//! - a PATCH cut off after 20 MiB and an expired session leave no file and no folder;
//! - a flood of failed logins: a token holder's latency is reported before and during;
//! - a user name with a newline cannot write a line of its own into the log.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{http_request, sha256_digest, Server};

const TOKEN_KEY: &str = "attack-test-token-key-5c1e9a";

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// A config with users alice and bob (password `pw`, bcrypt cost `cost`) and `extra` keys.
fn write_config(dir: &Path, cost: u32, extra: &str) -> PathBuf {
    let hash = bcrypt::hash("pw", cost).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "DISTRIBUTED_STORAGE_CONFIG:\n  local: [LocalStorage, {{storage_path: {}}}]\n\
             DISTRIBUTED_STORAGE_PREFERENCE: [local]\n\
             QUAY_AUTH_USERS:\n  alice: '{hash}'\n  bob: '{hash}'\n\
             QUAY_AUTH_TOKEN_KEY: {TOKEN_KEY}\n{extra}",
            dir.join("storage").display()
        ),
    )
    .unwrap();
    path
}

fn start(dir: &Path, cost: u32, extra: &str, args: &[&str]) -> Server {
    let config = write_config(dir, cost, extra);
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    Server::start_with(&all, &[])
}

/// Files and folders below `root`, relative, sorted. `.tmp` and `uploads`, the location's areas
/// for temporary files and upload data, are listed only by what they hold.
fn entries_under(root: &Path) -> (Vec<String>, Vec<String>) {
    fn walk(root: &Path, dir: &Path, files: &mut Vec<String>, dirs: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if path.is_dir() {
                if rel != ".tmp" && rel != "uploads" {
                    dirs.push(rel);
                }
                walk(root, &path, files, dirs);
            } else {
                files.push(rel);
            }
        }
    }
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(root, root, &mut files, &mut dirs);
    files.sort();
    dirs.sort();
    (files, dirs)
}

fn push_blob(server: &Server, auth: &str, repo: &str, data: &[u8]) {
    let resp = server.request(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256_digest(data)),
        &[("Authorization", auth)],
        Some(data),
    );
    assert_eq!(resp.status, 201, "push to {repo}: {}", resp.text());
}

fn pull_blob(server: &Server, auth: &str, repo: &str, data: &[u8]) {
    let resp = server.request(
        "GET",
        &format!("/v2/{repo}/blobs/{}", sha256_digest(data)),
        &[("Authorization", auth)],
        None,
    );
    assert_eq!(resp.status, 200, "pull from {repo}: {}", resp.text());
    assert_eq!(resp.body, data);
}

/// Opens an upload session as `auth`; returns its path.
fn open_session(server: &Server, auth: &str, repo: &str) -> String {
    let resp = server.request(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[("Authorization", auth)],
        None,
    );
    assert_eq!(resp.status, 202, "{}", resp.text());
    resp.header("location").unwrap().to_owned()
}

/// Sends a PATCH head declaring `declared` bytes, then `sent` bytes of it; returns the socket.
fn partial_patch(
    addr: SocketAddr,
    auth: &str,
    path: &str,
    declared: u64,
    sent: usize,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![0x5au8; 1024 * 1024];
    let mut left = sent;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    s
}

#[test]
fn stalled_patches_are_the_clients_fault_not_the_storages() {
    let dir = tempfile::tempdir().unwrap();
    // Storage calls time out after 1 s; clients may pause 4 s.
    let server = start(
        dir.path(),
        4,
        "QUAY_STORAGE_TIMEOUT_SECS: 1\nQUAY_CLIENT_BODY_TIMEOUT_SECS: 4\n",
        &["--health-interval-secs", "1"],
    );
    let (alice, bob) = (basic("alice", "pw"), basic("bob", "pw"));
    // bob starts three PATCHes that promise a MiB and send 100 bytes.
    let stalled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let session = open_session(&server, &bob, "bob/app");
            partial_patch(server.addr(), &bob, &session, 1024 * 1024, 100)
        })
        .collect();
    // alice keeps pushing and pulling, well past the storage timeout, and the load balancer
    // keeps asking for /health/instance.
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(7) {
        let data = format!("alice's layer {rounds}").into_bytes();
        push_blob(&server, &alice, "alice/app", &data);
        pull_blob(&server, &alice, "alice/app", &data);
        let health = server.request("GET", "/health/instance", &[], None);
        assert_eq!(health.status, 200, "round {rounds}: {}", health.text());
        rounds += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    // The stalled requests were answered with the client's timeout (or closed).
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "a stalled PATCH got: {text}"
        );
    }
    let log = server.log();
    assert!(
        !log.contains("storage location marked down"),
        "a client's stall opened the breaker:\n{log}"
    );
    let endtoend = server.request("GET", "/health/endtoend", &[], None);
    assert_eq!(endtoend.status, 200, "{}", endtoend.text());
    // Nothing of the stalled chunks is left in storage.
    let (files, _) = entries_under(&dir.path().join("storage"));
    let stray: Vec<&String> = files.iter().filter(|f| !f.starts_with("sha256/")).collect();
    assert!(stray.is_empty(), "left behind: {stray:?}");
    println!(
        "{rounds} push+pull rounds by another user while 3 PATCHes stalled: all succeeded, \
         /health/instance 200 throughout"
    );
}

#[test]
fn an_aborted_patch_and_an_expired_session_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 4, "", &["--upload-expiry-secs", "2"]);
    let bob = basic("bob", "pw");
    let storage = dir.path().join("storage");
    // A PATCH of a declared 40 MiB, cut off after 20 MiB.
    let cut = open_session(&server, &bob, "bob/app");
    let socket = partial_patch(
        server.addr(),
        &bob,
        &cut,
        40 * 1024 * 1024,
        20 * 1024 * 1024,
    );
    drop(socket);
    // A session with one finished chunk, then abandoned.
    let idle = open_session(&server, &bob, "bob/app");
    let resp = server.request(
        "PATCH",
        &idle,
        &[
            ("Authorization", &bob),
            ("Content-Type", "application/octet-stream"),
        ],
        Some(&[7u8; 4096]),
    );
    assert_eq!(resp.status, 202, "{}", resp.text());
    // The cut-off chunk is removed at once: no file but the finished chunk.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after_abort;
    loop {
        after_abort = entries_under(&storage);
        if after_abort.0.len() <= 1 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        after_abort.0.len(),
        1,
        "after the abort, only the finished chunk should be stored: {:?}",
        after_abort.0
    );
    // Both sessions expire: nothing at all is left, file or folder.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut left;
    loop {
        left = entries_under(&storage);
        let empty_tmp = std::fs::read_dir(storage.join(".tmp"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true);
        if (left.0.is_empty() && left.1.is_empty() && empty_tmp) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "leftovers after a 20 MiB PATCH cut off and two expired sessions: {} files, {} folders",
        left.0.len(),
        left.1.len()
    );
    assert!(
        left.0.is_empty() && left.1.is_empty(),
        "left behind: files {:?}, folders {:?}\n{}",
        left.0,
        left.1,
        server.log()
    );
    for session in [&cut, &idle] {
        let resp = server.request("GET", session, &[("Authorization", &bob)], None);
        assert_eq!(resp.status, 404);
    }
}

fn latency(server: &Server, auth: &str, n: usize) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let resp = server.request("GET", "/v2/", &[("Authorization", auth)], None);
            assert_eq!(resp.status, 200);
            t.elapsed()
        })
        .collect();
    times.sort();
    (times[n / 2], times[n - 1])
}

#[test]
fn a_login_flood_costs_its_sender_not_other_users() {
    let dir = tempfile::tempdir().unwrap();
    // bcrypt at cost 10, as htpasswd files and Quay's users commonly have.
    let server = start(dir.path(), 10, "", &[]);
    let resp = server.request(
        "GET",
        "/v2/auth?service=quay&scope=repository:alice/app:pull",
        &[("Authorization", &basic("alice", "pw"))],
        None,
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    let bearer = format!("Bearer {}", body["token"].as_str().unwrap());
    let (p50_before, max_before) = latency(&server, &bearer, 30);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = server.addr();
    let flooders: Vec<_> = (0..50)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let wrong = basic("mallory", "guess");
                let (mut refused, mut checked) = (0u32, 0u32);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match http_request(addr, "GET", "/v2/", &[("Authorization", &wrong)], None) {
                        Ok(r) if r.status == 429 => refused += 1,
                        Ok(r) if r.status == 401 => checked += 1,
                        Ok(r) => panic!("a failed login answered {}", r.status),
                        Err(_) => {}
                    }
                }
                (refused, checked)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (p50_during, max_during) = latency(&server, &bearer, 30);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut refused, mut checked) = (0, 0);
    for f in flooders {
        let (r, c) = f.join().unwrap();
        refused += r;
        checked += c;
    }
    println!(
        "GET /v2/ with a token: p50 {p50_before:?} (max {max_before:?}) before, \
         p50 {p50_during:?} (max {max_during:?}) during a flood of 50 concurrent failed logins \
         ({checked} checked, {refused} refused with 429)"
    );
    assert!(checked > 0, "the flood's logins were checked");
}

#[test]
fn user_text_cannot_forge_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 4, "", &[]);
    let forged = "FORGED  INFO quay: admin logged in";
    let resp = server.request(
        "GET",
        "/v2/",
        &[("Authorization", &basic(&format!("eve\n{forged}"), "x"))],
        None,
    );
    assert_eq!(resp.status, 401);
    let log = server.log();
    assert!(log.contains("failed login"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a user name wrote its own log line:\n{log}"
    );
}
