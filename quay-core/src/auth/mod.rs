//! Authentication and authorization: who is calling ([`Identity`]), what they may do to a
//! repository ([`Actions`]), the pluggable [`Authenticator`] and [`Authorizer`], the Docker
//! token format ([`TokenKey`], [`TokenClaims`]). The users-from-configuration implementation of
//! both traits (bcrypt, htpasswd) is `quay_http::users::StaticUsers`.
//!
//! The HTTP layer (`quay-http`) turns these into the Docker token flow: a `401` challenge, a
//! token endpoint that grants the intersection of what was asked and what is allowed, and a
//! check of the token on every request. Tokens are signed with a key from the shared
//! configuration, so every instance of a geo-replicated registry accepts every other's tokens.

mod secret;
mod token;

use std::fmt;

use async_trait::async_trait;

use crate::{Error, ErrorKind, RepositoryName, Result};

pub use secret::Secret;
pub use token::{AccessEntry, TokenClaims, TokenKey, MAX_TOKEN_LEN};

/// Whether `hash` looks like a bcrypt hash (`$2a$`, `$2b$` or `$2y$`, 60 characters).
pub fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) && hash.len() == 60
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// No credentials.
    Anonymous,
    /// An authenticated user.
    User(String),
}

impl Identity {
    /// The user name, or `None` for anonymous.
    pub fn username(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::User(name) => Some(name),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("anonymous"),
            Identity::User(name) => f.write_str(name),
        }
    }
}

/// A set of repository actions: `pull`, `push`, `delete`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Actions(u8);

impl Actions {
    /// No action.
    pub const NONE: Actions = Actions(0);
    /// Read manifests, blobs, tags and referrers.
    pub const PULL: Actions = Actions(1);
    /// Upload blobs and put manifests.
    pub const PUSH: Actions = Actions(2);
    /// Delete manifests, tags and blobs.
    pub const DELETE: Actions = Actions(4);
    /// Every action.
    pub const ALL: Actions = Actions(7);

    const NAMES: [(Actions, &'static str); 3] = [
        (Actions::PULL, "pull"),
        (Actions::PUSH, "push"),
        (Actions::DELETE, "delete"),
    ];

    /// Whether every action of `other` is in `self`.
    pub fn contains(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The actions in both sets.
    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    /// The actions in either set.
    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    /// The action names, in the order `pull`, `push`, `delete`.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(a, _)| self.contains(*a))
            .map(|(_, n)| *n)
            .collect()
    }

    /// Parses one action name (`*` means all). Unknown names are `None`: a client may ask for
    /// actions this registry does not know, which are simply not granted.
    pub fn parse_one(name: &str) -> Option<Actions> {
        match name {
            "*" => Some(Actions::ALL),
            _ => Self::NAMES
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(a, _)| *a),
        }
    }

    /// Parses a list of action names, ignoring the unknown ones.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Actions {
        names
            .into_iter()
            .filter_map(Actions::parse_one)
            .fold(Actions::NONE, Actions::union)
    }
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Actions({})", self)
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// One requested scope of the Docker token flow: `repository:library/alpine:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The resource type (`repository`, `registry`).
    pub kind: String,
    /// The resource name (a repository name, or `catalog`).
    pub name: String,
    /// The action names as given (unknown ones kept, never granted).
    pub actions: Vec<String>,
}

/// The longest scope accepted (a repository name is at most 255 characters).
const MAX_SCOPE_LEN: usize = 1024;

impl Scope {
    /// Parses `type:name:action,action`. The name may itself contain `:` (a resource type may
    /// carry a class, `repository(plugin)`, which is kept in `kind`).
    pub fn parse(text: &str) -> Result<Scope> {
        let bad = |why: &str| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("invalid scope: {why} (expected type:name:actions)"),
            )
        };
        if text.len() > MAX_SCOPE_LEN {
            return Err(bad("too long"));
        }
        let (kind, rest) = text.split_once(':').ok_or_else(|| bad("no type"))?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(|| bad("no actions"))?;
        if kind.is_empty() || name.is_empty() {
            return Err(bad("empty type or name"));
        }
        let actions = actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Scope {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions,
        })
    }

    /// A repository scope.
    pub fn repository(name: &RepositoryName, actions: Actions) -> Scope {
        Scope {
            kind: "repository".to_owned(),
            name: name.to_string(),
            actions: actions.names().into_iter().map(str::to_owned).collect(),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// Credentials from an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Basic base64(user:password)`.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// `Bearer <token>`.
    Bearer(Secret),
}

/// The longest `Authorization` header accepted.
const MAX_AUTHORIZATION_LEN: usize = 16 * 1024;

impl Credentials {
    /// Parses an `Authorization` header value. The scheme is case-insensitive.
    pub fn from_authorization(header: &str) -> Result<Credentials> {
        use base64::Engine as _;
        let bad = |why: &str| {
            Error::new(
                ErrorKind::Unauthorized,
                format!("malformed Authorization header: {why}"),
            )
        };
        if header.len() > MAX_AUTHORIZATION_LEN {
            return Err(bad("too long"));
        }
        let (scheme, value) = header
            .trim()
            .split_once(' ')
            .ok_or_else(|| bad("no credentials"))?;
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value)
                .map_err(|_| bad("not base64"))?;
            let text = String::from_utf8(decoded).map_err(|_| bad("not UTF-8"))?;
            let (username, password) = text
                .split_once(':')
                .ok_or_else(|| bad("no ':' between user and password"))?;
            if username.is_empty() {
                return Err(bad("empty user name"));
            }
            Ok(Credentials::Basic {
                username: username.to_owned(),
                password: Secret::new(password),
            })
        } else if scheme.eq_ignore_ascii_case("bearer") {
            if value.is_empty() {
                return Err(bad("empty token"));
            }
            Ok(Credentials::Bearer(Secret::new(value)))
        } else {
            Err(bad("unsupported scheme"))
        }
    }
}

/// Checks a user name and password.
///
/// Implementations may be slow (password hashing is meant to be); the HTTP layer calls them for
/// token requests and for HTTP Basic requests.
#[async_trait]
pub trait Authenticator: Send + Sync + fmt::Debug {
    /// The identity of `username` when `password` is right, `None` when it is not (or the user
    /// is unknown). `Err` only for a failure of the backend.
    async fn authenticate(&self, username: &str, password: &Secret) -> Result<Option<Identity>>;
}

/// Decides what an identity may do.
#[async_trait]
pub trait Authorizer: Send + Sync + fmt::Debug {
    /// The actions `who` may perform on `repository`.
    async fn allowed(&self, who: &Identity, repository: &RepositoryName) -> Result<Actions>;

    /// Whether `who` may list the catalog at all (each entry is further filtered by
    /// [`Authorizer::allowed`] pull rights).
    async fn may_list_catalog(&self, who: &Identity) -> Result<bool> {
        Ok(matches!(who, Identity::User(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_and_print() {
        let a = Actions::from_names(["push", "pull", "frobnicate"]);
        assert_eq!(a, Actions::PULL.union(Actions::PUSH));
        assert_eq!(a.to_string(), "pull,push");
        assert_eq!(Actions::from_names(["*"]), Actions::ALL);
        assert!(Actions::ALL.contains(Actions::DELETE));
        assert!(!a.contains(Actions::DELETE));
        assert!(Actions::NONE.is_empty());
    }

    #[test]
    fn scopes_parse() {
        let s = Scope::parse("repository:library/alpine:pull,push").unwrap();
        assert_eq!(s.kind, "repository");
        assert_eq!(s.name, "library/alpine");
        assert_eq!(s.actions, ["pull", "push"]);
        assert_eq!(s.to_string(), "repository:library/alpine:pull,push");
        let s = Scope::parse("registry:catalog:*").unwrap();
        assert_eq!((s.kind.as_str(), s.name.as_str()), ("registry", "catalog"));
        let s = Scope::parse("repository:host:5000/x:pull").unwrap();
        assert_eq!(s.name, "host:5000/x");
        assert!(Scope::parse("repository").is_err());
        assert!(Scope::parse("repository:pull").is_err());
        assert!(Scope::parse(":x:pull").is_err());
        assert_eq!(Scope::parse("repository:x:").unwrap().actions.len(), 0);
    }

    #[test]
    fn authorization_headers_parse() {
        // "alice:s3cr:et" in base64: the password may contain ':'.
        let c = Credentials::from_authorization("Basic YWxpY2U6czNjcjpldA==").unwrap();
        assert_eq!(
            c,
            Credentials::Basic {
                username: "alice".into(),
                password: Secret::new("s3cr:et")
            }
        );
        assert!(!format!("{c:?}").contains("s3cr"));
        let c = Credentials::from_authorization("bearer abc.def.ghi").unwrap();
        assert_eq!(c, Credentials::Bearer(Secret::new("abc.def.ghi")));
        for bad in [
            "Basic",
            "Basic !!!",
            "Basic OnBhc3M=",
            "Digest x",
            "Bearer  ",
            "",
        ] {
            let e = Credentials::from_authorization(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unauthorized, "{bad}");
        }
    }
}
