//! Docker registry bearer tokens: compact JWS (`header.claims.signature`, base64url without
//! padding) signed with HMAC-SHA256 under a key every instance shares.
//!
//! Only `HS256` is accepted: the algorithm in a token's header is checked against it, never
//! trusted (`none` and every other algorithm are refused).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{Actions, Identity};
use crate::{Error, ErrorKind, RepositoryName, Result};

type HmacSha256 = Hmac<Sha256>;

/// The longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Clock skew tolerated between instances, in seconds.
const LEEWAY_SECS: u64 = 60;

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// One grant in a token: `{"type":"repository","name":"x","actions":["pull"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// The resource type (`repository`, `registry`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The resource name.
    pub name: String,
    /// The granted actions.
    pub actions: Vec<String>,
}

/// The claims of a registry token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject: the user name, empty for anonymous.
    pub sub: String,
    /// Audience: the service the token is for.
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Not before (seconds since the epoch).
    pub nbf: u64,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// A unique id.
    pub jti: String,
    /// What the token grants.
    #[serde(default)]
    pub access: Vec<AccessEntry>,
}

impl TokenClaims {
    /// Who the token was issued to.
    pub fn identity(&self) -> Identity {
        if self.sub.is_empty() {
            Identity::Anonymous
        } else {
            Identity::User(self.sub.clone())
        }
    }

    /// The actions the token grants on `repository`.
    pub fn repository_actions(&self, repository: &RepositoryName) -> Actions {
        self.access
            .iter()
            .filter(|e| e.kind == "repository" && e.name == repository.as_str())
            .fold(Actions::NONE, |acc, e| {
                acc.union(Actions::from_names(e.actions.iter().map(String::as_str)))
            })
    }

    /// Whether the token grants `action` on the resource `kind:name` (e.g. `registry:catalog`).
    pub fn grants(&self, kind: &str, name: &str, action: &str) -> bool {
        self.access.iter().any(|e| {
            e.kind == kind && e.name == name && e.actions.iter().any(|a| a == action || a == "*")
        })
    }
}

/// The shared signing key.
#[derive(Clone)]
pub struct TokenKey {
    key: Vec<u8>,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

fn invalid(why: &str) -> Error {
    Error::new(ErrorKind::Unauthorized, format!("invalid token: {why}"))
}

impl TokenKey {
    /// A key from the shared secret's bytes.
    pub fn new(secret: &[u8]) -> TokenKey {
        TokenKey {
            key: secret.to_vec(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length: the error case cannot happen, and would fall back to
        // an all-zero block-sized key rather than panic.
        HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()))
    }

    /// Signs `claims` into a compact token.
    pub fn sign(&self, claims: &TokenClaims) -> String {
        let body = serde_json::to_vec(claims).unwrap_or_default();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(body)
        );
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = mac.finalize().into_bytes();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// Checks a token's signature, algorithm, audience and validity period at `now_unix`
    /// (with a minute of leeway for clock skew), and returns its claims. Every failure is an
    /// `Unauthorized` error that says what was wrong, never echoing the token.
    pub fn verify(&self, token: &str, audience: &str, now_unix: u64) -> Result<TokenClaims> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("too long"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(body), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not three dot-separated parts"));
        };
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| invalid("signature is not base64url"))?;
        let mut mac = self.mac();
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| invalid("bad signature"))?;
        // Signed by us: the header and claims are ours, but are still checked, not trusted.
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| invalid("header is not base64url"))?;
        #[derive(Deserialize)]
        struct Header {
            alg: String,
        }
        let header: Header =
            serde_json::from_slice(&header).map_err(|_| invalid("header is not JSON"))?;
        if header.alg != "HS256" {
            return Err(invalid("unsupported algorithm"));
        }
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| invalid("claims are not base64url"))?;
        let claims: TokenClaims =
            serde_json::from_slice(&body).map_err(|_| invalid("claims are not valid"))?;
        if claims.aud != audience {
            return Err(invalid("issued for another service"));
        }
        if claims.exp.saturating_add(LEEWAY_SECS) <= now_unix {
            return Err(invalid("expired"));
        }
        if claims.nbf > now_unix.saturating_add(LEEWAY_SECS) {
            return Err(invalid("not yet valid"));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> TokenClaims {
        TokenClaims {
            iss: "quay-rs".into(),
            sub: "alice".into(),
            aud: "registry".into(),
            exp: 2_000,
            nbf: 1_000,
            iat: 1_000,
            jti: "1".into(),
            access: vec![AccessEntry {
                kind: "repository".into(),
                name: "team/app".into(),
                actions: vec!["pull".into(), "push".into()],
            }],
        }
    }

    #[test]
    fn round_trip_and_checks() {
        let key = TokenKey::new(b"shared-secret-of-both-regions");
        let token = key.sign(&claims());
        let back = key.verify(&token, "registry", 1_500).unwrap();
        assert_eq!(back, claims());
        let repo: RepositoryName = "team/app".parse().unwrap();
        assert_eq!(
            back.repository_actions(&repo),
            Actions::PULL.union(Actions::PUSH)
        );
        assert_eq!(back.identity(), Identity::User("alice".into()));

        // Another key, another audience, too late, too early.
        let other = TokenKey::new(b"another-secret");
        assert!(other.verify(&token, "registry", 1_500).is_err());
        assert!(key.verify(&token, "elsewhere", 1_500).is_err());
        assert!(key.verify(&token, "registry", 2_061).is_err());
        assert!(key.verify(&token, "registry", 2_030).is_ok());
        assert!(key.verify(&token, "registry", 950).is_ok());
        assert!(key.verify(&token, "registry", 100).is_err());
    }

    #[test]
    fn tampering_and_other_algorithms_are_refused() {
        let key = TokenKey::new(b"k");
        let token = key.sign(&claims());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut forged = claims();
        forged.access[0].actions.push("delete".into());
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let e = key.verify(&parts.join("."), "registry", 1_500).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthorized);

        // alg "none" with an empty signature.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap())
        );
        assert!(key.verify(&none, "registry", 1_500).is_err());
        for junk in ["", "a.b", "a.b.c.d", "...", &"x".repeat(MAX_TOKEN_LEN + 1)] {
            assert!(key.verify(junk, "registry", 1_500).is_err());
        }
        assert_eq!(format!("{key:?}"), "TokenKey(<redacted>)");
    }
}
