use super::*;

const BASIC: &str = r#"
DISTRIBUTED_STORAGE_CONFIG:
  local_us:
    - LocalStorage
    - storage_path: /tmp/quay-us
  scratch:
    - MemoryStorage
    - {}
DISTRIBUTED_STORAGE_PREFERENCE: [local_us, scratch]
DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [local_us, scratch]
FEATURE_STORAGE_REPLICATION: true
DB_URI: postgresql://quay:secret@db/quay
SETUP_COMPLETE: true
REGISTRY_TITLE: Quay
"#;

#[test]
fn parses_local_and_memory() {
    let c = QuayConfig::from_yaml(BASIC, None).unwrap();
    assert_eq!(c.locations.len(), 2);
    assert_eq!(c.preference[0].as_str(), "local_us");
    assert!(c.replication);
    assert_eq!(c.db_uri.as_deref(), Some("postgres://quay:secret@db/quay"));
    assert_eq!(c.ignored_keys, vec!["REGISTRY_TITLE", "SETUP_COMPLETE"]);
    assert!(!format!("{c:?}").contains("secret"));
}

#[test]
fn environment_overrides_preference() {
    let c = QuayConfig::from_yaml(BASIC, Some(" scratch  local_us ")).unwrap();
    assert_eq!(c.preference[0].as_str(), "scratch");
    let err = QuayConfig::from_yaml(BASIC, Some("nowhere")).unwrap_err();
    assert!(err
        .message()
        .contains("QUAY_DISTRIBUTED_STORAGE_PREFERENCE"));
}

#[test]
fn reports_every_problem_with_its_key() {
    let text = r#"
DISTRIBUTED_STORAGE_CONFIG:
  a: [NoSuchDriver, {}]
  b: [LocalStorage, {}]
DISTRIBUTED_STORAGE_PREFERENCE: [c]
DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [d]
DISTRIBUTED_STORAGE_PREFERENCES: [a]
"#;
    let msg = QuayConfig::from_yaml(text, None).unwrap_err().to_string();
    for needle in [
        "DISTRIBUTED_STORAGE_CONFIG.a: unknown storage driver \"NoSuchDriver\"",
        "DISTRIBUTED_STORAGE_CONFIG.b.storage_path: LocalStorage requires storage_path",
        "DISTRIBUTED_STORAGE_PREFERENCE: names \"c\"",
        "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: names \"d\"",
        "DISTRIBUTED_STORAGE_PREFERENCES: unknown key; did you mean DISTRIBUTED_STORAGE_PREFERENCE?",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
    }
}

#[test]
fn empty_config_is_an_error() {
    assert!(QuayConfig::from_yaml("", None).is_err());
}

#[test]
fn edit_distance_basics() {
    assert_eq!(keys::edit_distance("DB_URL", "DB_URI"), 1);
    assert_eq!(keys::classify("DB_URL"), keys::KeyClass::Misspelt("DB_URI"));
    assert_eq!(keys::classify("DB_URI_FILE"), keys::KeyClass::QuayIgnored);
    assert_eq!(
        keys::classify("FEATURE_MAILING"),
        keys::KeyClass::QuayIgnored
    );
}

// Drivers.

/// The parameters of one location, parsed alone.
fn driver(yaml: &str) -> std::result::Result<DriverConfig, String> {
    let text = format!("DISTRIBUTED_STORAGE_CONFIG:\n  loc: {yaml}\n");
    QuayConfig::from_yaml(&text, None)
        .map(|c| c.locations.into_values().next().unwrap())
        .map_err(|e| e.to_string())
}

fn s3(yaml: &str) -> S3Settings {
    match driver(yaml).unwrap() {
        DriverConfig::S3(s) => s,
        other => panic!("not an S3 driver: {other:?}"),
    }
}

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
fn every_driver_parses() {
    let c = QuayConfig::from_yaml(ALL_DRIVERS, None).unwrap();
    let names: Vec<&str> = c.locations.values().map(|d| d.driver_name()).collect();
    for name in driver_names() {
        assert!(names.contains(&name), "{name} not covered by {names:?}");
    }
    assert_eq!(c.locations.len(), 11);
}

#[test]
fn secrets_never_show_in_debug_output() {
    let c = QuayConfig::from_yaml(ALL_DRIVERS, None).unwrap();
    let shown = format!("{c:?}");
    for secret in [
        "secret-value",
        "c2VjcmV0LWF6dXJlLWtleQ",
        "swift-token-value",
        "swift-tempurl-value",
    ] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
    assert!(shown.contains("<redacted>"));
    assert!(shown.contains("quay-us") && shown.contains("GoogleCloudStorage"));
}

#[test]
fn auth_and_connection_secrets_never_show_in_debug_output() {
    let hash = "$2y$05$abcdefghijklmnopqrstuuJ3vQ7y0X1cS8hNq2mL5pZkFjWb6eRtO";
    let yaml = format!(
        "DISTRIBUTED_STORAGE_CONFIG:\n  l: [LocalStorage, {{storage_path: /x}}]\n\
         DB_URI: postgresql://quay:db-password-77@db/quay\n\
         BUILDLOGS_REDIS: {{host: r, password: redis-password-77}}\n\
         QUAY_AUTH_USERS: {{alice: '{hash}'}}\n\
         QUAY_AUTH_TOKEN_KEY: token-key-0123456789abcdef\n\
         SECRET_KEY: quay-secret-key-0123456789\n"
    );
    let c = QuayConfig::from_yaml(&yaml, None).unwrap();
    assert!(c.auth.enabled());
    let shown = format!("{c:?}");
    for secret in [
        "db-password-77",
        "redis-password-77",
        hash,
        "token-key-0123456789abcdef",
        "quay-secret-key",
    ] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
    assert!(shown.contains("alice"));
}

#[test]
fn users_need_a_token_key_of_some_length() {
    let base = "DISTRIBUTED_STORAGE_CONFIG:\n  l: [LocalStorage, {storage_path: /x}]\n\
                QUAY_AUTH_USERS: {alice: '$2y$05$abcdefghijklmnopqrstuuJ3vQ7y0X1cS8hNq2mL5pZkFjWb6eRtO'}\n";
    let e = QuayConfig::from_yaml(base, None).unwrap_err().to_string();
    assert!(e.contains("QUAY_AUTH_TOKEN_KEY"), "{e}");
    let short = format!("{base}QUAY_AUTH_TOKEN_KEY: short\n");
    let e = QuayConfig::from_yaml(&short, None).unwrap_err().to_string();
    assert!(e.contains("shorter than 16"), "{e}");
    let quay_key = format!("{base}SECRET_KEY: a-quay-secret-key-of-length\n");
    assert!(QuayConfig::from_yaml(&quay_key, None).is_ok());
    let plain = "DISTRIBUTED_STORAGE_CONFIG:\n  l: [LocalStorage, {storage_path: /x}]\n\
                 QUAY_AUTH_USERS: {alice: hunter2}\nQUAY_AUTH_TOKEN_KEY: 0123456789abcdef0\n";
    let e = QuayConfig::from_yaml(plain, None).unwrap_err().to_string();
    assert!(
        e.contains("QUAY_AUTH_USERS.alice") && !e.contains("hunter2"),
        "{e}"
    );
}

#[test]
fn s3_storage_defaults_to_aws_virtual_hosted_in_us_east_1() {
    let s = s3("[S3Storage, {s3_bucket: b-1, s3_access_key: a, s3_secret_key: s}]");
    assert_eq!(s.endpoint, None);
    assert_eq!(s.region, DEFAULT_S3_REGION);
    assert!(s.virtual_host_style);
    assert_eq!(s.root, "");
    // A bucket with dots would not match AWS's wildcard certificate: path-style.
    let dotted = s3("[S3Storage, {s3_bucket: b.example, s3_access_key: a, s3_secret_key: s}]");
    assert!(!dotted.virtual_host_style);
}

#[test]
fn s3_storage_endpoint_from_endpoint_url_or_host_and_port() {
    let s = s3(
        "[S3Storage, {s3_bucket: b, s3_access_key: a, s3_secret_key: s, \
                endpoint_url: 'http://127.0.0.1:9000/', s3_region: eu-west-1}]",
    );
    assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(s.region, "eu-west-1");
    assert!(!s.virtual_host_style);
    let s = s3(
        "[S3Storage, {s3_bucket: b, s3_access_key: a, s3_secret_key: s, \
                host: minio.internal, port: 9000}]",
    );
    assert_eq!(s.endpoint.as_deref(), Some("https://minio.internal:9000"));
    let s = s3(
        "[S3Storage, {s3_bucket: b, s3_access_key: a, s3_secret_key: s, \
                host: 'http://minio.internal:9001', port: 9000}]",
    );
    assert_eq!(s.endpoint.as_deref(), Some("http://minio.internal:9001"));
}

#[test]
fn s3_compatible_drivers_build_their_endpoint_from_hostname() {
    let c = QuayConfig::from_yaml(ALL_DRIVERS, None).unwrap();
    let get = |id: &str| match &c.locations[&id.parse::<LocationId>().unwrap()] {
        DriverConfig::S3(s) => s.clone(),
        other => panic!("{other:?}"),
    };
    let rados = get("rados");
    assert_eq!(rados.endpoint.as_deref(), Some("http://rgw.internal:7480"));
    assert_eq!(rados.root, "/datastorage/registry");
    assert_eq!(rados.driver, "RadosGWStorage");
    assert!(!rados.virtual_host_style);
    assert_eq!(
        get("rhocs").endpoint.as_deref(),
        Some("https://s3.openshift-storage.svc:443")
    );
    let gcs = get("gcs");
    assert_eq!(gcs.endpoint.as_deref(), Some(GCS_ENDPOINT));
    assert_eq!(gcs.region, GCS_REGION);
    assert_eq!(
        (gcs.bucket.as_str(), gcs.root.as_str()),
        ("quay-gcs", "/quaydata")
    );
    // is_secure defaults to true.
    let s = s3("[RadosGWStorage, {hostname: rgw, access_key: a, secret_key: s, bucket_name: b}]");
    assert_eq!(s.endpoint.as_deref(), Some("https://rgw"));
}

#[test]
fn azure_and_swift_settings() {
    let c = QuayConfig::from_yaml(ALL_DRIVERS, None).unwrap();
    let loc = |id: &str| c.locations[&id.parse::<LocationId>().unwrap()].clone();
    let DriverConfig::Azure(azure) = loc("azure") else {
        panic!("not azure")
    };
    assert_eq!(azure.endpoint, "https://quayaccount.blob.core.windows.net");
    assert!(matches!(azure.credential, AzureCredential::AccountKey(_)));
    let DriverConfig::Azure(sas) = loc("azure_sas") else {
        panic!("not azure")
    };
    assert_eq!(sas.endpoint, "http://127.0.0.1:10000/quayaccount");
    match &sas.credential {
        AzureCredential::SasToken(t) => assert_eq!(t.expose(), "sv=2021&sig=sas-secret-value"),
        other => panic!("{other:?}"),
    }
    let DriverConfig::Swift(swift) = loc("swift") else {
        panic!("not swift")
    };
    assert_eq!(swift.storage_url, "https://swift.internal/v1/AUTH_quay");
    assert_eq!(swift.token.expose(), "swift-token-value");
    assert!(swift.temp_url_key.is_some());
}

/// Each bad location fails start-up with a message that names the key.
#[test]
fn each_bad_driver_configuration_names_its_key() {
    let cases: &[(&str, &str)] = &[
        ("[NoSuchStorage, {}]", "DISTRIBUTED_STORAGE_CONFIG.loc: unknown storage driver \"NoSuchStorage\""),
        ("S3Storage", "DISTRIBUTED_STORAGE_CONFIG.loc: must be a list"),
        ("[S3Storage, [a, b]]", "DISTRIBUTED_STORAGE_CONFIG.loc: parameters must be a mapping"),
        ("[S3Storage, {s3_access_key: a, s3_secret_key: s}]", "DISTRIBUTED_STORAGE_CONFIG.loc.s3_bucket: S3Storage requires s3_bucket"),
        ("[S3Storage, {s3_bucket: b, s3_secret_key: s}]", "DISTRIBUTED_STORAGE_CONFIG.loc.s3_access_key: S3Storage requires s3_access_key (this engine reads no credentials"),
        ("[S3Storage, {s3_bucket: b, s3_access_key: a, s3_secret_key: s, s3_bukket: c}]", "DISTRIBUTED_STORAGE_CONFIG.loc.s3_bukket: unknown parameter for S3Storage; it takes: s3_bucket"),
        ("[S3Storage, {s3_bucket: b, s3_access_key: a, s3_secret_key: s, host: h, port: abc}]", "DISTRIBUTED_STORAGE_CONFIG.loc.port: must be a port number from 1 to 65535"),
        ("[S3Storage, {s3_bucket: b, s3_access_key: a, s3_secret_key: s, host: h, port: 70000}]", "DISTRIBUTED_STORAGE_CONFIG.loc.port: must be a port number"),
        ("[S3Storage, {s3_bucket: b, s3_access_key: a, s3_secret_key: s, host: h, endpoint_url: 'http://e'}]", "DISTRIBUTED_STORAGE_CONFIG.loc.endpoint_url: set either endpoint_url or host"),
        ("[S3Storage, {s3_bucket: b, s3_access_key: a, s3_secret_key: s, port: 9000}]", "DISTRIBUTED_STORAGE_CONFIG.loc.port: is only used with host"),
        ("[S3Storage, {s3_bucket: b, s3_access_key: a, s3_secret_key: s, endpoint_url: minio:9000}]", "DISTRIBUTED_STORAGE_CONFIG.loc.endpoint_url: must be a URL starting with http:// or https://"),
        ("[S3Storage, {s3_bucket: b, s3_access_key: a, s3_secret_key: s, server_side_encryption: AES256}]", "DISTRIBUTED_STORAGE_CONFIG.loc.server_side_encryption: is a Quay parameter of S3Storage that this engine does not support"),
        ("[S3Storage, {s3_bucket: [x], s3_access_key: a, s3_secret_key: s}]", "DISTRIBUTED_STORAGE_CONFIG.loc.s3_bucket: must be a string"),
        ("[RadosGWStorage, {hostname: h, is_secure: 'yes', access_key: a, secret_key: s, bucket_name: b}]", "DISTRIBUTED_STORAGE_CONFIG.loc.is_secure: must be true or false"),
        ("[RHOCSStorage, {is_secure: true, access_key: a, secret_key: s, bucket_name: b}]", "DISTRIBUTED_STORAGE_CONFIG.loc.hostname: RHOCSStorage requires hostname"),
        ("[IBMCloudStorage, {hostname: h, access_key: a, bucket_name: b}]", "DISTRIBUTED_STORAGE_CONFIG.loc.secret_key: IBMCloudStorage requires secret_key"),
        ("[GoogleCloudStorage, {access_key: a, secret_key: s}]", "DISTRIBUTED_STORAGE_CONFIG.loc.bucket_name: GoogleCloudStorage requires bucket_name"),
        ("[GoogleCloudStorage, {access_key: a, secret_key: s, bucket_name: b, endpoint_url: 'ftp://x'}]", "DISTRIBUTED_STORAGE_CONFIG.loc.endpoint_url: must be a URL"),
        ("[AzureStorage, {azure_container: c, azure_account_name: n}]", "DISTRIBUTED_STORAGE_CONFIG.loc.azure_account_key: AzureStorage requires azure_account_key or sas_token"),
        ("[AzureStorage, {azure_container: c, azure_account_name: n, azure_account_key: a2V5, sas_token: t}]", "DISTRIBUTED_STORAGE_CONFIG.loc.sas_token: set either azure_account_key or sas_token, not both"),
        ("[AzureStorage, {azure_container: c, azure_account_name: n, azure_account_key: not-base64!}]", "DISTRIBUTED_STORAGE_CONFIG.loc.azure_account_key: must be base64"),
        ("[AzureStorage, {azure_account_name: n, sas_token: t}]", "DISTRIBUTED_STORAGE_CONFIG.loc.azure_container: AzureStorage requires azure_container"),
        ("[SwiftStorage, {swift_container: c, auth_url: 'https://k/v3', swift_user: u, swift_password: p}]", "DISTRIBUTED_STORAGE_CONFIG.loc.swift_auth_token: SwiftStorage requires swift_storage_url and swift_auth_token: this engine cannot log in to auth_url with swift_user/swift_password"),
        ("[SwiftStorage, {swift_container: c, swift_storage_url: 'https://s/v1/AUTH_a', swift_auth_token: t, os_options: x}]", "DISTRIBUTED_STORAGE_CONFIG.loc.os_options: must be a mapping"),
        ("[LocalStorage, {storage_path: /x, s3_bucket: b}]", "DISTRIBUTED_STORAGE_CONFIG.loc.s3_bucket: unknown parameter for LocalStorage; it takes: storage_path"),
        ("[MemoryStorage, {storage_path: /x}]", "DISTRIBUTED_STORAGE_CONFIG.loc.storage_path: unknown parameter for MemoryStorage; it takes: none"),
    ];
    for (yaml, needle) in cases {
        let msg = driver(yaml).unwrap_err();
        assert!(
            msg.contains(needle),
            "{yaml}: missing {needle:?} in:\n{msg}"
        );
    }
}

#[test]
fn errors_never_show_secret_values() {
    let msg = driver(
        "[AzureStorage, {azure_container: c, azure_account_name: n, \
         azure_account_key: 'secret value!', sas_token: also-secret}]",
    )
    .unwrap_err();
    assert!(
        !msg.contains("secret value") && !msg.contains("also-secret"),
        "{msg}"
    );
    let msg = driver("[S3Storage, {s3_bucket: b, s3_access_key: a, s3_secret_key: [s3cr3t]}]")
        .unwrap_err();
    assert!(msg.contains("s3_secret_key: must be a string") && !msg.contains("s3cr3t"));
}

#[test]
fn every_problem_of_a_location_is_reported_at_once() {
    let msg = driver("[S3Storage, {s3_region: 1, port: x, extra: 1}]").unwrap_err();
    for key in [
        "s3_bucket",
        "s3_access_key",
        "s3_secret_key",
        "port",
        "extra",
    ] {
        assert!(
            msg.contains(&format!("DISTRIBUTED_STORAGE_CONFIG.loc.{key}:")),
            "{key}: {msg}"
        );
    }
}

// Quay's documented geo-replication example.

const GEOREP_GCS: &str = include_str!("../../../examples/config/georep-gcs.yaml");

#[test]
fn quay_georeplication_example_parses_and_validates() {
    let c = QuayConfig::from_yaml(GEOREP_GCS, None).unwrap();
    let ids = |v: &[LocationId]| v.iter().map(|i| i.as_str().to_owned()).collect::<Vec<_>>();
    assert_eq!(ids(&c.preference), ["usstorage", "eustorage"]);
    assert_eq!(ids(&c.default_locations), ["usstorage", "eustorage"]);
    assert!(c.replication);
    assert!(c.ignored_keys.is_empty());
    for (id, bucket) in [
        ("usstorage", "georep-test-bucket-0"),
        ("eustorage", "georep-test-bucket-1"),
    ] {
        match &c.locations[&id.parse::<LocationId>().unwrap()] {
            DriverConfig::S3(s) => {
                assert_eq!(s.driver, "GoogleCloudStorage");
                assert_eq!(s.bucket, bucket);
                assert_eq!(s.root, "/quaydata");
                assert_eq!(s.endpoint.as_deref(), Some(GCS_ENDPOINT));
                assert_eq!(s.access_key, "GOOGQIMFB3ABCDEFGHIJKLMN");
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    assert!(!format!("{c:?}").contains("AYWfEaxX"));
    // Each region's instance runs the same file with its own preference.
    let eu = QuayConfig::from_yaml(GEOREP_GCS, Some("eustorage usstorage")).unwrap();
    assert_eq!(ids(&eu.preference), ["eustorage", "usstorage"]);
}

const TWO_REGION_LOCAL: &str = include_str!("../../../examples/config/two-region-local.yaml");

#[test]
fn log_format_is_text_unless_json_and_nothing_else() {
    let base = "DISTRIBUTED_STORAGE_CONFIG:\n  l: [MemoryStorage, {}]\n";
    let c = QuayConfig::from_yaml(base, None).unwrap();
    assert_eq!(c.log_format, LogFormat::Text);
    let c = QuayConfig::from_yaml(&format!("{base}QUAY_LOG_FORMAT: json\n"), None).unwrap();
    assert_eq!(c.log_format, LogFormat::Json);
    let e = QuayConfig::from_yaml(&format!("{base}QUAY_LOG_FORMAT: xml\n"), None).unwrap_err();
    assert!(e.to_string().contains("QUAY_LOG_FORMAT"), "{e}");
    let e = QuayConfig::from_yaml(&format!("{base}QUAY_LOG_FORMT: json\n"), None).unwrap_err();
    assert!(
        e.to_string().contains("did you mean QUAY_LOG_FORMAT"),
        "{e}"
    );
    assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
    assert!("JSON ".parse::<LogFormat>().is_err());
}

#[test]
fn two_region_local_example_parses_and_validates() {
    let us = QuayConfig::from_yaml(TWO_REGION_LOCAL, None).unwrap();
    let ids = |v: &[LocationId]| v.iter().map(|i| i.as_str().to_owned()).collect::<Vec<_>>();
    assert_eq!(ids(&us.default_locations), ["us", "eu"]);
    assert!(us.replication);
    assert!(us.ignored_keys.is_empty(), "{:?}", us.ignored_keys);
    let eu = QuayConfig::from_yaml(TWO_REGION_LOCAL, Some("eu us")).unwrap();
    assert_eq!(ids(&eu.preference), ["eu", "us"]);
}
