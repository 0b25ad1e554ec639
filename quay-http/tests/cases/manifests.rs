//! Manifest, tag, referrers and catalog endpoints.

use crate::common::*;

pub async fn manifest_by_tag_and_digest_returns_exact_bytes(s: &Server) {
    let (digest, body) = s.push_image("img", "v1", b"layer").await;
    assert_eq!(digest, sha256(body.as_bytes()));
    for reference in ["v1", digest.as_str()] {
        let r = s
            .client
            .get(s.url(&format!("/v2/img/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], OCI_MANIFEST);
        assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
        assert_eq!(r.text().await.unwrap(), body);
        let h = s
            .client
            .head(s.url(&format!("/v2/img/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_eq!(h.status(), 200);
        assert_eq!(
            h.headers()["content-length"],
            body.len().to_string().as_str()
        );
        assert_eq!(h.headers()["docker-content-digest"], digest.as_str());
    }
}

pub async fn manifest_put_answers_location_and_digest(s: &Server) {
    let body = s.image_manifest("loc", b"l", None, None).await;
    // Whitespace is kept: the digest is of the exact bytes.
    let pretty = format!("{body}\n\n");
    let r = s.put_manifest("loc", "t", OCI_MANIFEST, &pretty).await;
    assert_eq!(r.status(), 201);
    let digest = sha256(pretty.as_bytes());
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(
        r.headers()["location"],
        format!("/v2/loc/manifests/{digest}").as_str()
    );
    let got = s
        .client
        .get(s.url("/v2/loc/manifests/t"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.text().await.unwrap(), pretty);
}

pub async fn manifest_by_digest_must_match(s: &Server) {
    let body = s.image_manifest("dig", b"l", None, None).await;
    let digest = sha256(body.as_bytes());
    let r = s.put_manifest("dig", &digest, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), 201);
    let wrong = sha256(b"other");
    let r = s.put_manifest("dig", &wrong, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

pub async fn manifest_with_unknown_blob_is_refused(s: &Server) {
    let layer = sha256(b"not pushed");
    let config = s.push_blob("mbu", b"{}").await;
    let body = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 10}]
    })
    .to_string();
    let r = s.put_manifest("mbu", "x", OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    let r = s
        .client
        .get(s.url("/v2/mbu/manifests/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

pub async fn invalid_manifests_are_manifest_invalid(s: &Server) {
    let good = s.image_manifest("inv", b"l", None, None).await;
    let cases = [
        (OCI_MANIFEST, "{not json".to_owned()),
        ("text/plain", good.clone()),
        (DOCKER_MANIFEST, good.clone()),
        (OCI_MANIFEST, r#"{"schemaVersion":3}"#.to_owned()),
        (
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            r#"{"schemaVersion":1,"fsLayers":[]}"#.to_owned(),
        ),
        (
            OCI_MANIFEST,
            r#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#.to_owned(),
        ),
    ];
    for (ct, body) in cases {
        let r = s.put_manifest("inv", "t", ct, &body).await;
        assert_eq!(r.status(), 400, "{ct} {body}");
        assert_eq!(error_code(r).await, "MANIFEST_INVALID", "{ct} {body}");
    }
    let r = s
        .client
        .get(s.url("/v2/inv/tags/list"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["tags"].as_array().map(|a| a.is_empty()).unwrap_or(true),
        "{v}"
    );
}

pub async fn oversized_manifest_is_413(s: &Server) {
    let big = format!(
        "{{\"schemaVersion\":2,\"pad\":\"{}\"}}",
        "x".repeat(4 * 1024 * 1024 + 1)
    );
    let r = s.put_manifest("big", "t", OCI_MANIFEST, &big).await;
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await, "SIZE_INVALID");
}

pub async fn unknown_or_invalid_reference_is_404(s: &Server) {
    s.push_image("ref", "v1", b"l").await;
    for reference in [
        "nope",
        ".INVALID_MANIFEST_NAME",
        "sha256:abc",
        &sha256(b"x"),
    ] {
        let r = s
            .client
            .get(s.url(&format!("/v2/ref/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{reference}");
        assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN", "{reference}");
        let h = s
            .client
            .head(s.url(&format!("/v2/ref/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_eq!(h.status(), 404, "{reference}");
    }
    let r = s
        .client
        .get(s.url("/v2/never/pushed/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

pub async fn accept_header_negotiation(s: &Server) {
    s.push_image("neg", "v1", b"l").await;
    let get = |accept: &'static str| {
        s.client
            .get(s.url("/v2/neg/manifests/v1"))
            .header("accept", accept)
            .send()
    };
    assert_eq!(get(OCI_MANIFEST).await.unwrap().status(), 200);
    assert_eq!(get("*/*").await.unwrap().status(), 200);
    let both = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";
    assert_eq!(get(both).await.unwrap().status(), 200);
    let r = get(DOCKER_MANIFEST).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
}

pub async fn delete_manifest_and_tags(s: &Server) {
    let (digest, _) = s.push_image("delm", "v1", b"l").await;
    s.put_manifest(
        "delm",
        "v2",
        OCI_MANIFEST,
        &s.client
            .get(s.url("/v2/delm/manifests/v1"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .await;
    // Deleting a tag leaves the manifest and the other tag.
    let r = s
        .client
        .delete(s.url("/v2/delm/manifests/v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        s.client
            .get(s.url("/v2/delm/manifests/v2"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        s.client
            .get(s.url(&format!("/v2/delm/manifests/{digest}")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Deleting by digest removes the manifest and every tag on it.
    let r = s
        .client
        .delete(s.url(&format!("/v2/delm/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        s.client
            .get(s.url("/v2/delm/manifests/v1"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = s
        .client
        .delete(s.url(&format!("/v2/delm/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
}

pub async fn index_and_docker_types(s: &Server) {
    let child = s.image_manifest("multi", b"amd64", None, None).await;
    let child_digest = sha256(child.as_bytes());
    assert_eq!(
        s.put_manifest("multi", &child_digest, OCI_MANIFEST, &child)
            .await
            .status(),
        201
    );
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child_digest, "size": child.len(),
                       "platform": {"os": "linux", "architecture": "amd64"}}]
    })
    .to_string();
    let r = s.put_manifest("multi", "latest", OCI_INDEX, &index).await;
    assert_eq!(r.status(), 201);
    let got = s
        .client
        .get(s.url("/v2/multi/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.headers()["content-type"], OCI_INDEX);
    // An index listing a manifest the repository lacks is refused.
    let missing = index.replace(&child_digest, &sha256(b"missing"));
    let r = s.put_manifest("multi", "broken", OCI_INDEX, &missing).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    // Docker schema 2 and manifest list.
    let config = s.push_blob("multi", b"{\"os\":\"linux\"}").await;
    let layer = s.push_blob("multi", b"docker layer").await;
    let docker = serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config, "size": 15},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer, "size": 12}]
    })
    .to_string();
    let r = s
        .put_manifest("multi", "docker", DOCKER_MANIFEST, &docker)
        .await;
    assert_eq!(r.status(), 201);
    let dd = sha256(docker.as_bytes());
    let list = serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": dd, "size": docker.len(),
                       "platform": {"os": "linux", "architecture": "amd64"}}]
    })
    .to_string();
    let r = s.put_manifest("multi", "list", DOCKER_LIST, &list).await;
    assert_eq!(r.status(), 201);
    let got = s
        .client
        .get(s.url("/v2/multi/manifests/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.headers()["content-type"], DOCKER_LIST);
}

pub async fn tags_list_sorted_and_paged(s: &Server) {
    let (_, body) = s.push_image("tags", "m", b"l").await;
    for t in ["c", "a", "B", "b", "a1"] {
        assert_eq!(
            s.put_manifest("tags", t, OCI_MANIFEST, &body)
                .await
                .status(),
            201
        );
    }
    let r = s
        .client
        .get(s.url("/v2/tags/tags/list"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["name"], "tags");
    assert_eq!(
        v["tags"],
        serde_json::json!(["B", "a", "a1", "b", "c", "m"])
    );
    let r = s
        .client
        .get(s.url("/v2/tags/tags/list?n=2"))
        .send()
        .await
        .unwrap();
    let link = r.headers()["link"].to_str().unwrap().to_owned();
    assert_eq!(link, "</v2/tags/tags/list?n=2&last=a>; rel=\"next\"");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!(["B", "a"]));
    let next = link.trim_start_matches('<').split('>').next().unwrap();
    let r = s.client.get(s.url(next)).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!(["a1", "b"]));
    let r = s
        .client
        .get(s.url("/v2/tags/tags/list?n=10&last=b"))
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("link"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!(["c", "m"]));
    let r = s
        .client
        .get(s.url("/v2/tags/tags/list?n=0"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!([]));
    let r = s
        .client
        .get(s.url("/v2/tags/tags/list?n=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

pub async fn tags_of_unknown_repository_is_name_unknown(s: &Server) {
    let r = s
        .client
        .get(s.url("/v2/ghost/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
}

pub async fn referrers_with_artifact_type_filter(s: &Server) {
    let (subject, body) = s.push_image("refs", "v1", b"base").await;
    let sig = s
        .image_manifest(
            "refs",
            b"signature",
            Some((&subject, body.len())),
            Some("application/vnd.example.sig"),
        )
        .await;
    let r = s
        .put_manifest("refs", &sha256(sig.as_bytes()), OCI_MANIFEST, &sig)
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["oci-subject"], subject.as_str());
    let sbom = s
        .image_manifest(
            "refs",
            b"sbom",
            Some((&subject, body.len())),
            Some("application/vnd.example.sbom"),
        )
        .await;
    assert_eq!(
        s.put_manifest("refs", &sha256(sbom.as_bytes()), OCI_MANIFEST, &sbom)
            .await
            .status(),
        201
    );

    let r = s
        .client
        .get(s.url(&format!("/v2/refs/referrers/{subject}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], OCI_INDEX);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["schemaVersion"], 2);
    let list = v["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for m in list {
        assert!(m["artifactType"]
            .as_str()
            .unwrap()
            .starts_with("application/vnd.example."));
        assert_eq!(m["mediaType"], OCI_MANIFEST);
    }
    let r = s
        .client
        .get(s.url(&format!(
            "/v2/refs/referrers/{subject}?artifactType=application/vnd.example.sig"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["digest"], sha256(sig.as_bytes()));
    // No referrers: an empty index, not an error.
    let r = s
        .client
        .get(s.url(&format!("/v2/refs/referrers/{}", sha256(b"lonely"))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["manifests"], serde_json::json!([]));
    let r = s
        .client
        .get(s.url("/v2/refs/referrers/sha256:bad"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

pub async fn catalog_sorted_and_paged(s: &Server) {
    for repo in ["zeta", "alpha/one", "alpha/two", "mid"] {
        s.push_blob(repo, b"x").await;
    }
    let r = s.client.get(s.url("/v2/_catalog")).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["repositories"],
        serde_json::json!(["alpha/one", "alpha/two", "mid", "zeta"])
    );
    let r = s
        .client
        .get(s.url("/v2/_catalog?n=3"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["link"],
        "</v2/_catalog?n=3&last=mid>; rel=\"next\""
    );
    let r = s
        .client
        .get(s.url("/v2/_catalog?n=3&last=mid"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["zeta"]));
}
