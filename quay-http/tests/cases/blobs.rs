//! Blob and upload endpoints.

use crate::common::*;

pub async fn base_endpoint_answers_with_api_version(s: &Server) {
    let resp = s.client.get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
}

pub async fn monolithic_push_then_get_and_head(s: &Server) {
    let data = b"hello blob".repeat(100);
    let digest = s.push_blob("a/b", &data).await;
    let head = s
        .client
        .head(s.url(&format!("/v2/a/b/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(head.headers()["docker-content-digest"], digest.as_str());
    let get = s
        .client
        .get(s.url(&format!("/v2/a/b/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.headers()["x-storage-location"], "local");
    assert_eq!(get.bytes().await.unwrap().as_ref(), data.as_slice());
}

async fn start(s: &Server, repo: &str) -> String {
    let resp = s
        .client
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["range"], "0-0");
    assert!(resp.headers().contains_key("docker-upload-uuid"));
    resp.headers()["location"].to_str().unwrap().to_owned()
}

async fn patch(s: &Server, location: &str, range: Option<&str>, data: &[u8]) -> reqwest::Response {
    let mut req = s
        .client
        .patch(s.url(location))
        .header("content-type", "application/octet-stream");
    if let Some(r) = range {
        req = req.header("content-range", r);
    }
    req.body(data.to_vec()).send().await.unwrap()
}

pub async fn chunked_upload_in_order(s: &Server) {
    let loc = start(s, "chunky").await;
    let r = patch(s, &loc, Some("0-9"), b"0123456789").await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["range"], "0-9");
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let r = patch(s, &loc, Some("10-14"), b"abcde").await;
    assert_eq!(r.headers()["range"], "0-14");
    let status = s.client.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(status.headers()["range"], "0-14");
    let digest = sha256(b"0123456789abcde");
    let r = s
        .client
        .put(s.url(&format!("{loc}?digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()["location"],
        format!("/v2/chunky/blobs/{digest}").as_str()
    );
    let got = s
        .client
        .get(s.url(&format!("/v2/chunky/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"0123456789abcde");
    // The session is gone once finished; no part objects are left behind.
    let gone = s.client.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(s.stored_files().len(), 1, "{:?}", s.stored_files());
}

pub async fn out_of_order_chunk_is_416_and_session_survives(s: &Server) {
    let loc = start(s, "ooo").await;
    patch(s, &loc, Some("0-3"), b"abcd").await;
    let r = patch(s, &loc, Some("8-11"), b"ijkl").await;
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["range"], "0-3");
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_INVALID");
    let r = patch(s, &loc, Some("4-7"), b"efgh").await;
    assert_eq!(r.status(), 202);
    let digest = sha256(b"abcdefgh");
    let r = s
        .client
        .put(s.url(&format!("{loc}?digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

pub async fn streamed_patch_and_last_chunk_in_put(s: &Server) {
    let loc = start(s, "stream").await;
    let body = reqwest::Body::wrap_stream(futures::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"part-one,")),
        Ok(bytes::Bytes::from_static(b"part-two,")),
    ]));
    let r = s.client.patch(s.url(&loc)).body(body).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["range"], "0-17");
    let digest = sha256(b"part-one,part-two,end");
    let r = s
        .client
        .put(s.url(&format!("{loc}?digest={digest}")))
        .body("end")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = s
        .client
        .get(s.url(&format!("/v2/stream/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.bytes().await.unwrap().as_ref(),
        b"part-one,part-two,end"
    );
}

pub async fn digest_mismatch_records_and_stores_nothing(s: &Server) {
    let loc = start(s, "bad").await;
    patch(s, &loc, Some("0-4"), b"hello").await;
    let wrong = sha256(b"something else");
    let r = s
        .client
        .put(s.url(&format!("{loc}?digest={wrong}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let head = s
        .client
        .head(s.url(&format!("/v2/bad/blobs/{wrong}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    let real = sha256(b"hello");
    let head = s
        .client
        .head(s.url(&format!("/v2/bad/blobs/{real}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    assert!(s.stored_files().is_empty(), "{:?}", s.stored_files());
    // Monolithic too.
    let r = s
        .client
        .post(s.url(&format!("/v2/bad/blobs/uploads/?digest={wrong}")))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert!(s.stored_files().is_empty(), "{:?}", s.stored_files());
    assert!(s
        .registry
        .metadata()
        .get_blob(&real.parse().unwrap())
        .await
        .unwrap()
        .is_none());
}

pub async fn put_without_or_with_malformed_digest_is_digest_invalid(s: &Server) {
    let loc = start(s, "nodigest").await;
    let r = s.client.put(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = s
        .client
        .put(s.url(&format!("{loc}?digest=sha256:xyz")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = s
        .client
        .put(s.url(&format!("{loc}?digest=md5:abc")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

pub async fn unknown_upload_is_blob_upload_unknown(s: &Server) {
    let loc = "/v2/x/blobs/uploads/0123456789abcdef0123456789abcdef";
    for method in ["GET", "PATCH", "PUT", "DELETE"] {
        let url = if method == "PUT" {
            s.url(&format!("{loc}?digest={}", sha256(b"")))
        } else {
            s.url(loc)
        };
        let r = s
            .client
            .request(method.parse().unwrap(), url)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{method}");
        assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN", "{method}");
    }
    // A session of another repository is not reachable through this one.
    let other = start(s, "y").await;
    let id = other.rsplit('/').next().unwrap();
    let r = s
        .client
        .get(s.url(&format!("/v2/x/blobs/uploads/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

pub async fn cancel_removes_session_and_parts(s: &Server) {
    let loc = start(s, "cancel").await;
    patch(s, &loc, Some("0-2"), b"abc").await;
    assert_eq!(s.stored_files().len(), 1);
    let r = s.client.delete(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = s.client.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(s.stored_files().is_empty());
}

pub async fn malformed_or_short_content_range_is_refused(s: &Server) {
    let loc = start(s, "cr").await;
    for bad in ["garbage", "5-2", "-", "a-b", "0-"] {
        let r = patch(s, &loc, Some(bad), b"abc").await;
        assert!(
            r.status() == 416 || r.status() == 400,
            "{bad}: {}",
            r.status()
        );
    }
    // Announced 5 bytes, sent 3: the chunk is refused and the session unchanged.
    let r = patch(s, &loc, Some("0-4"), b"abc").await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_INVALID");
    let st = s.client.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(st.headers()["range"], "0-0");
    assert!(s.stored_files().is_empty());
}

pub async fn unknown_and_invalid_blob_digests(s: &Server) {
    s.push_blob("r", b"x").await;
    let unknown = sha256(b"never pushed");
    let r = s
        .client
        .get(s.url(&format!("/v2/r/blobs/{unknown}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    let r = s
        .client
        .head(s.url(&format!("/v2/r/blobs/{unknown}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .client
        .get(s.url("/v2/r/blobs/sha256:nothex"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

pub async fn ranged_reads(s: &Server) {
    let digest = s.push_blob("rng", b"0123456789").await;
    let url = s.url(&format!("/v2/rng/blobs/{digest}"));
    let get = |range: &'static str| s.client.get(&url).header("range", range).send();
    let r = get("bytes=2-5").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 2-5/10");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"2345");
    let r = get("bytes=-3").await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"789");
    let r = get("bytes=7-").await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"789");
    let r = get("bytes=20-30").await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */10");
    let r = get("bytes=zz").await.unwrap();
    assert_eq!(r.status(), 416);
}

pub async fn delete_blob(s: &Server) {
    let digest = s.push_blob("del", b"bye").await;
    let url = s.url(&format!("/v2/del/blobs/{digest}"));
    let r = s.client.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(s.client.get(&url).send().await.unwrap().status(), 404);
    let r = s.client.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(s.stored_files().is_empty());
}

pub async fn delete_keeps_blob_linked_elsewhere(s: &Server) {
    let a = s.push_blob("keep/a", b"shared").await;
    s.push_blob("keep/b", b"shared").await;
    let r = s
        .client
        .delete(s.url(&format!("/v2/keep/a/blobs/{a}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = s
        .client
        .get(s.url(&format!("/v2/keep/b/blobs/{a}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"shared");
}

pub async fn cross_repository_mount(s: &Server) {
    let digest = s.push_blob("src", b"mount me").await;
    let r = s
        .client
        .post(s.url(&format!("/v2/dst/blobs/uploads/?mount={digest}&from=src")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()["location"],
        format!("/v2/dst/blobs/{digest}").as_str()
    );
    let head = s
        .client
        .head(s.url(&format!("/v2/dst/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    // Unknown blob, or one the source does not hold: a new session instead.
    let unknown = sha256(b"nope");
    for from in ["src", "elsewhere", "BAD//name"] {
        let r = s
            .client
            .post(s.url(&format!(
                "/v2/dst/blobs/uploads/?mount={unknown}&from={from}"
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{from}");
    }
}

pub async fn blobs_are_scoped_to_repositories(s: &Server) {
    let digest = s.push_blob("one", b"private").await;
    let r = s
        .client
        .head(s.url(&format!("/v2/two/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

pub async fn empty_and_sha512_blobs(s: &Server) {
    let empty = s.push_blob("edge", b"").await;
    let r = s
        .client
        .get(s.url(&format!("/v2/edge/blobs/{empty}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
    use sha2::Digest as _;
    let d512 = format!("sha512:{}", hex::encode(sha2::Sha512::digest(b"long hash")));
    let r = s
        .client
        .post(s.url(&format!("/v2/edge/blobs/uploads/?digest={d512}")))
        .body("long hash")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = s
        .client
        .get(s.url(&format!("/v2/edge/blobs/{d512}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"long hash");
}

pub async fn invalid_names_are_name_invalid(s: &Server) {
    let long = "a".repeat(256);
    for name in ["Upper/case", "a//b", "a/", "-x", long.as_str()] {
        let r = s
            .client
            .post(s.url(&format!("/v2/{name}/blobs/uploads/")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{name}");
        assert_eq!(error_code(r).await, "NAME_INVALID", "{name}");
    }
    let (status, text) = raw_request(&s.base, "POST", "/v2/../x/blobs/uploads/").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("NAME_INVALID"), "{text}");
    let (status, _) = raw_request(&s.base, "GET", "/v2/a/../b/tags/list").await;
    assert_eq!(status, 400);
}

pub async fn unsupported_method_is_405(s: &Server) {
    let r = s
        .client
        .post(s.url("/v2/x/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
}

pub async fn chunks_may_alternate_between_instances(s: &Server) {
    let other = s.sibling().await;
    let loc = start(s, "shared/upload").await;
    let r = patch(&other, &loc, Some("0-4"), b"first").await;
    assert_eq!(r.status(), 202);
    let r = patch(s, &loc, Some("5-10"), b"second").await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["range"], "0-10");
    let st = other.client.get(other.url(&loc)).send().await.unwrap();
    assert_eq!(st.headers()["range"], "0-10");
    let digest = sha256(b"firstsecond");
    let r = other
        .client
        .put(other.url(&format!("{loc}?digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = s
        .client
        .get(s.url(&format!("/v2/shared/upload/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"firstsecond");
}
