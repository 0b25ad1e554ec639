//! The Docker token flow in front of the API.
//!
//! - Every `/v2/` request passes [`guard`]: its `Authorization` header (a bearer token, or
//!   HTTP Basic) says who is calling; the endpoint says which action it needs (`pull` to read,
//!   `push` to upload, `delete` to delete). Anonymous callers and tokens that lack a scope the
//!   user could have get `401 UNAUTHORIZED` with a `WWW-Authenticate: Bearer realm=…,service=…,
//!   scope=…` challenge; an authenticated user without the right gets `403 DENIED`. Nothing
//!   reaches a handler (so nothing is written) unless the check passed.
//! - `GET /v2/auth` (and the OAuth2 `POST /v2/auth` with `grant_type=password`) checks the
//!   credentials and issues a short-lived token granting, for each requested scope, the
//!   requested actions the [`Authorizer`] allows.
//!
//! Tokens are verified with the shared [`TokenKey`]: every instance configured with the same
//! key and service accepts the tokens of every other.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use quay_core::auth::{AccessEntry, Credentials, Scope, TokenClaims, TokenKey};
use quay_core::{
    Actions, Authenticator, Authorizer, Error, ErrorKind, Identity, RepositoryName, Secret,
};
use serde_json::json;

use crate::error::{error_response, oci_code, ApiError};
use crate::routes::{parse_path, Endpoint};
use crate::AppState;

/// The path of the token endpoint.
pub const TOKEN_PATH: &str = "/v2/auth";

/// The largest token request body (`POST /v2/auth` form) read.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Access control settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Checks user names and passwords.
    pub authenticator: Arc<dyn Authenticator>,
    /// Decides who may do what.
    pub authorizer: Arc<dyn Authorizer>,
    /// The key tokens are signed and verified with (shared by every instance).
    pub key: TokenKey,
    /// The service name: the audience of tokens, and the `service` of challenges.
    pub service: String,
    /// The issuer written into tokens.
    pub issuer: String,
    /// The token endpoint URL given in challenges; when `None`, built from the request's
    /// `Host` and [`AuthConfig::tls`] (so each instance points clients at itself).
    pub realm: Option<String>,
    /// Whether clients reach this server over TLS (the scheme of a built realm).
    pub tls: bool,
    /// How long an issued token is valid.
    pub token_ttl: Duration,
}

/// Who made the request, as [`guard`] established it; handlers read it from the request's
/// extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The identity.
    pub identity: Identity,
    /// The verified token's claims, when the request carried one.
    pub token: Option<TokenClaims>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl AuthConfig {
    fn realm(&self, headers: &HeaderMap) -> String {
        if let Some(realm) = &self.realm {
            return realm.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .unwrap_or("localhost");
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}{TOKEN_PATH}")
    }

    /// A `401 UNAUTHORIZED` with the bearer challenge for `scope`.
    fn challenge(&self, headers: &HeaderMap, scope: Option<&Scope>, message: &str) -> Response {
        let mut value = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            self.realm(headers),
            self.service
        );
        if let Some(scope) = scope {
            value.push_str(&format!(",scope=\"{scope}\""));
        }
        let mut resp = error_response("UNAUTHORIZED", StatusCode::UNAUTHORIZED, message);
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }

    /// Who the `Authorization` header says is calling. `Err` is the response to send.
    async fn caller(&self, headers: &HeaderMap) -> Result<Caller, Response> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(Caller {
                identity: Identity::Anonymous,
                token: None,
            });
        };
        let unauthorized = |e: &Error| self.challenge(headers, None, e.message());
        let text = value.to_str().map_err(|_| {
            let e = Error::new(ErrorKind::Unauthorized, "malformed Authorization header");
            unauthorized(&e)
        })?;
        match Credentials::from_authorization(text).map_err(|e| unauthorized(&e))? {
            Credentials::Bearer(token) => {
                let claims = self
                    .key
                    .verify(token.expose(), &self.service, now_unix())
                    .map_err(|e| unauthorized(&e))?;
                Ok(Caller {
                    identity: claims.identity(),
                    token: Some(claims),
                })
            }
            Credentials::Basic { username, password } => {
                match self.login(&username, &password).await? {
                    Some(identity) => Ok(Caller {
                        identity,
                        token: None,
                    }),
                    None => {
                        let e = Error::new(ErrorKind::Unauthorized, "invalid username or password");
                        Err(unauthorized(&e))
                    }
                }
            }
        }
    }

    /// Checks a user name and password: `Ok(None)` for wrong credentials (logged, without the
    /// password), `Err` the response for a failing backend.
    async fn login(&self, username: &str, password: &Secret) -> Result<Option<Identity>, Response> {
        match self.authenticator.authenticate(username, password).await {
            Ok(None) => {
                tracing::info!(user = %username, "failed login");
                Ok(None)
            }
            Ok(found) => Ok(found),
            Err(e) => Err(ApiError(e).into_response()),
        }
    }

    /// Whether `caller` may do `need` on `repository`; `Err` is the refusal to send.
    async fn check(
        &self,
        headers: &HeaderMap,
        caller: &Caller,
        repository: &RepositoryName,
        need: Actions,
    ) -> Result<(), Response> {
        let allowed = |who: &Identity| {
            let who = who.clone();
            async move {
                self.authorizer
                    .allowed(&who, repository)
                    .await
                    .map_err(|e| ApiError(e).into_response())
            }
        };
        let granted = match &caller.token {
            Some(claims) => claims.repository_actions(repository),
            None => allowed(&caller.identity).await?,
        };
        if granted.contains(need) {
            return Ok(());
        }
        let wanted = if need.contains(Actions::PUSH) {
            Actions::PULL.union(Actions::PUSH)
        } else {
            need
        };
        let scope = Scope::repository(repository, wanted);
        match &caller.identity {
            Identity::Anonymous => {
                Err(self.challenge(headers, Some(&scope), "authentication required"))
            }
            // A token that lacks a right its user has: the client should get a new token.
            Identity::User(_)
                if caller.token.is_some() && allowed(&caller.identity).await?.contains(need) =>
            {
                Err(self.challenge(headers, Some(&scope), "insufficient scope"))
            }
            Identity::User(name) => {
                tracing::info!(user = %name, repository = %repository, action = %need, "denied");
                let (code, status) = oci_code(ErrorKind::Denied);
                Err(error_response(
                    code,
                    status,
                    &format!("{name} may not {need} {repository}"),
                ))
            }
        }
    }
}

/// The action an endpoint needs.
fn needed(method: &Method, endpoint: &Endpoint<'_>) -> Actions {
    match (method, endpoint) {
        (&Method::DELETE, Endpoint::Manifest(..) | Endpoint::Blob(..)) => Actions::DELETE,
        (&Method::PUT, Endpoint::Manifest(..)) => Actions::PUSH,
        (_, Endpoint::UploadStart(_) | Endpoint::Upload(..)) => Actions::PUSH,
        _ => Actions::PULL,
    }
}

/// Removes `mount` and `from` from a query string (a mount the caller may not read from
/// becomes a plain upload, as the spec allows).
fn without_mount(uri: &Uri) -> Option<Uri> {
    let query = uri.query()?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.starts_with("mount=") && !p.starts_with("from="))
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    path_and_query.parse().ok()
}

fn query_value(uri: &Uri, key: &str) -> Option<String> {
    let query = uri.query()?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    pairs.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The access check every request passes (a no-op when access control is off).
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(auth) = state.auth.clone() else {
        return next.run(req).await;
    };
    let path = req.uri().path().to_owned();
    let Some(rest) = path
        .strip_prefix("/v2")
        .filter(|_| path.strip_suffix('/').unwrap_or(&path) != TOKEN_PATH)
    else {
        // Health, metrics and the token endpoint are open.
        return next.run(req).await;
    };
    let caller = match auth.caller(req.headers()).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() {
        if caller.identity == Identity::Anonymous {
            return auth.challenge(req.headers(), None, "authentication required");
        }
    } else if rest == "_catalog" {
        match auth.authorizer.may_list_catalog(&caller.identity).await {
            Ok(true) => {}
            Ok(false) if caller.identity == Identity::Anonymous => {
                let scope = Scope {
                    kind: "registry".into(),
                    name: "catalog".into(),
                    actions: vec!["*".into()],
                };
                return auth.challenge(req.headers(), Some(&scope), "authentication required");
            }
            Ok(false) => {
                return ApiError::new(ErrorKind::Denied, "may not list the catalog").into_response()
            }
            Err(e) => return ApiError(e).into_response(),
        }
    } else if let Some(endpoint) = parse_path(rest) {
        let name = match &endpoint {
            Endpoint::Tags(n)
            | Endpoint::Manifest(n, _)
            | Endpoint::UploadStart(n)
            | Endpoint::Upload(n, _)
            | Endpoint::Blob(n, _)
            | Endpoint::Referrers(n, _) => *n,
        };
        // An invalid name goes on to the handler, which answers NAME_INVALID.
        if let Ok(repository) = name.parse::<RepositoryName>() {
            let need = needed(req.method(), &endpoint);
            if let Err(resp) = auth.check(req.headers(), &caller, &repository, need).await {
                return resp;
            }
            if matches!(endpoint, Endpoint::UploadStart(_)) {
                let from =
                    query_value(req.uri(), "from").and_then(|f| f.parse::<RepositoryName>().ok());
                if let Some(from) = from {
                    let readable = auth
                        .check(req.headers(), &caller, &from, Actions::PULL)
                        .await
                        .is_ok();
                    if !readable {
                        if let Some(uri) = without_mount(req.uri()) {
                            *req.uri_mut() = uri;
                        }
                    }
                }
            }
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The scopes of a token request: repeated `scope` parameters, each possibly holding several
/// space-separated scopes (OAuth2 style).
fn requested_scopes(pairs: &[(String, String)]) -> Vec<Scope> {
    pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|s| Scope::parse(&s).ok())
        .collect()
}

async fn grant(
    auth: &AuthConfig,
    who: &Identity,
    scopes: &[Scope],
) -> Result<Vec<AccessEntry>, ApiError> {
    let mut access: Vec<AccessEntry> = Vec::new();
    for scope in scopes {
        let actions = match scope.kind.as_str() {
            "repository" => {
                let Ok(repository) = scope.name.parse::<RepositoryName>() else {
                    continue;
                };
                let asked = Actions::from_names(scope.actions.iter().map(String::as_str));
                let granted = asked.intersect(auth.authorizer.allowed(who, &repository).await?);
                granted.names().into_iter().map(str::to_owned).collect()
            }
            "registry" if scope.name == "catalog" => {
                if auth.authorizer.may_list_catalog(who).await? {
                    vec!["*".to_owned()]
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        };
        if actions.is_empty() {
            continue;
        }
        match access
            .iter_mut()
            .find(|e| e.kind == scope.kind && e.name == scope.name)
        {
            Some(entry) => {
                for a in actions {
                    if !entry.actions.contains(&a) {
                        entry.actions.push(a);
                    }
                }
            }
            None => access.push(AccessEntry {
                kind: scope.kind.clone(),
                name: scope.name.clone(),
                actions,
            }),
        }
    }
    Ok(access)
}

/// A token for `who` granting what of `scopes` is allowed, as the token endpoint answers it.
async fn token_response(auth: &AuthConfig, who: &Identity, scopes: &[Scope]) -> Response {
    let access = match grant(auth, who, scopes).await {
        Ok(access) => access,
        Err(e) => return e.into_response(),
    };
    let now = now_unix();
    let ttl = auth.token_ttl.as_secs().max(1);
    let claims = TokenClaims {
        iss: auth.issuer.clone(),
        sub: who.username().unwrap_or_default().to_owned(),
        aud: auth.service.clone(),
        exp: now + ttl,
        nbf: now,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
        access,
    };
    let token = auth.key.sign(&claims);
    let body = json!({
        "token": token,
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl,
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

fn token_unauthorized(message: &str) -> Response {
    error_response("UNAUTHORIZED", StatusCode::UNAUTHORIZED, message)
}

/// The answer of the token endpoint when access control is off.
fn tokens_off() -> Response {
    ApiError::new(ErrorKind::NotFound, "access control is off: no tokens").into_response()
}

/// `GET /v2/auth?service=…&scope=…`: a token for the Basic credentials given (or anonymous).
pub async fn token_get(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let Some(auth) = state.auth.clone() else {
        return tokens_off();
    };
    let pairs: Vec<(String, String)> = uri
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let identity = match headers.get(header::AUTHORIZATION) {
        None => Identity::Anonymous,
        Some(value) => {
            let creds = value
                .to_str()
                .map_err(|_| Error::new(ErrorKind::Unauthorized, "malformed Authorization header"))
                .and_then(Credentials::from_authorization);
            match creds {
                Ok(Credentials::Basic { username, password }) => {
                    match auth.login(&username, &password).await {
                        Ok(Some(identity)) => identity,
                        Ok(None) => return token_unauthorized("invalid username or password"),
                        Err(resp) => return resp,
                    }
                }
                Ok(Credentials::Bearer(_)) => {
                    return token_unauthorized("the token endpoint takes Basic credentials")
                }
                Err(e) => return token_unauthorized(e.message()),
            }
        }
    };
    token_response(&auth, &identity, &requested_scopes(&pairs)).await
}

fn oauth_error(code: &str, status: StatusCode) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": code}).to_string(),
    )
        .into_response()
}

/// `POST /v2/auth` with an OAuth2 form: `grant_type=password`, `username`, `password`,
/// `scope`, `service`.
pub async fn token_post(State(state): State<AppState>, body: Body) -> Response {
    let Some(auth) = state.auth.clone() else {
        return tokens_off();
    };
    let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(b) => b,
        Err(_) => return oauth_error("invalid_request", StatusCode::PAYLOAD_TOO_LARGE),
    };
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes) else {
        return oauth_error("invalid_request", StatusCode::BAD_REQUEST);
    };
    let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    if get("grant_type").as_deref() != Some("password") {
        return oauth_error("unsupported_grant_type", StatusCode::BAD_REQUEST);
    }
    let (Some(username), Some(password)) = (get("username"), get("password")) else {
        return oauth_error("invalid_request", StatusCode::BAD_REQUEST);
    };
    let password = quay_core::Secret::new(password);
    let identity = match auth.login(&username, &password).await {
        Ok(Some(identity)) => identity,
        Ok(None) => return oauth_error("invalid_grant", StatusCode::UNAUTHORIZED),
        Err(resp) => return resp,
    };
    token_response(&auth, &identity, &requested_scopes(&pairs)).await
}

/// Whether `caller` may see `repository` in the catalog.
pub(crate) async fn visible(
    state: &AppState,
    caller: Option<&Caller>,
    repository: &str,
) -> Result<bool, ApiError> {
    let (Some(auth), Some(caller)) = (&state.auth, caller) else {
        return Ok(true);
    };
    let Ok(repository) = repository.parse::<RepositoryName>() else {
        return Ok(false);
    };
    Ok(auth
        .authorizer
        .allowed(&caller.identity, &repository)
        .await?
        .contains(Actions::PULL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_stripped() {
        let uri: Uri = "/v2/a/blobs/uploads/?mount=sha256:x&from=b&digest=d"
            .parse()
            .unwrap();
        assert_eq!(
            without_mount(&uri).unwrap().to_string(),
            "/v2/a/blobs/uploads/?digest=d"
        );
        let uri: Uri = "/v2/a/blobs/uploads/?mount=sha256:x&from=b"
            .parse()
            .unwrap();
        assert_eq!(
            without_mount(&uri).unwrap().to_string(),
            "/v2/a/blobs/uploads/"
        );
    }

    #[test]
    fn scopes_from_queries() {
        let pairs = vec![
            (
                "scope".to_owned(),
                "repository:a:pull repository:b:push".to_owned(),
            ),
            ("scope".to_owned(), "repository:c:pull,push".to_owned()),
            ("service".to_owned(), "x".to_owned()),
            ("scope".to_owned(), "garbage".to_owned()),
        ];
        let scopes = requested_scopes(&pairs);
        assert_eq!(scopes.len(), 3);
        assert_eq!(scopes[2].actions, ["pull", "push"]);
    }
}
