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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
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

use crate::access_log::AccessNote;
use crate::error::{error_response, oci_code, ApiError};
use crate::request::{Endpoint, OciRequest};
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
    /// The token endpoint URL given in challenges (`QUAY_AUTH_REALM`). When `None`, it is
    /// built from [`AuthConfig::server_hostname`], else from the request's `Host` header (which
    /// a client controls: set one of the two behind a proxy).
    pub realm: Option<String>,
    /// The host clients reach the registry by (Quay's `SERVER_HOSTNAME`), for the realm.
    pub server_hostname: Option<String>,
    /// Whether clients reach this server over TLS (the scheme of a built realm).
    pub tls: bool,
    /// How long an issued token is valid.
    pub token_ttl: Duration,
    /// Bounds on password checks, so that a login flood costs its sender.
    pub logins: Arc<LoginGate>,
}

impl AuthConfig {
    /// Access control with `users` deciding both who is who and who may do what, tokens signed
    /// with `key` for `service`, valid five minutes; the realm is built per request.
    pub fn new<U>(users: Arc<U>, key: TokenKey, service: impl Into<String>) -> Self
    where
        U: Authenticator + Authorizer + 'static,
    {
        AuthConfig {
            authenticator: users.clone(),
            authorizer: users,
            key,
            service: service.into(),
            issuer: "quay-rs".to_owned(),
            realm: None,
            server_hostname: None,
            tls: false,
            token_ttl: Duration::from_secs(300),
            logins: Arc::new(LoginGate::default()),
        }
    }
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

/// Why a request is refused.
enum Refusal {
    /// Authentication (or a token with more scopes) would help: answer a challenge.
    Challenge(&'static str),
    /// The answer is already made (403, or an error of the authorizer).
    Response(Response),
}

/// Whether `host` is a plain host name or address, with an optional port.
fn plain_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

impl AuthConfig {
    fn realm(&self, headers: &HeaderMap) -> String {
        if let Some(realm) = &self.realm {
            return realm.clone();
        }
        let host = self
            .server_hostname
            .as_deref()
            .filter(|h| plain_host(h))
            .or_else(|| {
                headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .filter(|h| plain_host(h))
            })
            .unwrap_or("localhost");
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}{TOKEN_PATH}")
    }

    /// A `401 UNAUTHORIZED` with the bearer challenge for `scopes` (space-separated in one
    /// `scope` attribute, as Docker's token specification has it).
    fn challenge(&self, headers: &HeaderMap, scopes: &[Scope], message: &str) -> Response {
        let mut value = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            self.realm(headers),
            self.service
        );
        if !scopes.is_empty() {
            let joined: Vec<String> = scopes.iter().map(Scope::to_string).collect();
            value.push_str(&format!(",scope=\"{}\"", joined.join(" ")));
        }
        let mut resp = error_response("UNAUTHORIZED", StatusCode::UNAUTHORIZED, message);
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }

    /// Who the `Authorization` header says is calling. `Err` is the response to send.
    async fn caller(
        &self,
        headers: &HeaderMap,
        client: Option<IpAddr>,
    ) -> Result<Caller, Response> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(Caller {
                identity: Identity::Anonymous,
                token: None,
            });
        };
        let unauthorized = |e: &Error| self.challenge(headers, &[], e.message());
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
                match self.login(&username, &password, client).await? {
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
    /// password), `Err` the response for a failing backend or a client over its share of
    /// password checks.
    async fn login(
        &self,
        username: &str,
        password: &Secret,
        client: Option<IpAddr>,
    ) -> Result<Option<Identity>, Response> {
        let _slot = self
            .logins
            .enter(client)
            .await
            .map_err(|e| ApiError(e).into_response())?;
        match self.authenticator.authenticate(username, password).await {
            Ok(None) => {
                tracing::info!(user = ?username, client = ?client, "failed login");
                Ok(None)
            }
            Ok(found) => Ok(found),
            Err(e) => Err(ApiError(e).into_response()),
        }
    }

    /// Whether `caller` may do `need` on `repository`.
    async fn check(
        &self,
        caller: &Caller,
        repository: &RepositoryName,
        need: Actions,
    ) -> Result<(), Refusal> {
        let allowed = |who: &Identity| {
            let who = who.clone();
            async move {
                self.authorizer
                    .allowed(&who, repository)
                    .await
                    .map_err(|e| Refusal::Response(ApiError(e).into_response()))
            }
        };
        let granted = match &caller.token {
            Some(claims) => claims.repository_actions(repository),
            None => allowed(&caller.identity).await?,
        };
        if granted.contains(need) {
            return Ok(());
        }
        match &caller.identity {
            Identity::Anonymous => Err(Refusal::Challenge("authentication required")),
            // A token that lacks a right its user has: the client should get a new token.
            Identity::User(_)
                if caller.token.is_some() && allowed(&caller.identity).await?.contains(need) =>
            {
                Err(Refusal::Challenge("insufficient scope"))
            }
            Identity::User(name) => {
                tracing::info!(user = ?name, repository = %repository, action = %need, "denied");
                let (code, status) = oci_code(ErrorKind::Denied);
                Err(Refusal::Response(error_response(
                    code,
                    status,
                    &format!("{name} may not {need} {repository}"),
                )))
            }
        }
    }
}

/// Bounds on password checks: at most `per_client` at once for one client address (more wait,
/// up to `queue_per_client` of them; the rest are refused with `429` at once), and the
/// password hashing itself runs off the async threads (see [`crate::users::StaticUsers`]).
#[derive(Debug)]
pub struct LoginGate {
    per_client: usize,
    queue_per_client: usize,
    wait: Duration,
    clients: std::sync::Mutex<HashMap<IpAddr, Arc<ClientSlots>>>,
}

#[derive(Debug)]
struct ClientSlots {
    running: Arc<tokio::sync::Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
}

impl Default for LoginGate {
    fn default() -> Self {
        LoginGate::new(2, 8, Duration::from_secs(10))
    }
}

/// A password check in progress; dropping it frees the slot.
#[derive(Debug)]
pub struct LoginSlot {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl LoginGate {
    /// At most `per_client` password checks at once per client address, `queue_per_client`
    /// more waiting at most `wait`.
    pub fn new(per_client: usize, queue_per_client: usize, wait: Duration) -> Self {
        LoginGate {
            per_client: per_client.max(1),
            queue_per_client,
            wait,
            clients: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn slots(&self, client: IpAddr) -> Arc<ClientSlots> {
        let mut clients = match self.clients.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // Forget idle clients so the map stays small.
        if clients.len() > 1024 {
            clients.retain(|_, s| {
                Arc::strong_count(s) > 1 || s.running.available_permits() < self.per_client
            });
        }
        clients
            .entry(client)
            .or_insert_with(|| {
                Arc::new(ClientSlots {
                    running: Arc::new(tokio::sync::Semaphore::new(self.per_client)),
                    waiting: std::sync::atomic::AtomicUsize::new(0),
                })
            })
            .clone()
    }

    /// Waits for a password-check slot of `client` (no bound when the address is unknown).
    pub async fn enter(&self, client: Option<IpAddr>) -> quay_core::Result<LoginSlot> {
        use std::sync::atomic::Ordering;
        let Some(client) = client else {
            return Ok(LoginSlot { _permit: None });
        };
        let slots = self.slots(client);
        let busy = || {
            Error::new(
                ErrorKind::TooManyRequests,
                "too many password checks from this address at once; retry later or use a token",
            )
        };
        if let Ok(permit) = slots.running.clone().try_acquire_owned() {
            return Ok(LoginSlot {
                _permit: Some(permit),
            });
        }
        if slots.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue_per_client {
            slots.waiting.fetch_sub(1, Ordering::SeqCst);
            tracing::info!(client = %client, "password check refused: too many at once");
            return Err(busy());
        }
        let acquired = tokio::time::timeout(self.wait, slots.running.clone().acquire_owned()).await;
        slots.waiting.fetch_sub(1, Ordering::SeqCst);
        match acquired {
            Ok(Ok(permit)) => Ok(LoginSlot {
                _permit: Some(permit),
            }),
            _ => Err(busy()),
        }
    }
}

/// The action an endpoint needs.
fn needed(method: &Method, endpoint: &Endpoint) -> Actions {
    match (method, endpoint) {
        (&Method::DELETE, Endpoint::Manifest(..) | Endpoint::Blob(..)) => Actions::DELETE,
        (&Method::PUT, Endpoint::Manifest(..)) => Actions::PUSH,
        (_, Endpoint::UploadStart(_) | Endpoint::Upload(..)) => Actions::PUSH,
        _ => Actions::PULL,
    }
}

/// The client's address, when the server recorded it (`ConnectInfo`).
fn client_address(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The access check every `/v2/` request passes (a no-op when access control is off). It reads
/// the request as [`crate::request::parse_once`] parsed it, and only that.
pub(crate) async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(auth) = state.auth.clone() else {
        return next.run(req).await;
    };
    // Health, metrics and the token endpoint are open; every other /v2/ request was parsed.
    let Some(parsed) = req.extensions().get::<OciRequest>().cloned() else {
        return next.run(req).await;
    };
    let client = client_address(&req);
    let caller = match auth.caller(req.headers(), client).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    note_user(&req, &caller.identity);
    let refusal = match &parsed.endpoint {
        Endpoint::Base if caller.identity == Identity::Anonymous => {
            Some((Refusal::Challenge("authentication required"), Vec::new()))
        }
        Endpoint::Base | Endpoint::Unknown => None,
        Endpoint::Catalog => catalog_refusal(&auth, &caller).await,
        endpoint => match parsed.repository() {
            // An invalid name goes on to the handler, which answers NAME_INVALID.
            None | Some(Err(_)) => None,
            Some(Ok(repository)) => {
                let need = needed(req.method(), endpoint);
                let mut scopes = vec![Scope::repository(
                    &repository,
                    if need.contains(Actions::PUSH) {
                        Actions::PULL.union(Actions::PUSH)
                    } else {
                        need
                    },
                )];
                let source = parsed.mount_source();
                if let Some(from) = &source {
                    // A client that asks for exactly the challenged scopes can then mount.
                    scopes.push(Scope::repository(from, Actions::PULL));
                }
                match auth.check(&caller, &repository, need).await {
                    Err(refusal) => Some((refusal, scopes)),
                    Ok(()) => {
                        if let Some(from) = source {
                            if auth.check(&caller, &from, Actions::PULL).await.is_err() {
                                // A mount from a repository the caller may not read becomes a
                                // plain upload, as the spec allows; the handler reads the
                                // narrowed request.
                                if let Some(r) = req.extensions_mut().get_mut::<OciRequest>() {
                                    r.drop_mount();
                                }
                            }
                        }
                        None
                    }
                }
            }
        },
    };
    match refusal {
        Some((Refusal::Challenge(message), scopes)) => {
            auth.challenge(req.headers(), &scopes, message)
        }
        Some((Refusal::Response(resp), _)) => resp,
        None => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
    }
}

/// Tells the access log who is calling.
fn note_user(req: &Request, identity: &Identity) {
    if let (Identity::User(name), Some(note)) = (identity, req.extensions().get::<AccessNote>()) {
        note.set_user(name);
    }
}

/// Why `caller` may not list the catalog (with the scope to challenge for), or `None`.
async fn catalog_refusal(auth: &AuthConfig, caller: &Caller) -> Option<(Refusal, Vec<Scope>)> {
    match auth.authorizer.may_list_catalog(&caller.identity).await {
        Ok(true) => None,
        Ok(false) if caller.identity == Identity::Anonymous => {
            let scope = Scope {
                kind: "registry".into(),
                name: "catalog".into(),
                actions: vec!["*".into()],
            };
            Some((Refusal::Challenge("authentication required"), vec![scope]))
        }
        Ok(false) => Some((
            Refusal::Response(
                ApiError::new(ErrorKind::Denied, "may not list the catalog").into_response(),
            ),
            Vec::new(),
        )),
        Err(e) => Some((Refusal::Response(ApiError(e).into_response()), Vec::new())),
    }
}

/// The access check of pages that show what the catalog shows (the status page): with access
/// control on, the caller must be allowed to list the catalog. A refusal is the response to
/// send; its challenge offers HTTP Basic too, so that a browser asks for a password.
pub(crate) async fn catalog_access(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
    note: Option<&AccessNote>,
) -> Result<(), Response> {
    let Some(auth) = state.auth.clone() else {
        return Ok(());
    };
    let caller = auth.caller(headers, client).await.map_err(with_basic)?;
    if let (Identity::User(name), Some(note)) = (&caller.identity, note) {
        note.set_user(name);
    }
    match catalog_refusal(&auth, &caller).await {
        None => Ok(()),
        Some((Refusal::Challenge(message), scopes)) => {
            Err(with_basic(auth.challenge(headers, &scopes, message)))
        }
        Some((Refusal::Response(resp), _)) => Err(resp),
    }
}

/// Adds a Basic challenge beside a Bearer one.
fn with_basic(mut resp: Response) -> Response {
    if resp.status() == StatusCode::UNAUTHORIZED {
        resp.headers_mut().append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"quay-rs status\""),
        );
    }
    resp
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
pub(crate) async fn token_get(
    State(state): State<AppState>,
    connect: Option<axum::Extension<axum::extract::ConnectInfo<SocketAddr>>>,
    note: Option<axum::Extension<AccessNote>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some(auth) = state.auth.clone() else {
        return tokens_off();
    };
    let client = connect.map(|c| c.0 .0.ip());
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
                    match auth.login(&username, &password, client).await {
                        Ok(Some(identity)) => {
                            if let Some(note) = &note {
                                note.set_user(&username);
                            }
                            identity
                        }
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
pub(crate) async fn token_post(
    State(state): State<AppState>,
    connect: Option<axum::Extension<axum::extract::ConnectInfo<SocketAddr>>>,
    note: Option<axum::Extension<AccessNote>>,
    body: Body,
) -> Response {
    let Some(auth) = state.auth.clone() else {
        return tokens_off();
    };
    let client = connect.map(|c| c.0 .0.ip());
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
    let identity = match auth.login(&username, &password, client).await {
        Ok(Some(identity)) => {
            if let Some(note) = &note {
                note.set_user(&username);
            }
            identity
        }
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

    #[tokio::test]
    async fn password_checks_per_address_are_bounded() {
        let gate = LoginGate::new(2, 3, Duration::from_millis(100));
        let one: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let a = gate.enter(Some(one)).await.unwrap();
        let _b = gate.enter(Some(one)).await.unwrap();
        // The next three wait (and time out here, as the first two are held); the sixth is
        // refused at once.
        let waiting: Vec<_> = (0..3).map(|_| gate.enter(Some(one))).collect();
        let waiting = futures::future::join_all(waiting);
        let refused = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            gate.enter(Some(one)).await
        };
        let (waited, refused) = tokio::join!(waiting, refused);
        assert_eq!(refused.unwrap_err().kind(), ErrorKind::TooManyRequests);
        assert!(
            waited.iter().all(|w| w.is_err()),
            "held slots time the waiters out"
        );
        // Another address, and an unknown one, are not held up.
        assert!(gate.enter(Some(other)).await.is_ok());
        assert!(gate.enter(None).await.is_ok());
        // A freed slot is taken by the next check.
        drop(a);
        assert!(gate.enter(Some(one)).await.is_ok());
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
