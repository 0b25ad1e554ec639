//! Access control and TLS end to end, with the real `quay-server` and `skopeo`:
//!
//! - skopeo pushes and pulls with `--creds` through token authentication over TLS, trusting a
//!   self-signed certificate given with `--cert-dir`; a wrong password gets 401, a user without
//!   push rights gets 403 `DENIED`, and nothing is written in either case;
//! - two instances of one registry (one PostgreSQL, regions us and eu) accept each other's
//!   tokens; an oversized request head gets 431;
//! - an abandoned upload session expires (`--upload-expiry-secs`) with its partial data;
//! - no secret of the configuration (token key, passwords, storage keys, database password),
//!   nor an issued token, appears in either server's debug log.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use common::{build_oci_layout, http_request, layout_blob_hashes, skopeo, walk_files, Server};

const TOKEN_KEY: &str = "token-key-7f3a9c1e5b2d4f6a8c0e";
const ALICE_PASSWORD: &str = "alice-password-4e8b1d";
const BOB_PASSWORD: &str = "bob-password-9a2c7f";
const WRONG_PASSWORD: &str = "wrong-password-3d5e7a";
const S3_ACCESS_KEY: &str = "AKIAQUAYTESTACCESS01";
const S3_SECRET_KEY: &str = "s3-secret-key-b6f0c2e4a8d1";
const DB_PASSWORD: &str = "db-password-c3e5a7b9";

/// The access-control part of a config: alice owns `alice/*`, bob may pull `team/*`, admin is
/// a superuser.
fn auth_yaml() -> String {
    let hash = |pw: &str| bcrypt::hash(pw, 4).unwrap();
    format!(
        "SUPER_USERS: [admin]\nQUAY_AUTH_USERS:\n  alice: '{}'\n  bob: '{}'\n  admin: '{}'\n\
         QUAY_AUTH_PERMISSIONS:\n  bob:\n    team: [pull]\n\
         QUAY_AUTH_TOKEN_KEY: {TOKEN_KEY}\nQUAY_AUTH_SERVICE: quay-test\n",
        hash(ALICE_PASSWORD),
        hash(BOB_PASSWORD),
        hash(ALICE_PASSWORD),
    )
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_fails_with(what: &str, out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    assert!(!out.status.success(), "{what} should have failed");
    assert!(
        needles.iter().any(|n| stderr.contains(n)),
        "{what}: expected one of {needles:?} in: {stderr}"
    );
    stderr
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk_files(root, &mut |p| out.push(p.to_path_buf()));
    out.sort();
    out
}

/// A self-signed certificate for 127.0.0.1 and localhost, made with the openssl command.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=quay-test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command is needed to make a test certificate");
    assert_ok("openssl req", &out);
    (cert, key)
}

#[test]
fn skopeo_over_tls_with_token_auth() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    let (cert, key) = self_signed(dir.path());
    // skopeo trusts the *.crt files of --cert-dir as certificate authorities.
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&cert, certs.join("ca.crt")).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "DISTRIBUTED_STORAGE_CONFIG:\n  local: [LocalStorage, {{storage_path: {}}}]\n\
             DISTRIBUTED_STORAGE_PREFERENCE: [local]\nPREFERRED_URL_SCHEME: https\n{}",
            storage.display(),
            auth_yaml()
        ),
    )
    .unwrap();
    let server = Server::start_with(
        &[
            "--config",
            config.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let image = build_oci_layout(&work.join("layout"), "v1", 2);
    let src = format!("oci:{}:v1", work.join("layout").display());
    let host = server.host();
    let cert_dir = certs.to_str().unwrap();
    // `skopeo copy` of the layout to `repo`, trusting the certificate, as `user`.
    let push = |user: &str, password: &str, repo: &str| {
        let creds = format!("{user}:{password}");
        let dest = format!("docker://{host}/{repo}:v1");
        let args = [
            "copy",
            "--dest-cert-dir",
            cert_dir,
            "--dest-creds",
            &creds,
            &src,
            &dest,
        ];
        skopeo(&work, &args)
    };
    let list_tags = |user: &str, password: &str, repo: &str| {
        let creds = format!("{user}:{password}");
        let image = format!("docker://{host}/{repo}");
        skopeo(
            &work,
            &[
                "list-tags",
                "--cert-dir",
                cert_dir,
                "--creds",
                &creds,
                &image,
            ],
        )
    };

    assert_ok(
        "push as alice over TLS",
        &push("alice", ALICE_PASSWORD, "alice/app"),
    );
    let stored = files_under(&storage);
    assert!(!stored.is_empty());

    let alice = format!("alice:{ALICE_PASSWORD}");
    let pulled = work.join("pulled");
    let out = skopeo(
        &work,
        &[
            "copy",
            "--src-cert-dir",
            cert_dir,
            "--src-creds",
            &alice,
            &format!("docker://{host}/alice/app:v1"),
            &format!("oci:{}:v1", pulled.display()),
        ],
    );
    assert_ok("pull as alice over TLS", &out);
    assert_eq!(
        layout_blob_hashes(&pulled),
        layout_blob_hashes(&work.join("layout"))
    );
    assert_eq!(image.all_digests().len(), layout_blob_hashes(&pulled).len());

    // Without trusting the certificate, skopeo refuses the server.
    let image_ref = format!("docker://{host}/alice/app:v1");
    let out = skopeo(&work, &["inspect", "--creds", &alice, &image_ref]);
    assert_fails_with("inspect without the CA", &out, &["certificate", "x509"]);

    // A wrong password: 401, nothing written.
    assert_fails_with(
        "push with a wrong password",
        &push("alice", WRONG_PASSWORD, "alice/other"),
        &["401", "unauthorized", "invalid username/password"],
    );
    // bob may only pull team/*: 403 DENIED, nothing written.
    assert_fails_with(
        "push as bob to team/app",
        &push("bob", BOB_PASSWORD, "team/app"),
        &["denied", "403"],
    );
    assert_eq!(
        files_under(&storage),
        stored,
        "a refused push wrote to storage"
    );
    assert_fails_with(
        "tags of team/app",
        &list_tags("admin", ALICE_PASSWORD, "team/app"),
        &["name_unknown", "unknown", "404"],
    );
    assert_fails_with(
        "bob listing alice's tags",
        &list_tags("bob", BOB_PASSWORD, "alice/app"),
        &["denied", "403", "unauthorized"],
    );
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

#[test]
fn tokens_work_across_instances_and_secrets_stay_out_of_logs() {
    let (rt, db) = common::fresh_postgres();
    // Trust authentication ignores the password: it is there to be kept out of the logs.
    let db_url = db.url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{DB_PASSWORD}@"),
        1,
    );
    assert!(
        db_url.contains(DB_PASSWORD),
        "unexpected test database URL {}",
        db.url
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "DB_URI: {db_url}\nDISTRIBUTED_STORAGE_CONFIG:\n  us: [LocalStorage, {{storage_path: {}}}]\n  \
             eu: [LocalStorage, {{storage_path: {}}}]\n  \
             archive: [S3Storage, {{endpoint_url: 'http://127.0.0.1:9', s3_bucket: b, \
             storage_path: /x, s3_access_key: {S3_ACCESS_KEY}, s3_secret_key: {S3_SECRET_KEY}}}]\n\
             DISTRIBUTED_STORAGE_PREFERENCE: [us, eu, archive]\n{}",
            dir.path().join("us").display(),
            dir.path().join("eu").display(),
            auth_yaml()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let start = |preference: &str| {
        Server::start_with(
            &["--config", cfg, "--health-interval-secs", "1"],
            &[
                ("QUAY_DISTRIBUTED_STORAGE_PREFERENCE", preference),
                ("RUST_LOG", "debug"),
            ],
        )
    };
    let us = start("us eu archive");
    let eu = start("eu us archive");

    // A token from us...
    let resp = http_request(
        us.addr(),
        "GET",
        "/v2/auth?service=quay-test&scope=repository:alice/app:pull,push",
        &[("Authorization", &basic("alice", ALICE_PASSWORD))],
        None,
    )
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    // ...pushes to eu, lands in eu's storage, and reads back from us.
    let data = b"a layer pushed to eu with a token from us";
    let digest = common::sha256_digest(data);
    let resp = http_request(
        eu.addr(),
        "POST",
        &format!("/v2/alice/app/blobs/uploads/?digest={digest}"),
        &[("Authorization", &bearer)],
        Some(data),
    )
    .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(resp.header("x-storage-location"), None);
    let resp = http_request(
        us.addr(),
        "GET",
        &format!("/v2/alice/app/blobs/{digest}"),
        &[("Authorization", &bearer)],
        None,
    )
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, data);
    // Without the token, eu challenges with its own realm.
    let resp = http_request(
        eu.addr(),
        "GET",
        &format!("/v2/alice/app/blobs/{digest}"),
        &[],
        None,
    )
    .unwrap();
    assert_eq!(resp.status, 401);
    let challenge = resp.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"http://{}/v2/auth\"", eu.addr())),
        "{challenge}"
    );
    // A wrong password, with Basic, is refused on both.
    for region in [&us, &eu] {
        let resp = http_request(
            region.addr(),
            "GET",
            "/v2/auth?scope=repository:alice/app:pull",
            &[("Authorization", &basic("alice", WRONG_PASSWORD))],
            None,
        )
        .unwrap();
        assert_eq!(resp.status, 401);
    }
    // skopeo against eu with credentials goes through the token flow there.
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    build_oci_layout(&work.join("layout"), "v1", 1);
    let out = skopeo(
        &work,
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("alice:{ALICE_PASSWORD}"),
            &format!("oci:{}:v1", work.join("layout").display()),
            &format!("docker://{}/alice/tool:v1", eu.host()),
        ],
    );
    assert_ok("skopeo push to eu", &out);

    // An oversized request head is refused before any handler runs.
    let big = "x".repeat(100 * 1024);
    let resp = http_request(eu.addr(), "GET", "/v2/", &[("X-Padding", &big)], None).unwrap();
    assert_eq!(resp.status, 431);

    // Give the health probes of the unreachable S3 location time to fail and log.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let secrets = [
        TOKEN_KEY,
        ALICE_PASSWORD,
        BOB_PASSWORD,
        WRONG_PASSWORD,
        S3_ACCESS_KEY,
        S3_SECRET_KEY,
        DB_PASSWORD,
        token.as_str(),
    ];
    for (name, region) in [("us", &us), ("eu", &eu)] {
        let log = region.log();
        assert!(
            log.contains("DEBUG"),
            "{name}: the log is not at debug level"
        );
        assert!(
            log.contains("failed login"),
            "{name}: the failed login was not logged"
        );
        for secret in secrets {
            assert!(
                !log.contains(secret),
                "{name}'s log holds a secret ({}…):\n{log}",
                &secret[..6]
            );
        }
    }
    drop(us);
    drop(eu);
    rt.block_on(db.drop_database()).unwrap();
}

#[test]
fn abandoned_uploads_expire_with_their_data() {
    let server = Server::start_with(&["--upload-expiry-secs", "1"], &[]);
    let resp = http_request(
        server.addr(),
        "POST",
        "/v2/idle/app/blobs/uploads/",
        &[],
        None,
    )
    .unwrap();
    assert_eq!(resp.status, 202);
    let location = resp.header("location").unwrap().to_owned();
    let chunk = vec![7u8; 64 * 1024];
    let resp = http_request(
        server.addr(),
        "PATCH",
        &location,
        &[("Content-Type", "application/octet-stream")],
        Some(&chunk),
    )
    .unwrap();
    assert_eq!(resp.status, 202, "{}", resp.text());
    let storage = server.data_dir().join("storage");
    let holds_chunk = || {
        files_under(&storage)
            .iter()
            .any(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) == chunk.len() as u64)
    };
    assert!(holds_chunk(), "the chunk is not in storage");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while holds_chunk() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        !holds_chunk(),
        "the abandoned chunk is still in storage:\n{}",
        server.log()
    );
    let resp = http_request(server.addr(), "GET", &location, &[], None).unwrap();
    assert_eq!(resp.status, 404);
    assert!(resp.text().contains("BLOB_UPLOAD_UNKNOWN"));
    assert!(server.log().contains("removed abandoned uploads"));
}
