#![no_main]
//! Token verification, scope parsing and `Authorization` parsing never panic; a token signed
//! from any claims verifies back to the same claims while it is valid, and only then.
use arbitrary::Arbitrary;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use quay_core::auth::{AccessEntry, Credentials, Scope, TokenClaims, TokenKey};

const KEY: &[u8] = b"fuzzing-key";
/// The clock skew `TokenKey::verify` tolerates.
const LEEWAY_SECS: u64 = 60;

#[derive(Debug, Arbitrary)]
struct Access {
    kind: String,
    name: String,
    actions: Vec<String>,
}

#[derive(Debug, Arbitrary)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<Access>,
}

#[derive(Debug, Arbitrary)]
enum Input<'a> {
    /// Any text as a token.
    Verify {
        token: &'a str,
        audience: &'a str,
        now: u64,
    },
    /// Any header and claims text, correctly signed, so that verify parses them.
    Signed {
        header: &'a str,
        body: &'a [u8],
        audience: &'a str,
        now: u64,
    },
    /// Claims signed by `TokenKey::sign`.
    RoundTrip {
        claims: Claims,
        now: u64,
    },
    Scope(&'a str),
    Authorization(&'a str),
}

fuzz_target!(|input: Input<'_>| {
    let key = TokenKey::new(KEY);
    match input {
        Input::Verify {
            token,
            audience,
            now,
        } => {
            let _ = key.verify(token, audience, now);
        }
        Input::Signed {
            header,
            body,
            audience,
            now,
        } => {
            let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(body));
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(KEY).unwrap();
            mac.update(input.as_bytes());
            let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
            let _ = key.verify(&format!("{input}.{sig}"), audience, now);
        }
        Input::RoundTrip { claims, now } => {
            let claims = TokenClaims {
                iss: claims.iss,
                sub: claims.sub,
                aud: claims.aud,
                exp: claims.exp,
                nbf: claims.nbf,
                iat: claims.iat,
                jti: claims.jti,
                access: claims
                    .access
                    .into_iter()
                    .map(|a| AccessEntry {
                        kind: a.kind,
                        name: a.name,
                        actions: a.actions,
                    })
                    .collect(),
            };
            let token = key.sign(&claims);
            let valid = claims.exp.saturating_add(LEEWAY_SECS) > now
                && claims.nbf <= now.saturating_add(LEEWAY_SECS);
            match key.verify(&token, &claims.aud, now) {
                Ok(back) => {
                    assert!(valid, "verified outside its validity period");
                    assert_eq!(back, claims);
                }
                Err(e) => assert!(
                    !valid || token.len() > quay_core::auth::MAX_TOKEN_LEN,
                    "a valid token was refused: {e}"
                ),
            }
            let other_audience = format!("{}x", claims.aud);
            assert!(key.verify(&token, &other_audience, now).is_err());
            assert!(TokenKey::new(b"another key")
                .verify(&token, &claims.aud, now)
                .is_err());
        }
        Input::Scope(text) => {
            if let Ok(scope) = Scope::parse(text) {
                let _ = scope.to_string();
            }
        }
        Input::Authorization(header) => {
            let _ = Credentials::from_authorization(header);
        }
    }
});
