//! Issue 14, through the binaries: Quay's `REGISTRY_STATE: readonly` and `DISABLE_PUSHES` per
//! instance, and `quayctl location drain|undrain` taking a location out of the write path
//! without losing anything.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{run_with_timeout, sha256_digest, Server};

/// A config.yaml in `dir` named `name`: one PostgreSQL database, locations `us` and `eu` on
/// local folders under `dir`, and `extra` lines.
fn write_config(dir: &Path, name: &str, db_url: &str, extra: &str) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "DB_URI: {db_url}\nDISTRIBUTED_STORAGE_CONFIG:\n  us:\n    - LocalStorage\n    - storage_path: {us}\n  \
             eu:\n    - LocalStorage\n    - storage_path: {eu}\n\
             DISTRIBUTED_STORAGE_PREFERENCE: [us, eu]\nDISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [us, eu]\n\
             FEATURE_STORAGE_REPLICATION: true\nQUAY_RECONCILE_INTERVAL_SECS: 2\n{extra}",
            us = dir.join("us").display(),
            eu = dir.join("eu").display(),
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn quayctl(config: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quayctl"));
    cmd.args(["--config", config]).args(args);
    run_with_timeout(&mut cmd, Duration::from_secs(120))
}

fn push_blob(server: &Server, repo: &str, data: &[u8]) -> common::HttpResponse {
    let digest = sha256_digest(data);
    server.request(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        Some(data),
    )
}

fn holds(dir: &Path, location: &str, digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").unwrap();
    dir.join(location)
        .join("sha256")
        .join(&hex[..2])
        .join(hex)
        .exists()
}

/// The error code of an OCI error body.
fn code(resp: &common::HttpResponse) -> String {
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn read_only_and_no_push_instances_refuse_writes_and_serve_reads() {
    let (rt, db) = common::fresh_postgres();
    let dir = tempfile::tempdir().unwrap();
    let normal = write_config(dir.path(), "normal.yaml", &db.url, "");
    let readonly = write_config(
        dir.path(),
        "readonly.yaml",
        &db.url,
        "REGISTRY_STATE: readonly\n",
    );
    let nopush = write_config(dir.path(), "nopush.yaml", &db.url, "DISABLE_PUSHES: true\n");
    let rw = Server::start_with(&["--config", &normal], &[]);
    let ro = Server::start_with(&["--config", &readonly, "--no-worker"], &[]);
    let np = Server::start_with(&["--config", &nopush, "--no-worker"], &[]);

    let data = b"a layer pushed before maintenance".to_vec();
    let digest = sha256_digest(&data);
    assert_eq!(push_blob(&rw, "maint/app", &data).status, 201);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": common::OCI_MANIFEST,
        "config": {"mediaType": common::OCI_CONFIG, "digest": digest, "size": data.len()},
        "layers": [],
    })
    .to_string();
    let put_manifest = |server: &Server, tag: &str| {
        server.request(
            "PUT",
            &format!("/v2/maint/app/manifests/{tag}"),
            &[("Content-Type", common::OCI_MANIFEST)],
            Some(manifest.as_bytes()),
        )
    };
    assert_eq!(put_manifest(&rw, "v1").status, 201);

    for (server, what) in [(&ro, "read-only"), (&np, "no-push")] {
        // Reads work.
        let got = server.request("GET", &format!("/v2/maint/app/blobs/{digest}"), &[], None);
        assert_eq!(got.status, 200, "{what}: blob GET");
        assert_eq!(got.body, data);
        assert_eq!(server.get_manifest("maint/app", "v1").status, 200, "{what}");
        assert_eq!(
            server
                .request("GET", "/v2/maint/app/tags/list", &[], None)
                .status,
            200
        );
        // Pushes are refused with an OCI error body that says why.
        for resp in [
            push_blob(server, "maint/app", b"another layer"),
            server.request("POST", "/v2/maint/app/blobs/uploads/", &[], None),
            put_manifest(server, "v2"),
        ] {
            assert_eq!(resp.status, 405, "{what}: {}", resp.text());
            assert_eq!(code(&resp), "UNSUPPORTED", "{what}: {}", resp.text());
            assert!(
                resp.text().contains("REGISTRY_STATE") || resp.text().contains("DISABLE_PUSHES"),
                "{what}: {}",
                resp.text()
            );
        }
    }
    // Read-only refuses deletes too; with pushes disabled, deletes work.
    let delete =
        |server: &Server| server.request("DELETE", "/v2/maint/app/manifests/v1", &[], None);
    let refused = delete(&ro);
    assert_eq!(refused.status, 405, "{}", refused.text());
    assert_eq!(code(&refused), "UNSUPPORTED");
    let deleted = delete(&np);
    assert_eq!(deleted.status, 202, "{}", deleted.text());
    assert_eq!(rw.get_manifest("maint/app", "v1").status, 404);
    drop((rw, ro, np));
    let _ = rt.block_on(db.drop_database());
}

#[test]
fn a_drained_location_takes_no_new_blob_and_loses_nothing() {
    let (rt, db) = common::fresh_postgres();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "config.yaml", &db.url, "");
    // No worker inside: where a push lands is seen before any copy is made.
    let server = Server::start_with(
        &[
            "--config",
            &config,
            "--health-interval-secs",
            "1",
            "--no-worker",
        ],
        &[],
    );

    let before = b"pushed before the drain".to_vec();
    assert_eq!(push_blob(&server, "maint/drain", &before).status, 201);
    assert!(holds(dir.path(), "us", &sha256_digest(&before)));

    let out = quayctl(&config, &["location", "drain", "us"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = quayctl(&config, &["location", "drain", "nowhere"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("configured: "));
    let status = quayctl(&config, &["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("drained: us"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );

    // Within a probe interval or two, new blobs go to eu only at first.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    let during = loop {
        let data = format!("pushed while us is drained, {n}").into_bytes();
        n += 1;
        assert_eq!(push_blob(&server, "maint/drain", &data).status, 201);
        let digest = sha256_digest(&data);
        if holds(dir.path(), "eu", &digest) && !holds(dir.path(), "us", &digest) {
            break data;
        }
        assert!(Instant::now() < deadline, "the server never saw the drain");
        std::thread::sleep(Duration::from_millis(300));
    };
    // Reads work, and replication into the drained location goes on: nothing is lost.
    let got = server.request(
        "GET",
        &format!("/v2/maint/drain/blobs/{}", sha256_digest(&during)),
        &[],
        None,
    );
    assert_eq!(got.status, 200);
    assert_eq!(got.body, during);
    let mut worker = Command::new(env!("CARGO_BIN_EXE_quayctl"))
        .args(["--config", &config, "worker"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = quayctl(&config, &["status", "--wait", "--timeout", "60"]);
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        holds(dir.path(), "us", &sha256_digest(&during)),
        "replication into us stopped"
    );

    // Undrained: new blobs land in us again.
    let out = quayctl(&config, &["location", "undrain", "us"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let data = format!("pushed after the undrain, {n}").into_bytes();
        n += 1;
        assert_eq!(push_blob(&server, "maint/drain", &data).status, 201);
        if holds(dir.path(), "us", &sha256_digest(&data)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never saw the undrain"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let list = quayctl(&config, &["location", "list"]);
    assert!(!String::from_utf8_lossy(&list.stdout).contains("drained"));
    drop(server);
    let _ = rt.block_on(db.drop_database());
}
