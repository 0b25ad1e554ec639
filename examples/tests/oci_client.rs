//! End-to-end tests of `quay-server` with the `oci-client` crate over plain HTTP: push an
//! image of two gzip'd tar layers and a config, pull it back byte for byte, read the
//! manifest and the tag list.

// Test code: panicking on a failed step is the point (clippy's allow-*-in-tests only covers
// `#[test]` bodies, not the helpers they call).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{
    OciManifest, IMAGE_CONFIG_MEDIA_TYPE, IMAGE_LAYER_GZIP_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use common::{make_config, make_layer, sha256_digest, Layer, Server};

fn client(monolithic: bool) -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        use_monolithic_push: monolithic,
        ..Default::default()
    })
}

fn reference(server: &Server, repo: &str, tag: &str) -> Reference {
    format!("{}/{repo}:{tag}", server.host())
        .parse()
        .unwrap_or_else(|e| panic!("bad reference: {e}"))
}

/// Pushes two layers and a config with `client`, then pulls and checks everything.
async fn push_pull_roundtrip(monolithic: bool) {
    let server = Server::start();
    let client = client(monolithic);
    let auth = RegistryAuth::Anonymous;
    let repo = "e2e/oci-client";
    let image = reference(&server, repo, "v1");

    let layers: Vec<Layer> = vec![make_layer(1_500_000), make_layer(32 * 1024)];
    let config_bytes = make_config(&layers);
    let image_layers: Vec<ImageLayer> = layers
        .iter()
        .map(|l| ImageLayer::oci_v1_gzip(l.gz.clone(), None))
        .collect();
    let config = Config::oci_v1(config_bytes.clone(), None);

    let pushed = client
        .push(&image, &image_layers, config, &auth, None)
        .await
        .unwrap_or_else(|e| panic!("push failed: {e}; server log:\n{}", server.log()));
    assert!(
        pushed.manifest_url.contains(repo),
        "manifest url {}",
        pushed.manifest_url
    );

    // Every blob is present.
    for l in &layers {
        assert!(
            client
                .blob_exists(&image, &l.digest)
                .await
                .expect("HEAD blob"),
            "blob {} missing",
            l.digest
        );
    }
    assert!(client
        .blob_exists(&image, &sha256_digest(&config_bytes))
        .await
        .expect("HEAD config"));
    assert!(!client
        .blob_exists(&image, &sha256_digest(b"never pushed"))
        .await
        .expect("HEAD missing blob"));

    // Pull back and compare byte for byte.
    let pulled = client
        .pull(&image, &auth, vec![IMAGE_LAYER_GZIP_MEDIA_TYPE])
        .await
        .unwrap_or_else(|e| panic!("pull failed: {e}; server log:\n{}", server.log()));
    // `Client::pull` downloads layers concurrently (`buffer_unordered`), so `pulled.layers`
    // need not be in manifest order: match them by digest.
    assert_eq!(pulled.layers.len(), 2);
    for want in &layers {
        let got = pulled
            .layers
            .iter()
            .find(|l| l.sha256_digest() == want.digest)
            .unwrap_or_else(|| {
                let got: Vec<String> = pulled.layers.iter().map(|l| l.sha256_digest()).collect();
                panic!("layer {} not pulled intact; pulled {got:?}", want.digest)
            });
        assert_eq!(got.media_type, IMAGE_LAYER_GZIP_MEDIA_TYPE);
        assert!(
            got.data.as_ref() == want.gz.as_slice(),
            "layer {} bytes differ",
            want.digest
        );
    }
    assert!(
        pulled.config.data.as_ref() == config_bytes.as_slice(),
        "config differs: pulled {}",
        String::from_utf8_lossy(&pulled.config.data)
    );
    assert_eq!(pulled.config.media_type, IMAGE_CONFIG_MEDIA_TYPE);
    let manifest = pulled.manifest.expect("pulled manifest");
    assert_eq!(manifest.config.digest, sha256_digest(&config_bytes));
    let layer_digests: Vec<&str> = manifest.layers.iter().map(|d| d.digest.as_str()).collect();
    let expected: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(layer_digests, expected);
    let digest = pulled.digest.expect("pulled digest");

    // The raw manifest hashes to the digest the registry reports.
    let (raw, raw_digest) = client
        .pull_manifest_raw(&image, &auth, &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .expect("pull_manifest_raw");
    assert_eq!(raw_digest, digest);
    assert_eq!(sha256_digest(&raw), digest);

    // pull_manifest by tag and by digest.
    let (m, d) = client
        .pull_manifest(&image, &auth)
        .await
        .expect("pull_manifest by tag");
    assert_eq!(d, digest);
    match m {
        OciManifest::Image(m) => assert_eq!(m.layers.len(), 2),
        other => panic!("expected an image manifest, got {other:?}"),
    }
    let by_digest: Reference = format!("{}/{repo}@{digest}", server.host())
        .parse()
        .expect("digest reference");
    let (_, d2) = client
        .pull_manifest(&by_digest, &auth)
        .await
        .expect("pull_manifest by digest");
    assert_eq!(d2, digest);
    let fetched = client
        .fetch_manifest_digest(&image, &auth)
        .await
        .expect("fetch_manifest_digest");
    assert_eq!(fetched, digest);

    // A second tag of the same manifest; list_tags shows both.
    let image_v2 = reference(&server, repo, "v2");
    client
        .push_manifest_raw(
            &image_v2,
            raw.to_vec(),
            OCI_IMAGE_MEDIA_TYPE.parse().expect("mime"),
        )
        .await
        .unwrap_or_else(|e| panic!("push manifest v2: {e}; server log:\n{}", server.log()));
    let tags = client
        .list_tags(&image, &auth, None, None)
        .await
        .expect("list_tags");
    assert_eq!(tags.name, repo);
    let mut names = tags.tags.clone();
    names.sort();
    assert_eq!(names, ["v1", "v2"]);
    let page = client
        .list_tags(&image, &auth, Some(1), None)
        .await
        .expect("list_tags n=1");
    assert_eq!(page.tags, ["v1"]);
    let page = client
        .list_tags(&image, &auth, Some(1), Some("v1"))
        .await
        .expect("list_tags n=1 last=v1");
    assert_eq!(page.tags, ["v2"]);

    // Pulling an unknown tag fails.
    let missing = reference(&server, repo, "missing");
    assert!(client.pull_manifest(&missing, &auth).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pull_two_layers_chunked() {
    push_pull_roundtrip(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pull_two_layers_monolithic() {
    push_pull_roundtrip(true).await;
}
