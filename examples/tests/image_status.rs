//! `quayctl status --image`: is one image in every default location? An image, an index and an
//! image with one layer missing, on a quay-server with two local locations and no worker of its
//! own; `--wait` returns once a `quayctl worker` has copied everything.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{run_with_timeout, sha256_digest, Server, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};

const QUAYCTL: &str = env!("CARGO_BIN_EXE_quayctl");
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Scene {
    dir: tempfile::TempDir,
    config: PathBuf,
    server: Server,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "DB_URI: sqlite://{db}?mode=rwc\n\
                 DISTRIBUTED_STORAGE_CONFIG:\n  us: [LocalStorage, {{storage_path: {us:?}}}]\n  \
                 eu: [LocalStorage, {{storage_path: {eu:?}}}]\n\
                 DISTRIBUTED_STORAGE_PREFERENCE: [us, eu]\n\
                 DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [us, eu]\n\
                 FEATURE_STORAGE_REPLICATION: true\n",
                db = dir.path().join("meta.db").display(),
                us = dir.path().join("us"),
                eu = dir.path().join("eu"),
            ),
        )
        .unwrap();
        let server =
            Server::start_with(&["--config", config.to_str().unwrap(), "--no-worker"], &[]);
        Scene {
            dir,
            config,
            server,
        }
    }

    fn quayctl(&self, args: &[&str]) -> Output {
        run_with_timeout(
            Command::new(QUAYCTL)
                .arg("--config")
                .arg(&self.config)
                .args(args)
                .env_remove("RUST_LOG"),
            Duration::from_secs(120),
        )
    }

    fn worker(&self) -> Child {
        let log = std::fs::File::create(self.dir.path().join("worker.log")).unwrap();
        Command::new(QUAYCTL)
            .arg("--config")
            .arg(&self.config)
            .arg("worker")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap()
    }

    fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        let resp = self.server.request(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            Some(data),
        );
        assert_eq!(resp.status, 201, "{}", resp.text());
        digest
    }

    fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
        let resp = self.server.request(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            Some(body),
        );
        assert_eq!(resp.status, 201, "{}", resp.text());
        resp.header("docker-content-digest").unwrap().to_owned()
    }

    /// An image of a shared config and one layer; returns (manifest digest, manifest size,
    /// layer digest).
    fn push_image(&self, repo: &str, reference: &str, layer: &[u8]) -> (String, usize, String) {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let c = self.push_blob(repo, config);
        let l = self.push_blob(repo, layer);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": c, "size": config.len()},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": l, "size": layer.len()}],
        }))
        .unwrap();
        let d = self.push_manifest(repo, reference, OCI_MANIFEST, &manifest);
        (d, manifest.len(), l)
    }

    fn status_json(&self, image: &str) -> (Option<i32>, serde_json::Value) {
        let out = self.quayctl(&["status", "--image", image, "--json"]);
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(&out)));
        (out.status.code(), json)
    }
}

fn missing_in(status: &serde_json::Value, location: &str) -> Vec<String> {
    status["locations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["location"] == location)
        .unwrap()["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect()
}

fn no_files(dir: &Path) -> bool {
    let mut any = false;
    common::walk_files(&dir.join("sha256"), &mut |_| any = true);
    !any
}

#[test]
fn status_of_an_image_an_index_and_a_missing_layer() {
    let scene = Scene::new();
    // An image by tag, and an index of two images.
    let (image, _, _) = scene.push_image("demo/app", "v1", b"layer of the app");
    let (amd, amd_size, _) = scene.push_image_by_digest("demo/multi", b"amd64 layer");
    let (arm, arm_size, _) = scene.push_image_by_digest("demo/multi", b"arm64 layer");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd, "size": amd_size,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": arm, "size": arm_size,
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))
    .unwrap();
    let index_digest = scene.push_manifest("demo/multi", "v1", OCI_INDEX, &index);

    // No worker: only us holds anything.
    let (code, status) = scene.status_json("demo/app:v1");
    assert_eq!(code, Some(1), "incomplete: exit 1: {status}");
    assert_eq!(status["complete"], false);
    assert_eq!(status["digest"], image.as_str());
    assert_eq!(status["blobs"], 2);
    assert!(missing_in(&status, "us").is_empty());
    assert_eq!(missing_in(&status, "eu").len(), 2, "{status}");

    let (code, status) = scene.status_json(&format!("demo/multi@{index_digest}"));
    assert_eq!(code, Some(1));
    assert_eq!(status["manifests"].as_array().unwrap().len(), 3, "{status}");
    // One shared config and two layers.
    assert_eq!(status["blobs"], 3, "{status}");
    assert_eq!(missing_in(&status, "eu").len(), 3);

    // The text form names what is missing where.
    let out = scene.quayctl(&["status", "--image", "demo/app:v1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text.contains("INCOMPLETE") && text.contains("eu: 0/2 blobs"),
        "{text}"
    );

    // A worker copies everything; --wait returns 0 once the image is complete.
    let mut worker = scene.worker();
    for image in ["demo/app:v1", "demo/multi:v1"] {
        let out = scene.quayctl(&["status", "--image", image, "--wait", "--timeout", "60"]);
        assert_eq!(out.status.code(), Some(0), "{image}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("replicated everywhere"),
            "{}",
            describe(&out)
        );
    }
    let _ = worker.kill();
    let _ = worker.wait();

    // A new image sharing the config: only its layer is missing in eu.
    let (_, _, layer) = scene.push_image("demo/app", "v2", b"a new layer");
    let (code, status) = scene.status_json("demo/app:v2");
    assert_eq!(code, Some(1), "{status}");
    assert_eq!(
        missing_in(&status, "eu"),
        std::slice::from_ref(&layer),
        "{status}"
    );
    assert!(missing_in(&status, "us").is_empty());

    // --wait gives up at its timeout, exit 1.
    let out = scene.quayctl(&[
        "status",
        "--image",
        "demo/app:v2",
        "--wait",
        "--timeout",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not replicated after 1s"));

    // Unknown images and bad references are errors (exit 2), not "incomplete".
    for bad in ["demo/app:nope", "demo/app", "Not A Name:v1"] {
        let out = scene.quayctl(&["status", "--image", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", describe(&out));
    }
    assert!(!no_files(&scene.dir.path().join("eu")), "eu holds copies");
}

impl Scene {
    fn push_image_by_digest(&self, repo: &str, layer: &[u8]) -> (String, usize, String) {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let c = self.push_blob(repo, config);
        let l = self.push_blob(repo, layer);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": c, "size": config.len()},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": l, "size": layer.len()}],
        }))
        .unwrap();
        let digest = sha256_digest(&manifest);
        let d = self.push_manifest(repo, &digest, OCI_MANIFEST, &manifest);
        (d, manifest.len(), l)
    }
}
