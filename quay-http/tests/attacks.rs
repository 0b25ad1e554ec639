//! An attacker with an ordinary account, in-process: cross-repository mounts with every spelling
//! of their query (repeated, reordered, percent-encoded names and values), with HTTP Basic and
//! with a token for the attacker's own repository; a property test over generated queries; the
//! mount challenge naming the source; the token realm; a login flood from one address.
//!
//! `usera/priv` holds a private layer of user A. User B owns `userb/*` and holds a layer of his
//! own in `userb/other`. Whatever B sends, A's layer must never become readable through B's
//! repositories.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::{sha256, Backend, Server, Setup};
use proptest::prelude::*;
use quay_core::auth::TokenKey;
use quay_http::auth::AuthConfig;
use quay_http::users::{StaticUsers, StaticUsersConfig};

const KEY: &[u8] = b"attacks-test-signing-key";
const SERVICE: &str = "registry.test";
const PRIVATE: &[u8] = b"user A's private layer";
const OWN: &[u8] = b"user B's own layer";

fn auth(server_hostname: Option<&str>) -> Arc<AuthConfig> {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let mut users = StaticUsersConfig::default();
    for user in ["usera", "userb"] {
        users.users.insert(user.into(), hash.clone());
    }
    let users = Arc::new(StaticUsers::new(users).unwrap());
    let mut config = AuthConfig::new(users, TokenKey::new(KEY), SERVICE);
    config.server_hostname = server_hostname.map(str::to_owned);
    Arc::new(config)
}

fn basic(user: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw"));
    format!("Basic {encoded}")
}

/// A server where A's private layer and B's own layer are pushed.
async fn scene() -> Server {
    let s = Server::start_setup(
        Backend::Sqlite,
        Setup {
            auth: Some(auth(None)),
            ..Default::default()
        },
    )
    .await;
    for (repo, user, data) in [
        ("usera/priv", "usera", PRIVATE),
        ("userb/other", "userb", OWN),
    ] {
        let resp = s
            .client
            .post(s.url(&format!(
                "/v2/{repo}/blobs/uploads/?digest={}",
                sha256(data)
            )))
            .header("authorization", basic(user))
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    s
}

async fn token(s: &Server, user: &str, scopes: &[&str]) -> String {
    let mut query: Vec<(&str, &str)> = vec![("service", SERVICE)];
    query.extend(scopes.iter().map(|sc| ("scope", *sc)));
    let resp = s
        .client
        .get(s.url("/v2/auth"))
        .query(&query)
        .header("authorization", basic(user))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    format!("Bearer {}", body["token"].as_str().unwrap())
}

/// Sends B's mount POST with `query` and cleans up any upload session it opened. Returns the
/// status.
async fn try_mount(s: &Server, authorization: &str, query: &str) -> u16 {
    let resp = s
        .client
        .post(s.url(&format!("/v2/userb/own/blobs/uploads/?{query}")))
        .header("authorization", authorization)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if status == 202 {
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        let resp = s
            .client
            .delete(s.url(&location))
            .header("authorization", authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
    }
    status
}

/// Whether B can read A's private layer through his own repository.
async fn leaked(s: &Server) -> bool {
    let resp = s
        .client
        .get(s.url(&format!("/v2/userb/own/blobs/{}", sha256(PRIVATE))))
        .header("authorization", basic("userb"))
        .send()
        .await
        .unwrap();
    resp.status() != 404
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_never_leak_a_private_blob_whatever_the_spelling() {
    let s = scene().await;
    let d = sha256(PRIVATE);
    let d_enc = d.replace(':', "%3A");
    let bearer = token(&s, "userb", &["repository:userb/own:pull,push"]).await;
    // (query, expected status): 400 for an ambiguous query, 202 (a plain upload) when the
    // source is unreadable, 400 DIGEST_INVALID for a monolithic push with no body.
    let cases: Vec<(String, u16)> = vec![
        (format!("mount={d}&from=usera/priv"), 202),
        (format!("from=usera/priv&mount={d}"), 202),
        (format!("mount={d}&from=userb/own&from=usera/priv"), 400),
        (format!("mount={d}&from=usera/priv&from=userb/own"), 400),
        (format!("mount={d}&from=userb/own&fr%6Fm=usera/priv"), 400),
        (format!("mount={d}&%66rom=usera/priv&from=userb/own"), 400),
        (format!("mount={d}&fr%6Fm=usera/priv"), 202),
        (format!("m%6Funt={d}&from=usera/priv"), 202),
        (format!("m%6Funt={d_enc}&fr%6Fm=usera%2Fpriv"), 202),
        (format!("mount={d}&m%6Funt={d}&from=usera/priv"), 400),
        (format!("mount={d}&from=usera%2Fpriv"), 202),
        (format!("mount={d}&from=usera/priv&from="), 400),
        (format!("mount={d}&from=USERA/priv"), 202),
        (format!("mount={d}&from=usera/priv/.."), 202),
        (format!("mount={d}&from=usera/priv&digest={d}"), 400),
        (
            format!("mount={d}&from=usera/priv&digest={d}&dige%73t={d}"),
            400,
        ),
    ];
    for (who, authorization) in [("basic", basic("userb")), ("token", bearer.clone())] {
        for (query, expected) in &cases {
            let status = try_mount(&s, &authorization, query).await;
            assert_eq!(status, *expected, "{who}: {query}");
            assert!(!leaked(&s).await, "{who}: {query} leaked A's layer");
        }
    }
    // B's own layer mounts, however it is spelled.
    let own = sha256(OWN);
    assert_eq!(
        try_mount(
            &s,
            &basic("userb"),
            &format!("m%6Funt={own}&fr%6Fm=userb%2Fother")
        )
        .await,
        201
    );
    assert!(!leaked(&s).await);
}

/// One generated query parameter.
fn param() -> impl Strategy<Value = (&'static str, String)> {
    let private = sha256(PRIVATE);
    let own = sha256(OWN);
    let names = prop_oneof![
        Just(("mount", "mount")),
        Just(("mount", "m%6Funt")),
        Just(("from", "from")),
        Just(("from", "fr%6Fm")),
        Just(("from", "%66%72%6F%6D")),
        Just(("digest", "digest")),
        Just(("other", "n")),
    ];
    let values = prop_oneof![
        Just(private.clone()),
        Just(own),
        Just("usera/priv".to_owned()),
        Just("usera%2Fpriv".to_owned()),
        Just("userb/other".to_owned()),
        Just("userb/own".to_owned()),
    ];
    (names, values).prop_map(|((name, raw), value)| (name, format!("{raw}={value}")))
}

/// For random sequences of `mount`, `from` and `digest` parameters, the request is refused, or
/// it mounts only from a repository B may read: A's layer never appears in B's repository.
#[test]
fn generated_queries_authorize_the_repository_they_use() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(scene());
    let bearer = rt.block_on(token(&s, "userb", &["repository:userb/own:pull,push"]));
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 96,
        ..Default::default()
    });
    let strategy = (proptest::collection::vec(param(), 1..6), any::<bool>());
    runner
        .run(&strategy, |(params, use_token)| {
            let query: Vec<String> = params.iter().map(|(_, p)| p.clone()).collect();
            let query = query.join("&");
            let authorization = if use_token {
                bearer.clone()
            } else {
                basic("userb")
            };
            let status = rt.block_on(try_mount(&s, &authorization, &query));
            let repeated = ["mount", "from", "digest"]
                .iter()
                .any(|n| params.iter().filter(|(name, _)| name == n).count() > 1);
            if repeated {
                prop_assert_eq!(status, 400, "{}", query);
            }
            if status == 201 {
                // Only a mount from one of B's own repositories may succeed.
                let from: Vec<&String> = params
                    .iter()
                    .filter(|(n, _)| *n == "from")
                    .map(|(_, p)| p)
                    .collect();
                prop_assert!(
                    from.len() == 1
                        && (from[0].ends_with("=userb/other") || from[0].ends_with("=userb/own")),
                    "{}",
                    query
                );
            }
            prop_assert!(!rt.block_on(leaked(&s)), "{} leaked A's layer", query);
            Ok(())
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_challenge_names_the_source_and_a_token_for_both_mounts() {
    let s = scene().await;
    let own = sha256(OWN);
    let resp = s
        .client
        .post(s.url(&format!(
            "/v2/userb/copy/blobs/uploads/?mount={own}&from=userb/other"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    let scopes = challenge
        .split(",scope=\"")
        .nth(1)
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap();
    assert_eq!(
        scopes,
        "repository:userb/copy:pull,push repository:userb/other:pull"
    );
    // A client asks for exactly the challenged scopes, in one space-separated parameter.
    let bearer = token(&s, "userb", &[scopes]).await;
    let resp = s
        .client
        .post(s.url(&format!(
            "/v2/userb/copy/blobs/uploads/?mount={own}&from=userb/other"
        )))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        201,
        "the mount should succeed with both scopes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_realm_comes_from_server_hostname_not_the_host_header() {
    let s = Server::start_setup(
        Backend::Sqlite,
        Setup {
            auth: Some(auth(Some("registry.example.com"))),
            ..Default::default()
        },
    )
    .await;
    let resp = s
        .client
        .get(s.url("/v2/"))
        .header("host", "attacker.example.net")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"http://registry.example.com/v2/auth\""),
        "{challenge}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_from_one_address_is_capped() {
    let s = scene().await;
    let bearer = token(&s, "userb", &["repository:userb/own:pull"]).await;
    let wrong = {
        let encoded = base64::engine::general_purpose::STANDARD.encode("usera:wrong");
        format!("Basic {encoded}")
    };
    let mut flood = Vec::new();
    for _ in 0..50 {
        let (client, url, wrong) = (s.client.clone(), s.url("/v2/"), wrong.clone());
        flood.push(tokio::spawn(async move {
            client
                .get(url)
                .header("authorization", wrong)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    // A token needs no password check: it is served during the flood.
    let resp = s
        .client
        .get(s.url("/v2/"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut statuses = Vec::new();
    for f in flood {
        statuses.push(f.await.unwrap());
    }
    let refused = statuses.iter().filter(|s| **s == 429).count();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(refused + checked, 50, "{statuses:?}");
    assert!(
        checked >= 2,
        "the first checks of the address are made: {statuses:?}"
    );
    println!(
        "login flood of 50 from one address: {checked} checked (401), {refused} refused (429)"
    );
}
