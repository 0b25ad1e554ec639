//! Locations built from Quay's configuration: every driver builds offline with the right
//! capabilities, and Quay's geo-replication example writes to and reads from loopback S3
//! servers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use quay_core::config::{DriverConfig, QuayConfig};
use quay_core::{ErrorKind, LocationId};
use quay_storage::build_location;

const GEOREP_GCS: &str = include_str!("../../examples/config/georep-gcs.yaml");

const ALL_DRIVERS: &str = r#"
DISTRIBUTED_STORAGE_CONFIG:
  local: [LocalStorage, {storage_path: /var/lib/quay}]
  memory: [MemoryStorage, {}]
  aws:
    - S3Storage
    - s3_bucket: quay-us
      storage_path: /registry
      s3_access_key: AKIAEXAMPLE
      s3_secret_key: aws-secret-value
      s3_region: us-west-2
  minio:
    - S3Storage
    - {s3_bucket: quay, s3_access_key: minio, s3_secret_key: minio-secret-value, host: minio.internal, port: 9000}
  rados:
    - RadosGWStorage
    - {hostname: rgw.internal, is_secure: false, port: 7480, access_key: rgw, secret_key: rgw-secret-value, bucket_name: quay, storage_path: /datastorage/registry}
  rhocs:
    - RHOCSStorage
    - {hostname: s3.openshift-storage.svc, port: 443, is_secure: true, access_key: odf, secret_key: odf-secret-value, bucket_name: quay-datastore, storage_path: /datastorage/registry}
  ibm:
    - IBMCloudStorage
    - {hostname: s3.us.cloud-object-storage.appdomain.cloud, is_secure: true, port: 443, access_key: ibm, secret_key: ibm-secret-value, bucket_name: quay, storage_path: /datastorage/registry}
  gcs:
    - GoogleCloudStorage
    - {access_key: GOOGEXAMPLE, secret_key: gcs-secret-value, bucket_name: quay-gcs, storage_path: /quaydata}
  azure:
    - AzureStorage
    - {azure_container: quay, azure_account_name: quayaccount, azure_account_key: c2VjcmV0LWF6dXJlLWtleQ==, storage_path: /quaydata}
  azure_sas:
    - AzureStorage
    - {azure_container: quay, azure_account_name: quayaccount, sas_token: "?sv=2021&sig=sas-secret-value", endpoint_url: "http://127.0.0.1:10000/quayaccount"}
  swift:
    - SwiftStorage
    - swift_container: quay
      storage_path: /datastorage/registry
      auth_url: https://keystone.internal/v3
      auth_version: 3
      swift_user: quay
      swift_password: swift-secret-value
      os_options: {tenant_id: abc, user_domain_name: Default}
      swift_storage_url: https://swift.internal/v1/AUTH_quay
      swift_auth_token: swift-token-value
      temp_url_key: swift-tempurl-value
"#;

#[test]
fn quay_georeplication_example_builds_offline() {
    let c = QuayConfig::from_yaml(GEOREP_GCS, None).unwrap();
    for (id, driver) in &c.locations {
        let engine = build_location(id, driver).unwrap();
        assert!(engine.capabilities().presign && engine.capabilities().copy);
    }
}

/// The example file with each location's `endpoint_url` pointed at its own loopback S3 server
/// (started with the file's keys): a blob written through `usstorage` lands in the us bucket,
/// under `storage_path`, and reads back.
#[tokio::test]
async fn georeplication_example_on_loopback_s3_servers_writes_and_reads() {
    use futures::StreamExt;
    use quay_storage::testkit::s3::S3TestServer;

    let mut doc: serde_yaml::Value = serde_yaml::from_str(GEOREP_GCS).unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut servers = Vec::new();
    for (dir, id) in dirs.iter().zip(["usstorage", "eustorage"]) {
        let params = &mut doc["DISTRIBUTED_STORAGE_CONFIG"][id][1];
        let server = S3TestServer::builder(dir.path())
            .keys(
                params["access_key"].as_str().unwrap(),
                params["secret_key"].as_str().unwrap(),
            )
            .bucket(params["bucket_name"].as_str().unwrap())
            .start()
            .unwrap();
        params["endpoint_url"] = server.endpoint().into();
        servers.push(server);
    }
    let text = serde_yaml::to_string(&doc).unwrap();
    let c = QuayConfig::from_yaml(&text, None).unwrap();
    let us: LocationId = "usstorage".parse().unwrap();
    let engine = build_location(&us, &c.locations[&us]).unwrap();
    let blob = bytes::Bytes::from_static(b"a layer");
    let path = "sha256/ab/abcdef";
    let data = futures::stream::iter([Ok(blob.clone())]);
    assert_eq!(engine.write(path, Box::pin(data)).await.unwrap(), 7);
    let mut read = engine.read(path, None).await.unwrap();
    let mut back = Vec::new();
    while let Some(chunk) = read.next().await {
        back.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(back, blob);
    let us_file = dirs[0]
        .path()
        .join("georep-test-bucket-0/quaydata")
        .join(path);
    assert_eq!(std::fs::read(us_file).unwrap(), blob);
    assert!(!dirs[1]
        .path()
        .join("georep-test-bucket-1/quaydata")
        .exists());
    let eu: LocationId = "eustorage".parse().unwrap();
    let eu_engine = build_location(&eu, &c.locations[&eu]).unwrap();
    assert_eq!(
        eu_engine.stat(path).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // A presigned URL of the us location serves the blob to a plain HTTP client.
    let url = engine
        .presign_read(path, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        quay_storage::testkit::s3::http_get(&url).await.unwrap(),
        blob
    );
}

/// Every object-store location builds without contacting its service, and declares presigned
/// reads only where they are safe to hand out.
#[test]
fn object_store_locations_build_offline_with_their_capabilities() {
    let c = QuayConfig::from_yaml(ALL_DRIVERS, None).unwrap();
    for (id, config) in c.locations.iter().filter(|(id, _)| id.as_str() != "local") {
        let engine = build_location(id, config).unwrap();
        let caps = engine.capabilities();
        let presign = matches!(config, DriverConfig::S3(_) | DriverConfig::Swift(_));
        assert_eq!(caps.presign, presign, "{id}: presign");
        assert_eq!(
            caps.copy,
            !matches!(config, DriverConfig::Memory),
            "{id}: copy"
        );
        assert!(
            !format!("{engine:?}").contains("secret"),
            "{id}: {engine:?}"
        );
    }
}
