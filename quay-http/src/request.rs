//! The one parse of a `/v2/` request, shared by the access check and the handlers.
//!
//! A request is parsed once, before anything else looks at it, into an [`OciRequest`] kept in
//! the request's extensions: the endpoint and repository name from the path, and the query
//! string decoded as the handler will read it. The access check ([`crate::auth::guard`]) and
//! the handlers read that value and nothing else, so a request cannot mean one thing to the
//! check and another to the handler.
//!
//! # The rule for query strings
//!
//! - The query is decoded once (`application/x-www-form-urlencoded`: `+` is a space, `%XX` is a
//!   byte), names and values alike: `m%6Funt=` is `mount=`, as in every other registry.
//! - A parameter this registry reads (`mount`, `from`, `digest`, `n`, `last`,
//!   `artifactType`) may appear at most once. A request that repeats one (`from=a&from=b`, or
//!   `from=a&fr%6Fm=b`) is ambiguous and is refused with `400` before any check or handler runs.
//! - Other parameters are ignored.
//! - When the access check turns a mount the caller may not read from into a plain upload, it
//!   removes `mount` and `from` from this value; the handler never sees them.

use axum::extract::Request;
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use quay_core::{ErrorKind, RepositoryName};

use crate::error::ApiError;

/// Which endpoint a `/v2/…` path names; the name is not validated yet (see
/// [`OciRequest::repository`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/` (the API version check).
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(String),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(String, String),
    /// `/v2/<name>/blobs/uploads/` (start)
    UploadStart(String),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(String, String),
    /// `/v2/<name>/blobs/<digest>`
    Blob(String, String),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(String, String),
    /// `/v2/<name>/replication/<reference>`: where the image stands in every default
    /// location (ours, not the OCI spec's; read access as for a pull).
    Replication(String, String),
    /// Anything else under `/v2/`.
    Unknown,
}

impl Endpoint {
    /// The repository name in the path, when the endpoint has one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Endpoint::Tags(n)
            | Endpoint::Manifest(n, _)
            | Endpoint::UploadStart(n)
            | Endpoint::Upload(n, _)
            | Endpoint::Blob(n, _)
            | Endpoint::Referrers(n, _)
            | Endpoint::Replication(n, _) => Some(n),
            Endpoint::Base | Endpoint::Catalog | Endpoint::Unknown => None,
        }
    }
}

/// Splits the part of a path after `/v2/` into an endpoint. Repository names contain
/// slashes, so the path is read from its end: the last segments say which endpoint it is, the
/// rest is the name.
pub fn parse_path(rest: &str) -> Endpoint {
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() {
        return Endpoint::Base;
    }
    if rest == "_catalog" {
        return Endpoint::Catalog;
    }
    let strip = |suffix: &str| rest.strip_suffix(suffix).filter(|n| !n.is_empty());
    if let Some(name) = strip("/tags/list") {
        return Endpoint::Tags(name.to_owned());
    }
    if let Some(name) = strip("/blobs/uploads/").or_else(|| strip("/blobs/uploads")) {
        return Endpoint::UploadStart(name.to_owned());
    }
    let Some((head, last)) = rest.rsplit_once('/') else {
        return Endpoint::Unknown;
    };
    let Some((name, kind)) = head.rsplit_once('/') else {
        return Endpoint::Unknown;
    };
    if name.is_empty() || last.is_empty() {
        return Endpoint::Unknown;
    }
    let (name, last) = (name.to_owned(), last.to_owned());
    match kind {
        "manifests" => Endpoint::Manifest(name, last),
        "blobs" => Endpoint::Blob(name, last),
        "referrers" => Endpoint::Referrers(name, last),
        "replication" => Endpoint::Replication(name, last),
        "uploads" => match name.strip_suffix("/blobs").filter(|n| !n.is_empty()) {
            Some(name) => Endpoint::Upload(name.to_owned(), last),
            None => Endpoint::Unknown,
        },
        _ => Endpoint::Unknown,
    }
}

/// The query parameters this registry reads, each present at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParams {
    /// `mount`: the digest of a cross-repository mount.
    pub mount: Option<String>,
    /// `from`: the repository a mount reads from.
    pub from: Option<String>,
    /// `digest`: the digest that finishes an upload.
    pub digest: Option<String>,
    /// `n`: a page size.
    pub n: Option<String>,
    /// `last`: where a page starts.
    pub last: Option<String>,
    /// `artifactType`: the referrers filter.
    pub artifact_type: Option<String>,
}

impl QueryParams {
    /// Decodes a query string. A parameter this registry reads that appears twice (after
    /// decoding its name) is an [`ErrorKind::InvalidInput`] error naming it.
    pub fn parse(query: Option<&str>) -> Result<QueryParams, ApiError> {
        let mut params = QueryParams::default();
        let Some(query) = query.filter(|q| !q.is_empty()) else {
            return Ok(params);
        };
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|_| {
            ApiError::new(
                ErrorKind::InvalidInput,
                "the query string cannot be decoded",
            )
        })?;
        for (name, value) in pairs {
            let slot = match name.as_str() {
                "mount" => &mut params.mount,
                "from" => &mut params.from,
                "digest" => &mut params.digest,
                "n" => &mut params.n,
                "last" => &mut params.last,
                "artifactType" => &mut params.artifact_type,
                _ => continue,
            };
            if slot.is_some() {
                return Err(ApiError::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "the query parameter {name:?} is given more than once; a request \
                         whose meaning is ambiguous is refused"
                    ),
                ));
            }
            *slot = Some(value);
        }
        Ok(params)
    }
}

/// A `/v2/` request as the access check and the handlers read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRequest {
    /// The endpoint named by the path.
    pub endpoint: Endpoint,
    /// The decoded query.
    pub query: QueryParams,
}

impl OciRequest {
    /// Parses a request URI (whose path starts with `/v2`).
    pub fn parse(uri: &Uri) -> Result<OciRequest, ApiError> {
        let path = uri.path();
        let rest = path.strip_prefix("/v2").unwrap_or(path);
        Ok(OciRequest {
            endpoint: parse_path(rest),
            query: QueryParams::parse(uri.query())?,
        })
    }

    /// The repository named by the path, validated; `None` for endpoints without one.
    pub fn repository(&self) -> Option<Result<RepositoryName, ApiError>> {
        self.endpoint
            .name()
            .map(|n| n.parse::<RepositoryName>().map_err(ApiError))
    }

    /// The repository a mount reads from, when this is a mount whose `from` is a valid name.
    pub fn mount_source(&self) -> Option<RepositoryName> {
        if !matches!(self.endpoint, Endpoint::UploadStart(_)) || self.query.mount.is_none() {
            return None;
        }
        self.query.from.as_deref()?.parse().ok()
    }

    /// Turns a mount into a plain upload (or a monolithic one, with `digest`).
    pub fn drop_mount(&mut self) {
        self.query.mount = None;
        self.query.from = None;
    }
}

/// The middleware that parses every `/v2/` request once and stores the [`OciRequest`] in its
/// extensions; a request it cannot read unambiguously is answered `400` here.
pub async fn parse_once(mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let token_endpoint = path.strip_suffix('/').unwrap_or(path) == crate::auth::TOKEN_PATH;
    if path.starts_with("/v2") && !token_endpoint {
        match OciRequest::parse(req.uri()) {
            Ok(parsed) => {
                req.extensions_mut().insert(parsed);
            }
            Err(e) => return e.into_response(),
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ep(rest: &str) -> Endpoint {
        parse_path(rest)
    }

    #[test]
    fn paths_split_from_the_end() {
        assert_eq!(ep("a/b/tags/list"), Endpoint::Tags("a/b".into()));
        assert_eq!(
            ep("a/blobs/b/blobs/sha256:x"),
            Endpoint::Blob("a/blobs/b".into(), "sha256:x".into())
        );
        assert_eq!(ep("a/blobs/uploads/"), Endpoint::UploadStart("a".into()));
        assert_eq!(ep("a/blobs/uploads"), Endpoint::UploadStart("a".into()));
        assert_eq!(
            ep("x/y/blobs/uploads/123"),
            Endpoint::Upload("x/y".into(), "123".into())
        );
        assert_eq!(
            ep("m/manifests/latest"),
            Endpoint::Manifest("m".into(), "latest".into())
        );
        assert_eq!(
            ep("r/referrers/sha256:1"),
            Endpoint::Referrers("r".into(), "sha256:1".into())
        );
        assert_eq!(ep(""), Endpoint::Base);
        assert_eq!(ep("/"), Endpoint::Base);
        assert_eq!(ep("/_catalog"), Endpoint::Catalog);
        assert_eq!(ep("manifests/latest"), Endpoint::Unknown);
        assert_eq!(ep("a/uploads/1"), Endpoint::Unknown);
        assert_eq!(ep("a/other/x"), Endpoint::Unknown);
        assert_eq!(
            ep("a/b/replication/v1"),
            Endpoint::Replication("a/b".into(), "v1".into())
        );
        assert_eq!(ep("/tags/list"), Endpoint::Unknown);
    }

    fn query(q: &str) -> Result<QueryParams, ApiError> {
        QueryParams::parse(Some(q))
    }

    #[test]
    fn encoded_names_mean_the_same_parameter() {
        let q = query("m%6Funt=sha256:x&fr%6Fm=a%2Fb").unwrap();
        assert_eq!(q.mount.as_deref(), Some("sha256:x"));
        assert_eq!(q.from.as_deref(), Some("a/b"));
    }

    #[test]
    fn repeated_parameters_are_refused() {
        for q in [
            "mount=d&from=a&from=b",
            "from=a&fr%6Fm=b",
            "mount=d&m%6Funt=e",
            "digest=a&digest=a",
            "n=1&n=2",
        ] {
            let err = query(q).unwrap_err();
            assert_eq!(err.0.kind(), ErrorKind::InvalidInput, "{q}");
        }
        // Parameters nobody reads may repeat.
        assert!(query("x=1&x=2&digest=d").is_ok());
    }

    /// One parameter of a generated query: a name spelled plainly or percent-encoded.
    fn param() -> impl Strategy<Value = (String, String)> {
        let names = prop_oneof![
            Just(("mount", "mount")),
            Just(("mount", "m%6Funt")),
            Just(("mount", "%6D%6F%75%6E%74")),
            Just(("from", "from")),
            Just(("from", "fr%6Fm")),
            Just(("from", "%66rom")),
            Just(("digest", "digest")),
            Just(("digest", "dige%73t")),
            Just(("other", "other")),
        ];
        let values = prop_oneof![
            Just("usera/priv"),
            Just("usera%2Fpriv"),
            Just("userb/own"),
            Just("sha256:aa"),
        ];
        (names, values).prop_map(|((n, raw), v)| (n.to_owned(), format!("{raw}={v}")))
    }

    proptest! {
        /// Whatever the spelling and order, a parse either refuses the query or yields, for
        /// each parameter, the one value the query gives it after decoding.
        #[test]
        fn one_meaning_or_refused(params in proptest::collection::vec(param(), 0..6)) {
            let text: Vec<String> = params.iter().map(|(_, p)| p.clone()).collect();
            let parsed = query(&text.join("&"));
            for name in ["mount", "from", "digest"] {
                let given: Vec<String> = params
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, p)| {
                        let v = p.split_once('=').map(|(_, v)| v).unwrap_or_default();
                        v.replace("%2F", "/")
                    })
                    .collect();
                match &parsed {
                    Err(_) => {}
                    Ok(q) => {
                        let got = match name {
                            "mount" => &q.mount,
                            "from" => &q.from,
                            _ => &q.digest,
                        };
                        prop_assert!(given.len() <= 1);
                        prop_assert_eq!(got.clone(), given.first().cloned());
                    }
                }
            }
            let repeated = ["mount", "from", "digest"]
                .iter()
                .any(|name| params.iter().filter(|(n, _)| n == name).count() > 1);
            prop_assert_eq!(parsed.is_err(), repeated);
        }
    }
}
