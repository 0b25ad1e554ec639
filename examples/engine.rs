//! The engine as a library, without HTTP, on memory backends: the calls a downstream service
//! makes. Run with `cargo run -p quay-examples --example engine`.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use quay_core::registry::BlobBody;
use quay_core::{ByteStream, Digest, Reference, Registry, RepositoryName};
use quay_storage::layers::TimeoutLayer;
use quay_storage::{OpendalStorage, SqlMetadataStore};

fn stream_of(data: &'static [u8]) -> ByteStream {
    // Two chunks, as a network body would arrive.
    let (a, b) = data.split_at(data.len() / 2);
    Box::pin(futures::stream::iter([
        Ok(Bytes::from_static(a)),
        Ok(Bytes::from_static(b)),
    ]))
}

#[tokio::main]
async fn main() -> quay_core::Result<()> {
    // 1. The engine: an in-memory SQLite metadata store and one in-memory location, every
    //    storage call bounded by 30 s.
    let metadata = SqlMetadataStore::connect("sqlite::memory:").await?;
    let timeout = std::time::Duration::from_secs(30);
    let registry = Registry::builder(Arc::new(metadata))
        .location(
            "memory".parse()?,
            Arc::new(OpendalStorage::memory("memory")?),
        )
        .layer(TimeoutLayer::new(timeout, timeout))
        .finish()?;

    // 2. Push a layer in two chunks, as a client would over PATCH, then finish with its digest.
    let repo: RepositoryName = "demo/app".parse()?;
    let layer: &'static [u8] = b"pretend this is a gzip'd tar layer";
    let layer_digest = Digest::sha256_of(layer);
    let session = registry.start_upload(&repo).await?;
    let status = registry
        .upload_chunk(&repo, &session.id, None, stream_of(layer))
        .await?;
    println!("upload {} holds {} bytes", status.id, status.size);
    registry
        .finish_upload(&repo, &session.id, &layer_digest, None)
        .await?;

    // 3. A config blob in one call, then a manifest referring to both, tagged `v1`.
    let config: &'static [u8] = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = registry
        .put_blob(&repo, &Digest::sha256_of(config), stream_of(config))
        .await?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer.len()}],
    })
    .to_string();
    let put = registry
        .put_manifest(
            &repo,
            &"v1".parse::<Reference>()?,
            None,
            Bytes::from(manifest),
        )
        .await?;
    println!("pushed {repo}:v1 as {}", put.digest);

    // 4. Read it back: tags, the manifest, and the layer from the closest location.
    let tags = registry.list_tags(&repo, None, 100).await?;
    println!("tags: {:?}", tags.tags);
    let got = registry.get_manifest(&repo, &"v1".parse()?).await?;
    println!(
        "manifest {} ({}, {} bytes)",
        got.digest,
        got.media_type,
        got.content.len()
    );
    let read = registry.read_blob(&repo, &layer_digest, None).await?;
    if let BlobBody::Stream {
        location,
        mut stream,
    } = read.body
    {
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        assert_eq!(bytes, layer);
        println!(
            "layer read back from {location}: {} bytes, digest verified",
            bytes.len()
        );
    }
    Ok(())
}
