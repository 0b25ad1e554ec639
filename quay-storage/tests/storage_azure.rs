//! The storage conformance suite on Azure Blob Storage, served by Azurite (npm `azurite`,
//! installed at test time when missing; without Node.js these tests fail, they never skip).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use bytes::Bytes;
use futures::stream;
use quay_core::config::{AzureCredential, DriverConfig, Secret};
use quay_core::{ErrorKind, LocationId};
use quay_storage::build_location;
use quay_storage::testkit::azure::{AzureFactory, AzuriteServer};

quay_storage::storage_conformance_tests!(AzureFactory::start().await.expect("Azurite"));

#[tokio::test]
async fn azure_withholds_presigned_urls_and_copies_server_side() {
    let factory = AzureFactory::start().await.unwrap();
    let id: LocationId = "eu".parse().unwrap();
    let config = DriverConfig::Azure(factory.server().azure_settings("conformance", "caps"));
    let engine = build_location(&id, &config).unwrap();
    let caps = engine.capabilities();
    // OpenDAL's azblob URLs carry write rights: never handed out.
    assert!(!caps.presign);
    assert!(caps.copy);
    let err = engine
        .presign_read("x", std::time::Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
}

#[tokio::test]
async fn probe_fails_when_the_container_is_missing() {
    let server = AzuriteServer::shared().unwrap();
    let id: LocationId = "eu".parse().unwrap();
    let missing = DriverConfig::Azure(server.azure_settings("no-such-container", ""));
    let engine = build_location(&id, &missing).unwrap();
    assert!(engine.probe().await.is_err());
}

#[tokio::test]
async fn wrong_account_key_is_refused_without_showing_it() {
    let factory = AzureFactory::start().await.unwrap();
    let id: LocationId = "eu".parse().unwrap();
    let mut settings = factory.server().azure_settings("conformance", "");
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
    settings.credential = AzureCredential::AccountKey(Secret::new(wrong));
    let engine = build_location(&id, &DriverConfig::Azure(settings)).unwrap();
    let data = stream::iter([Ok(Bytes::from_static(b"x"))]);
    let err = engine.write("x", Box::pin(data)).await.unwrap_err();
    assert!(!format!("{err:?} {err}").contains(wrong), "{err:?}");
}

#[tokio::test]
async fn sas_token_never_shows_in_errors() {
    let factory = AzureFactory::start().await.unwrap();
    let id: LocationId = "eu".parse().unwrap();
    let mut settings = factory.server().azure_settings("conformance", "");
    let sig = "c2VjcmV0LXNhcy1zaWduYXR1cmU";
    let sas = format!("sv=2021-12-02&ss=b&srt=sco&sp=rl&se=2030-01-01T00:00:00Z&sig={sig}%3D");
    settings.credential = AzureCredential::SasToken(Secret::new(sas));
    let engine = build_location(&id, &DriverConfig::Azure(settings)).unwrap();
    let err = engine.stat("some/blob").await.unwrap_err();
    let shown = format!("{err:?} {err}");
    assert!(!shown.contains(sig), "{shown}");
    let data = stream::iter([Ok(Bytes::from_static(b"x"))]);
    let err = engine.write("x", Box::pin(data)).await.unwrap_err();
    let shown = format!("{err:?} {err}");
    assert!(!shown.contains(sig), "{shown}");
}
