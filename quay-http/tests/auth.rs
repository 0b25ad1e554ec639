//! Access control over HTTP, in-process: the bearer challenge, the token endpoint, `401` and
//! `403` with OCI bodies and nothing written, tokens accepted by a second instance sharing
//! the key, the catalog filtered per caller, anonymous pulls of public repositories, mounts
//! from unreadable repositories, and the limit on open upload sessions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::{error_code, sha256, Backend, Server, Setup};
use quay_core::auth::{TokenClaims, TokenKey};
use quay_core::Actions;
use quay_http::auth::AuthConfig;
use quay_http::users::{NamespaceGrant, StaticUsers, StaticUsersConfig};

const KEY: &[u8] = b"the-key-both-regions-share";
const SERVICE: &str = "registry.test";

fn users(anonymous_pull: bool) -> Arc<StaticUsers> {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let mut config = StaticUsersConfig::default();
    for user in ["admin", "alice", "bob"] {
        config.users.insert(user.into(), hash.clone());
    }
    config.super_users = vec!["admin".into()];
    config.grants.insert(
        "bob".into(),
        vec![NamespaceGrant {
            namespace: "team".into(),
            actions: Actions::PULL,
        }],
    );
    config.public_repositories = vec!["library/*".into()];
    config.anonymous_pull = anonymous_pull;
    Arc::new(StaticUsers::new(config).unwrap())
}

fn auth(anonymous_pull: bool) -> Arc<AuthConfig> {
    let users = users(anonymous_pull);
    let mut config = AuthConfig::new(users, TokenKey::new(KEY), SERVICE);
    config.issuer = "test".into();
    Arc::new(config)
}

async fn server() -> Server {
    Server::start_setup(
        Backend::Sqlite,
        Setup {
            auth: Some(auth(false)),
            ..Default::default()
        },
    )
    .await
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// A token from the server's endpoint for `scope`, as `user`.
async fn token(server: &Server, user: &str, scope: &str) -> String {
    let resp = server
        .client
        .get(server.url("/v2/auth"))
        .query(&[("service", SERVICE), ("scope", scope)])
        .header("authorization", basic(user, "pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["token"], body["access_token"]);
    body["token"].as_str().unwrap().to_owned()
}

fn claims_of(token: &str) -> TokenClaims {
    TokenKey::new(KEY).verify(token, SERVICE, now()).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn push_with(
    server: &Server,
    repo: &str,
    authorization: &str,
    data: &[u8],
) -> reqwest::Response {
    server
        .client
        .post(server.url(&format!(
            "/v2/{repo}/blobs/uploads/?digest={}",
            sha256(data)
        )))
        .header("authorization", authorization)
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap()
}

async fn open_uploads(server: &Server, repo: &str) -> u64 {
    server
        .registry
        .metadata()
        .count_uploads(&repo.parse().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenge_then_token_then_push_and_pull() {
    let s = server().await;
    let resp = s.client.get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let host = s.base.trim_start_matches("http://");
    assert_eq!(
        challenge,
        format!("Bearer realm=\"http://{host}/v2/auth\",service=\"{SERVICE}\"")
    );
    assert_eq!(error_code(resp).await, "UNAUTHORIZED");

    // A repository request names the scope to ask for.
    let resp = s
        .client
        .post(s.url("/v2/alice/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.ends_with(",scope=\"repository:alice/app:pull,push\""),
        "{challenge}"
    );

    let t = token(&s, "alice", "repository:alice/app:pull,push").await;
    let claims = claims_of(&t);
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.access[0].actions, ["pull", "push"]);
    let bearer = format!("Bearer {t}");
    let resp = s
        .client
        .get(s.url("/v2/"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let data = b"layer of alice";
    let resp = push_with(&s, "alice/app", &bearer, data).await;
    assert_eq!(resp.status(), 201);
    let resp = s
        .client
        .get(s.url(&format!("/v2/alice/app/blobs/{}", sha256(data))))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data);
    // HTTP Basic works directly too.
    let resp = s
        .client
        .head(s.url(&format!("/v2/alice/app/blobs/{}", sha256(data))))
        .header("authorization", basic("alice", "pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_401_and_writes_nothing() {
    let s = server().await;
    let resp = push_with(&s, "alice/app", &basic("alice", "nope"), b"x").await;
    assert_eq!(resp.status(), 401);
    assert_eq!(error_code(resp).await, "UNAUTHORIZED");
    let resp = push_with(&s, "alice/app", &basic("mallory", "pw"), b"x").await;
    assert_eq!(resp.status(), 401);
    let resp = s
        .client
        .get(s.url("/v2/auth"))
        .query(&[("scope", "repository:alice/app:push")])
        .header("authorization", basic("alice", "nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(error_code(resp).await, "UNAUTHORIZED");
    let resp = push_with(&s, "alice/app", "Bearer not.a.token", b"x").await;
    assert_eq!(resp.status(), 401);
    assert!(s.stored_files().is_empty());
    assert_eq!(open_uploads(&s, "alice/app").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_without_push_rights_is_403_denied_and_writes_nothing() {
    let s = server().await;
    // bob may pull team/*: the token endpoint grants pull only.
    let t = token(&s, "bob", "repository:team/app:pull,push").await;
    assert_eq!(claims_of(&t).access[0].actions, ["pull"]);
    let resp = push_with(&s, "team/app", &format!("Bearer {t}"), b"bob's layer").await;
    assert_eq!(resp.status(), 403);
    assert_eq!(error_code(resp).await, "DENIED");
    let resp = push_with(&s, "team/app", &basic("bob", "pw"), b"bob's layer").await;
    assert_eq!(resp.status(), 403);
    let resp = s
        .client
        .put(s.url("/v2/team/app/manifests/latest"))
        .header("authorization", basic("bob", "pw"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(s.stored_files().is_empty());
    assert_eq!(open_uploads(&s, "team/app").await, 0);
    // Reading is allowed: the answer is "unknown", not a refusal.
    let resp = s
        .client
        .get(s.url("/v2/team/app/manifests/latest"))
        .header("authorization", format!("Bearer {t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // alice has no rights on bob's namespace at all, nor may delete there.
    let resp = s
        .client
        .delete(s.url(&format!("/v2/bob/x/blobs/{}", sha256(b"y"))))
        .header("authorization", basic("alice", "pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_missing_a_right_the_user_has_asks_for_a_new_one() {
    let s = server().await;
    let t = token(&s, "alice", "repository:alice/app:pull").await;
    let resp = push_with(&s, "alice/app", &format!("Bearer {t}"), b"z").await;
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("scope=\"repository:alice/app:pull,push\""),
        "{challenge}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_one_instance_works_on_another() {
    let us = server().await;
    let eu = us.sibling().await;
    let t = token(&us, "alice", "repository:alice/app:pull,push").await;
    let bearer = format!("Bearer {t}");
    let resp = push_with(&eu, "alice/app", &bearer, b"pushed to eu with a us token").await;
    assert_eq!(resp.status(), 201);

    // Signed with another key, for another service, or expired: refused.
    let mut claims = claims_of(&t);
    let other = TokenKey::new(b"some-other-registry-key").sign(&claims);
    let resp = push_with(&eu, "alice/app", &format!("Bearer {other}"), b"a").await;
    assert_eq!(resp.status(), 401);
    claims.aud = "elsewhere".into();
    let wrong_aud = TokenKey::new(KEY).sign(&claims);
    let resp = push_with(&eu, "alice/app", &format!("Bearer {wrong_aud}"), b"a").await;
    assert_eq!(resp.status(), 401);
    claims.aud = SERVICE.into();
    claims.exp = now() - 3600;
    let expired = TokenKey::new(KEY).sign(&claims);
    let resp = push_with(&eu, "alice/app", &format!("Bearer {expired}"), b"a").await;
    assert_eq!(resp.status(), 401);
    assert_eq!(error_code(resp).await, "UNAUTHORIZED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_lists_only_what_the_caller_may_pull() {
    let s = server().await;
    for repo in ["alice/app", "bob/tool", "team/app", "zed/x"] {
        let resp = push_with(&s, repo, &basic("admin", "pw"), repo.as_bytes()).await;
        assert_eq!(resp.status(), 201);
    }
    let list = |who: &'static str, n: Option<u32>| {
        let s = &s;
        async move {
            let mut req = s
                .client
                .get(s.url("/v2/_catalog"))
                .header("authorization", basic(who, "pw"));
            if let Some(n) = n {
                req = req.query(&[("n", n)]);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let link = resp
                .headers()
                .get("link")
                .map(|l| l.to_str().unwrap().to_owned());
            let body: serde_json::Value = resp.json().await.unwrap();
            (body["repositories"].clone(), link)
        }
    };
    assert_eq!(
        list("admin", None).await.0,
        serde_json::json!(["alice/app", "bob/tool", "team/app", "zed/x"])
    );
    assert_eq!(
        list("alice", None).await.0,
        serde_json::json!(["alice/app"])
    );
    assert_eq!(
        list("bob", None).await.0,
        serde_json::json!(["bob/tool", "team/app"])
    );
    // Paging counts visible names only.
    let (first, link) = list("bob", Some(1)).await;
    assert_eq!(first, serde_json::json!(["bob/tool"]));
    assert!(link.unwrap().contains("last=bob/tool"));
    let resp = s.client.get(s.url("/v2/_catalog")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_pulls_of_public_repositories_when_enabled() {
    let data = b"public layer";
    // Off by default: anonymous is challenged even for a public repository.
    let closed = server().await;
    let resp = closed
        .client
        .get(closed.url(&format!("/v2/library/base/blobs/{}", sha256(data))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let s = Server::start_setup(
        Backend::Sqlite,
        Setup {
            auth: Some(auth(true)),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        push_with(&s, "library/base", &basic("admin", "pw"), data)
            .await
            .status(),
        201
    );
    let url = s.url(&format!("/v2/library/base/blobs/{}", sha256(data)));
    let resp = s.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // An anonymous token carries the public pull, nothing more.
    let resp = s
        .client
        .get(s.url("/v2/auth"))
        .query(&[
            ("scope", "repository:library/base:pull,push"),
            ("scope", "repository:alice/app:pull"),
        ])
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    let claims = claims_of(body["token"].as_str().unwrap());
    assert_eq!(claims.sub, "");
    assert_eq!(claims.access.len(), 1);
    assert_eq!(claims.access[0].actions, ["pull"]);
    // Pushing stays closed.
    let resp = s
        .client
        .post(s.url("/v2/library/base/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = s
        .client
        .get(s.url("/v2/alice/app/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_from_an_unreadable_repository_becomes_a_plain_upload() {
    let s = server().await;
    let data = b"bob's private layer";
    assert_eq!(
        push_with(&s, "bob/private", &basic("bob", "pw"), data)
            .await
            .status(),
        201
    );
    let mount = |who: &'static str| {
        let s = &s;
        async move {
            s.client
                .post(s.url(&format!(
                    "/v2/{who}/copy/blobs/uploads/?mount={}&from=bob/private",
                    sha256(data)
                )))
                .header("authorization", basic(who, "pw"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(mount("alice").await, 202);
    assert_eq!(mount("admin").await, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_password_grant() {
    let s = server().await;
    let form = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "pw"),
        ("service", SERVICE),
        ("scope", "repository:alice/app:pull repository:bob/x:pull"),
        ("client_id", "test"),
    ];
    let body = serde_urlencoded_form(&form);
    let resp = s
        .client
        .post(s.url("/v2/auth"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(claims.access.len(), 1, "bob/x is not granted");
    let bad = serde_urlencoded_form(&[
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "x"),
    ]);
    let resp = s
        .client
        .post(s.url("/v2/auth"))
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let refresh = serde_urlencoded_form(&[("grant_type", "refresh_token"), ("refresh_token", "x")]);
    let resp = s
        .client
        .post(s.url("/v2/auth"))
        .body(refresh)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

fn serde_urlencoded_form(pairs: &[(&str, &str)]) -> String {
    reqwest::Url::parse_with_params("http://x/", pairs)
        .unwrap()
        .query()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_upload_sessions_per_repository_are_limited() {
    let s = Server::start_setup(
        Backend::Sqlite,
        Setup {
            max_uploads: Some(2),
            ..Default::default()
        },
    )
    .await;
    let start = || s.client.post(s.url("/v2/lim/app/blobs/uploads/")).send();
    let first = start().await.unwrap();
    assert_eq!(first.status(), 202);
    assert_eq!(start().await.unwrap().status(), 202);
    let third = start().await.unwrap();
    assert_eq!(third.status(), 429);
    assert_eq!(error_code(third).await, "TOOMANYREQUESTS");
    // Another repository is not affected; cancelling one frees a slot.
    assert_eq!(
        s.client
            .post(s.url("/v2/lim/other/blobs/uploads/"))
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        s.client
            .delete(s.url(&location))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(start().await.unwrap().status(), 202);
}
