//! `GET /status` in-process: the catalog's access check (with a Basic challenge a browser
//! answers), the page's figures, and user-supplied text escaped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::{Backend, Server, Setup};
use quay_core::auth::TokenKey;
use quay_core::{JobKind, JobQueue, JobSpec};
use quay_http::auth::AuthConfig;
use quay_http::users::{StaticUsers, StaticUsersConfig};

fn auth() -> Arc<AuthConfig> {
    let mut config = StaticUsersConfig::default();
    config
        .users
        .insert("alice".into(), bcrypt::hash("pw", 4).unwrap());
    let users = Arc::new(StaticUsers::new(config).unwrap());
    Arc::new(AuthConfig::new(
        users,
        TokenKey::new(b"status-page-test-key"),
        "test",
    ))
}

async fn page(server: &Server, authorization: Option<&str>) -> reqwest::Response {
    let mut req = server.client.get(server.url("/status"));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_access_control_the_page_asks_what_the_catalog_asks() {
    let server = Server::start_setup(
        Backend::Sqlite,
        Setup {
            auth: Some(auth()),
            ..Default::default()
        },
    )
    .await;
    let resp = page(&server, None).await;
    assert_eq!(resp.status(), 401);
    let challenges: Vec<String> = resp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic ")),
        "a browser can answer: {challenges:?}"
    );
    assert!(
        challenges
            .iter()
            .any(|c| c.starts_with("Bearer ") && c.contains("registry:catalog:*")),
        "{challenges:?}"
    );
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:nope")
    );
    assert_eq!(page(&server, Some(&wrong)).await.status(), 401);
    let right = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:pw")
    );
    let resp = page(&server, Some(&right)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/html; charset=utf-8"
    );
    assert!(resp.text().await.unwrap().contains("Storage locations"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_each_location_and_escapes_what_it_did_not_write() {
    let server = Server::start(Backend::Postgres).await;
    server.push_blob("team/app", b"some bytes").await;
    // A dead-lettered job whose error text is markup (one attempt and it is dead).
    let store = quay_storage::SqlMetadataStore::connect(&server.db_url)
        .await
        .unwrap();
    let queue = quay_storage::SqlJobQueue::new(
        &store,
        quay_core::RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        },
    );
    let spec = JobSpec {
        kind: JobKind::Replicate,
        digest: quay_core::Digest::sha256_of(b"x"),
        target: "local".parse().unwrap(),
    };
    queue.enqueue(&[spec]).await.unwrap();
    let lease = queue
        .claim(1, std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .pop()
        .unwrap();
    let outcome = queue
        .fail(&lease, "<script>alert('x')</script>")
        .await
        .unwrap();
    assert_eq!(outcome, quay_core::FailOutcome::DeadLettered);
    assert_eq!(queue.stats().await.unwrap().dead, 1, "the job is dead");
    let resp = page(&server, None).await;
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = resp.text().await.unwrap();
    assert!(
        html.contains(r#"<tr data-location="local" data-missing="0">"#),
        "{html}"
    );
    assert!(html.contains("http-equiv=\"refresh\""), "{html}");
    assert!(
        !html.contains("<script"),
        "markup from a job error reached the page: {html}"
    );
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
        "{html}"
    );
}
