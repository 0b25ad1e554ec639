//! End-to-end tests of `quay-server` with the real `skopeo` (1.9) client: push and pull of
//! OCI image layouts, inspect, list-tags, delete, and Docker v2 schema 2 pushes.

// Test code: panicking on a failed step is the point (clippy's allow-*-in-tests only covers
// `#[test]` bodies, not the helpers they call).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{
    build_oci_layout, layout_blob_hashes, layout_manifest_digest, run_with_timeout, sha256_digest,
    OciImage, Server, DOCKER_LAYER_GZIP, DOCKER_MANIFEST_V2, OCI_MANIFEST,
};

const SKOPEO: &str = "/usr/bin/skopeo";
const SKOPEO_TIMEOUT: Duration = Duration::from_secs(180);

/// A temp dir with a permissive signature policy for skopeo.
struct Skopeo {
    dir: tempfile::TempDir,
    policy: PathBuf,
}

impl Skopeo {
    fn new() -> Skopeo {
        let path = which_skopeo();
        assert!(
            path.is_some(),
            "skopeo is not installed (looked for {SKOPEO} and on PATH): \
             run `apt-get install -y skopeo`"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let policy = dir.path().join("policy.json");
        std::fs::write(
            &policy,
            br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .expect("write policy.json");
        Skopeo { dir, policy }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `skopeo --policy P <args>`.
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(which_skopeo().expect("skopeo"));
        cmd.arg("--policy")
            .arg(&self.policy)
            .args(args)
            // No user/system registries.conf or auth file may interfere.
            .env("REGISTRY_AUTH_FILE", self.dir.path().join("auth.json"))
            .env("TMPDIR", self.dir.path());
        run_with_timeout(&mut cmd, SKOPEO_TIMEOUT)
    }

    /// Runs skopeo and panics (with its stderr and the server's log) unless it succeeds.
    fn ok(&self, server: &Server, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "skopeo {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn which_skopeo() -> Option<PathBuf> {
    if Path::new(SKOPEO).is_file() {
        return Some(PathBuf::from(SKOPEO));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("skopeo"))
            .find(|p| p.is_file())
    })
}

fn oci_ref(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

/// Asserts `layout` holds exactly the blobs of `image`, each byte-identical, and tags the
/// image's manifest as `tag`.
fn assert_layout_matches(layout: &Path, tag: &str, image: &OciImage) {
    assert_eq!(
        layout_manifest_digest(layout, Some(tag)),
        image.manifest_digest,
        "manifest digest in {}/index.json",
        layout.display()
    );
    let original = layout_blob_hashes(&image.dir);
    let pulled = layout_blob_hashes(layout);
    for digest in image.all_digests() {
        assert_eq!(
            original.get(&digest),
            Some(&digest),
            "original blob {digest}"
        );
        assert_eq!(
            pulled.get(&digest),
            Some(&digest),
            "pulled blob {digest} missing or different in {}",
            layout.display()
        );
    }
    assert_eq!(
        pulled, original,
        "pulled blob set differs from the original"
    );
}

fn inspect_json(skopeo: &Skopeo, server: &Server, reference: &str) -> serde_json::Value {
    let out = skopeo.ok(server, &["inspect", "--tls-verify=false", reference]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect output not JSON ({e}): {out}"))
}

#[test]
fn copy_oci_layout_push_pull_by_tag_and_digest() {
    let server = Server::start();
    let skopeo = Skopeo::new();
    let image = build_oci_layout(&skopeo.path("src"), "v1", 3);
    let host = server.host();
    let remote = format!("docker://{host}/e2e/three-layers");

    skopeo.ok(
        &server,
        &[
            "copy",
            "--dest-tls-verify=false",
            &oci_ref(&image.dir, "v1"),
            &format!("{remote}:v1"),
        ],
    );

    // The registry serves the very manifest bytes that were pushed.
    let resp = server.get_manifest("e2e/three-layers", "v1");
    assert_eq!(resp.status, 200, "GET manifest by tag: {}", resp.text());
    assert_eq!(resp.body, image.manifest, "served manifest differs");
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(image.manifest_digest.as_str())
    );
    assert_eq!(
        resp.header("content-type")
            .map(|c| c.split(';').next().unwrap_or("").trim()),
        Some(OCI_MANIFEST)
    );
    for layer in &image.layers {
        let blob = server.request(
            "GET",
            &format!("/v2/e2e/three-layers/blobs/{}", layer.digest),
            &[],
            None,
        );
        assert_eq!(blob.status, 200, "GET blob {}", layer.digest);
        assert_eq!(sha256_digest(&blob.body), layer.digest);
    }

    // Pull back by tag.
    let by_tag = skopeo.path("by-tag");
    skopeo.ok(
        &server,
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("{remote}:v1"),
            &oci_ref(&by_tag, "v1"),
        ],
    );
    assert_layout_matches(&by_tag, "v1", &image);

    // Pull back by digest.
    let by_digest = skopeo.path("by-digest");
    skopeo.ok(
        &server,
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("{remote}@{}", image.manifest_digest),
            &oci_ref(&by_digest, "pulled"),
        ],
    );
    assert_layout_matches(&by_digest, "pulled", &image);
}

#[test]
fn inspect_list_tags_and_delete() {
    let server = Server::start();
    let skopeo = Skopeo::new();
    let host = server.host();
    let repo = "e2e/tags";
    let remote = format!("docker://{host}/{repo}");

    let a = build_oci_layout(&skopeo.path("a"), "a", 2);
    let b = build_oci_layout(&skopeo.path("b"), "b", 1);
    for tag in ["v1", "v2"] {
        skopeo.ok(
            &server,
            &[
                "copy",
                "--dest-tls-verify=false",
                &oci_ref(&a.dir, "a"),
                &format!("{remote}:{tag}"),
            ],
        );
    }
    skopeo.ok(
        &server,
        &[
            "copy",
            "--dest-tls-verify=false",
            &oci_ref(&b.dir, "b"),
            &format!("{remote}:other"),
        ],
    );

    // inspect: digest and layers.
    for tag in ["v1", "v2"] {
        let info = inspect_json(&skopeo, &server, &format!("{remote}:{tag}"));
        assert_eq!(
            info["Digest"],
            a.manifest_digest.as_str(),
            "inspect {tag}: {info}"
        );
        let layers: Vec<&str> = info["Layers"]
            .as_array()
            .unwrap_or_else(|| panic!("no Layers in {info}"))
            .iter()
            .map(|l| l.as_str().expect("layer digest"))
            .collect();
        let expected: Vec<&str> = a.layers.iter().map(|l| l.digest.as_str()).collect();
        assert_eq!(layers, expected, "inspect {tag}: {info}");
        assert_eq!(info["Architecture"], "amd64");
        assert_eq!(info["Os"], "linux");
    }
    let info = inspect_json(&skopeo, &server, &format!("{remote}@{}", b.manifest_digest));
    assert_eq!(info["Digest"], b.manifest_digest.as_str(), "{info}");

    // inspect --raw returns the exact manifest; --config the exact config.
    let raw = skopeo.ok(
        &server,
        &[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("{remote}:v1"),
        ],
    );
    assert_eq!(raw.as_bytes(), a.manifest.as_slice(), "inspect --raw");
    let config = skopeo.ok(
        &server,
        &[
            "inspect",
            "--tls-verify=false",
            "--config",
            "--raw",
            &format!("{remote}:v1"),
        ],
    );
    assert_eq!(
        config.as_bytes(),
        a.config.as_slice(),
        "inspect --config --raw"
    );

    // list-tags.
    let tags_of = |skopeo: &Skopeo| -> Vec<String> {
        let out = skopeo.ok(&server, &["list-tags", "--tls-verify=false", &remote]);
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("list-tags output not JSON ({e}): {out}"));
        let mut tags: Vec<String> = v["Tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| t.as_str().expect("tag").to_string())
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        tags
    };
    assert_eq!(tags_of(&skopeo), ["other", "v1", "v2"]);

    // Delete by tag (skopeo resolves the tag and deletes the manifest by digest).
    skopeo.ok(
        &server,
        &["delete", "--tls-verify=false", &format!("{remote}:other")],
    );
    let out = skopeo.run(&["inspect", "--tls-verify=false", &format!("{remote}:other")]);
    assert!(
        !out.status.success(),
        "inspect after delete succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    for reference in ["other", b.manifest_digest.as_str()] {
        let resp = server.get_manifest(repo, reference);
        assert_eq!(
            resp.status,
            404,
            "GET manifest {reference} after delete: {}",
            resp.text()
        );
    }
    // The other image is untouched.
    let info = inspect_json(&skopeo, &server, &format!("{remote}:v1"));
    assert_eq!(info["Digest"], a.manifest_digest.as_str());
    assert_eq!(tags_of(&skopeo), ["v1", "v2"]);

    // Delete by digest: both tags of that manifest are gone.
    skopeo.ok(
        &server,
        &[
            "delete",
            "--tls-verify=false",
            &format!("{remote}@{}", a.manifest_digest),
        ],
    );
    for reference in ["v1", "v2", a.manifest_digest.as_str()] {
        let target = if reference.starts_with("sha256:") {
            format!("{remote}@{reference}")
        } else {
            format!("{remote}:{reference}")
        };
        let out = skopeo.run(&["inspect", "--tls-verify=false", &target]);
        assert!(
            !out.status.success(),
            "inspect {target} after delete succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let resp = server.get_manifest(repo, reference);
        assert_eq!(
            resp.status,
            404,
            "GET manifest {reference} after delete: {}",
            resp.text()
        );
    }
    assert!(tags_of(&skopeo).is_empty(), "tags left after deleting all");
}

#[test]
fn docker_v2s2_push_and_pull() {
    let server = Server::start();
    let skopeo = Skopeo::new();
    let image = build_oci_layout(&skopeo.path("src"), "latest", 2);
    let host = server.host();
    let repo = "e2e/docker";
    let remote = format!("docker://{host}/{repo}:latest");

    skopeo.ok(
        &server,
        &[
            "copy",
            "--format",
            "v2s2",
            "--dest-tls-verify=false",
            &oci_ref(&image.dir, "latest"),
            &remote,
        ],
    );

    // The registry holds a Docker v2 schema 2 manifest over the same config and layers.
    let resp = server.get_manifest(repo, "latest");
    assert_eq!(resp.status, 200, "GET manifest: {}", resp.text());
    assert_eq!(
        resp.header("content-type")
            .map(|c| c.split(';').next().unwrap_or("").trim()),
        Some(DOCKER_MANIFEST_V2),
        "content type"
    );
    let digest = sha256_digest(&resp.body);
    assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));
    let manifest: serde_json::Value = serde_json::from_slice(&resp.body).expect("manifest JSON");
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST_V2, "{manifest}");
    assert_eq!(manifest["config"]["digest"], image.config_digest.as_str());
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), image.layers.len());
    for (got, want) in layers.iter().zip(&image.layers) {
        assert_eq!(got["digest"], want.digest.as_str());
        assert_eq!(got["mediaType"], DOCKER_LAYER_GZIP);
    }

    let info = inspect_json(&skopeo, &server, &remote);
    assert_eq!(info["Digest"], digest.as_str(), "{info}");

    // Pull into a dir: layout (keeps the manifest as served).
    let dir = skopeo.path("pulled-dir");
    skopeo.ok(
        &server,
        &[
            "copy",
            "--src-tls-verify=false",
            &remote,
            &format!("dir:{}", dir.display()),
        ],
    );
    let pulled_manifest = std::fs::read(dir.join("manifest.json")).expect("manifest.json");
    assert_eq!(pulled_manifest, resp.body, "dir: manifest");
    let blob_file = |d: &str| dir.join(d.strip_prefix("sha256:").expect("sha256"));
    let config = std::fs::read(blob_file(&image.config_digest)).expect("config blob");
    assert_eq!(config, image.config, "config bytes");
    for layer in &image.layers {
        let data = std::fs::read(blob_file(&layer.digest)).expect("layer blob");
        assert_eq!(sha256_digest(&data), layer.digest, "layer bytes");
    }

    // Pull by digest into an OCI layout. skopeo converts the manifest back to OCI and, in
    // doing so, re-serialises the config (containers/image behaviour, not the registry's):
    // the layers stay byte-identical, the config keeps its diff_ids.
    let oci = skopeo.path("pulled-oci");
    skopeo.ok(
        &server,
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{host}/{repo}@{digest}"),
            &oci_ref(&oci, "latest"),
        ],
    );
    let pulled = layout_blob_hashes(&oci);
    for l in &image.layers {
        assert_eq!(
            pulled.get(&l.digest),
            Some(&l.digest),
            "layer {} in the pulled OCI layout",
            l.digest
        );
    }
    let blob = |d: &str| {
        std::fs::read(
            oci.join("blobs/sha256")
                .join(d.strip_prefix("sha256:").expect("sha256")),
        )
        .unwrap_or_else(|e| panic!("blob {d}: {e}"))
    };
    let oci_manifest: serde_json::Value =
        serde_json::from_slice(&blob(&layout_manifest_digest(&oci, Some("latest"))))
            .expect("pulled manifest JSON");
    assert_eq!(oci_manifest["mediaType"], OCI_MANIFEST, "{oci_manifest}");
    let config_digest = oci_manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let pulled_config: serde_json::Value =
        serde_json::from_slice(&blob(config_digest)).expect("pulled config JSON");
    let original_config: serde_json::Value =
        serde_json::from_slice(&image.config).expect("original config JSON");
    assert_eq!(pulled_config["rootfs"], original_config["rootfs"]);
}
