//! The access log: one line per request, in text and in JSON, with method, path, status,
//! bytes both ways, duration, user, instance and the location that served a blob; never a
//! password, a token or an `Authorization` value, and user-supplied text escaped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use base64::Engine as _;
use http_body_util::BodyExt;
use quay_core::auth::TokenKey;
use quay_core::{LocationId, Registry, RegistryConfig, StorageEngine};
use quay_http::auth::AuthConfig;
use quay_http::users::{StaticUsers, StaticUsersConfig};
use quay_storage::{OpendalStorage, SqlMetadataStore};
use sha2::Digest as _;
use tower::ServiceExt;

const PASSWORD: &str = "correct-horse-battery-staple";

/// Everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

struct Fixture {
    app: axum::Router,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let store = SqlMetadataStore::connect(&url).await.unwrap();
    let local: LocationId = "local".parse().unwrap();
    let mut locations: BTreeMap<LocationId, Arc<dyn StorageEngine>> = BTreeMap::new();
    locations.insert(
        local.clone(),
        Arc::new(OpendalStorage::fs(&dir.path().join("storage"), "local").unwrap()),
    );
    let registry =
        Registry::new(Arc::new(store), locations, RegistryConfig::new(vec![local])).unwrap();
    let mut users = StaticUsersConfig::default();
    users
        .users
        .insert("alice".into(), bcrypt::hash(PASSWORD, 4).unwrap());
    let users = Arc::new(StaticUsers::new(users).unwrap());
    let auth = AuthConfig::new(users, TokenKey::new(b"a-token-key-of-the-test"), "test");
    let quay = quay_http::Quay::builder(registry)
        .auth(Arc::new(auth))
        .instance("test-instance-1")
        .build();
    Fixture {
        app: quay.router(),
        _dir: dir,
    }
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let mut req = axum::http::Request::builder().method(method).uri(path);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if !body.is_empty() {
        req = req.header("content-length", body.len());
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, bytes)
}

/// Requests of every kind: an anonymous one refused, a token fetched with Basic credentials, a
/// push and a pull with the token, and a path with characters that need escaping. Returns the
/// token and the blob's size.
async fn traffic(app: &axum::Router) -> (String, usize) {
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("alice:{PASSWORD}"))
    );
    assert_eq!(call(app, "GET", "/v2/", None, vec![]).await.0, 401);
    let (status, body) = call(
        app,
        "GET",
        "/v2/auth?service=test&scope=repository:alice/app:pull,push",
        Some(&basic),
        vec![],
    )
    .await;
    assert_eq!(status, 200);
    let token: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let blob = vec![42u8; 5000];
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&blob)));
    let (status, _) = call(
        app,
        "POST",
        &format!("/v2/alice/app/blobs/uploads/?digest={digest}"),
        Some(&bearer),
        blob.clone(),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = call(
        app,
        "GET",
        &format!("/v2/alice/app/blobs/{digest}"),
        Some(&bearer),
        vec![],
    )
    .await;
    assert_eq!((status, body.len()), (200, blob.len()));
    // A path a client made up to forge a line: quotes survive percent-decoding nowhere, and
    // the logged path is escaped.
    call(
        app,
        "GET",
        "/v2/alice/%22x%0Ay%22/tags/list",
        Some(&basic),
        vec![],
    )
    .await;
    (token, blob.len())
}

fn assert_no_secret(log: &str, token: &str) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("alice:{PASSWORD}"));
    for secret in [PASSWORD, token, encoded.as_str(), "Bearer ", "Basic "] {
        assert!(!log.contains(secret), "the log holds {secret:?}:\n{log}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn text_lines_name_each_request_and_hold_no_secret() {
    let f = fixture().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (token, size) = traffic(&f.app).await;
    let log = captured.text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("quay_http::access"))
        .collect();
    assert_eq!(lines.len(), 5, "one line per request:\n{log}");
    assert!(
        lines[0].contains(r#"method=GET path="/v2/" status=401"#),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(r#"user="-""#), "{}", lines[0]);
    assert!(lines[1].contains("status=200") && lines[1].contains(r#"user="alice""#));
    let push = lines[2];
    assert!(
        push.contains("method=POST") && push.contains("status=201"),
        "{push}"
    );
    assert!(push.contains(&format!("bytes_in={size}")), "{push}");
    let pull = lines[3];
    assert!(pull.contains(&format!("bytes_out={size}")), "{pull}");
    assert!(pull.contains(r#"location="local""#), "{pull}");
    for line in &lines {
        assert!(line.contains("instance=test-instance-1"), "{line}");
        assert!(line.contains("duration_ms="), "{line}");
        assert!(line.contains("complete=true"), "{line}");
    }
    assert!(
        lines[4].contains(r#"path="/v2/alice/%22x%0Ay%22/tags/list""#),
        "{}",
        lines[4]
    );
    assert_no_secret(&log, &token);
}

#[tokio::test(flavor = "current_thread")]
async fn json_lines_carry_the_same_fields_and_no_secret() {
    let f = fixture().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (token, size) = traffic(&f.app).await;
    let log = captured.text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|v: &serde_json::Value| v["target"] == "quay_http::access")
        .collect();
    assert_eq!(lines.len(), 5, "one line per request:\n{log}");
    let fields: Vec<&serde_json::Value> = lines.iter().map(|l| &l["fields"]).collect();
    assert_eq!(fields[0]["status"], 401);
    assert_eq!(fields[0]["path"], r#""/v2/""#);
    assert_eq!(fields[1]["user"], r#""alice""#);
    assert_eq!(fields[2]["method"], "POST");
    assert_eq!(fields[2]["bytes_in"], size as u64);
    assert_eq!(fields[3]["bytes_out"], size as u64);
    assert_eq!(fields[3]["location"], r#""local""#);
    for f in &fields {
        assert_eq!(f["instance"], "test-instance-1");
        assert!(f["duration_ms"].is_u64(), "{f}");
        assert_eq!(f["message"], "request");
    }
    assert_no_secret(&log, &token);
}
