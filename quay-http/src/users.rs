//! Users from the configuration: bcrypt password hashes, superusers, per-namespace grants and
//! public repositories. Implements both [`Authenticator`] and [`Authorizer`].
//!
//! bcrypt is slow on purpose (tens of milliseconds per check), so it never runs on the async
//! threads that serve requests: each check runs on tokio's blocking pool, and at most
//! [`StaticUsers::max_concurrent_checks`] at once process-wide, so a flood of logins leaves the
//! other cores to everyone else. A successful check is remembered (as a digest of the
//! credential), so a client that sends Basic credentials with every request pays once.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use quay_core::auth::is_bcrypt;
use quay_core::{
    Actions, Authenticator, Authorizer, Error, ErrorKind, Identity, RepositoryName, Result, Secret,
};
use sha2::{Digest as _, Sha256};

/// Rights of one user on one namespace (a repository name prefix, whole path components; `*`
/// is every repository).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceGrant {
    /// The namespace.
    pub namespace: String,
    /// What the user may do there.
    pub actions: Actions,
}

/// What [`StaticUsers`] is built from.
#[derive(Clone, Default)]
pub struct StaticUsersConfig {
    /// User name to bcrypt hash.
    pub users: BTreeMap<String, String>,
    /// Users who may do everything (Quay's `SUPER_USERS`).
    pub super_users: Vec<String>,
    /// Per-user grants beyond the user's own namespace.
    pub grants: BTreeMap<String, Vec<NamespaceGrant>>,
    /// Repositories every user may pull: exact names, `prefix/*`, or `*`.
    pub public_repositories: Vec<String>,
    /// Whether anonymous callers may pull the public repositories.
    pub anonymous_pull: bool,
}

impl fmt::Debug for StaticUsersConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticUsersConfig")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("super_users", &self.super_users)
            .field("grants", &self.grants)
            .field("public_repositories", &self.public_repositories)
            .field("anonymous_pull", &self.anonymous_pull)
            .finish()
    }
}

/// Parses an htpasswd file. Only bcrypt hashes (`htpasswd -B`: `$2y$`, `$2b$`, `$2a$`) are
/// accepted; blank lines and `#` comments are skipped. Errors name the line, never its hash.
pub fn parse_htpasswd(text: &str) -> Result<BTreeMap<String, String>> {
    let mut users = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad =
            |why: &str| Error::new(ErrorKind::Config, format!("htpasswd line {}: {why}", n + 1));
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| bad("expected user:hash"))?;
        if user.is_empty() {
            return Err(bad("empty user name"));
        }
        if !is_bcrypt(hash) {
            return Err(bad(
                "only bcrypt hashes are supported (create them with htpasswd -B)",
            ));
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    Ok(users)
}

/// Successful logins remembered (as digests), so bcrypt runs once per credential, not once per
/// request.
const CACHE_LIMIT: usize = 4096;

/// Users, rights and public repositories from the configuration.
pub struct StaticUsers {
    config: StaticUsersConfig,
    verified: Mutex<HashSet<[u8; 32]>>,
    /// Password checks running at once, process-wide.
    checks: Arc<tokio::sync::Semaphore>,
    /// Checked against when a user is unknown, so that an unknown user takes as long as a
    /// wrong password (a hash at the cost the configured hashes use).
    dummy_hash: String,
}

impl fmt::Debug for StaticUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticUsers")
            .field("config", &self.config)
            .finish()
    }
}

impl StaticUsers {
    /// Checks the configuration (every hash is bcrypt) and builds the user list.
    pub fn new(config: StaticUsersConfig) -> Result<StaticUsers> {
        for (user, hash) in &config.users {
            if !is_bcrypt(hash) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("user {user}: the password hash is not a bcrypt hash"),
                ));
            }
        }
        let cost = config
            .users
            .values()
            .filter_map(|h| h.get(4..6)?.parse::<u32>().ok())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        let dummy_hash = bcrypt::hash(uuid::Uuid::new_v4().to_string(), cost)
            .map_err(|e| Error::internal("cannot hash").with_source(e))?;
        Ok(StaticUsers {
            config,
            verified: Mutex::new(HashSet::new()),
            checks: Arc::new(tokio::sync::Semaphore::new(Self::max_concurrent_checks())),
            dummy_hash,
        })
    }

    /// How many bcrypt checks run at once: one core fewer than the machine has (at least one),
    /// so that a login flood cannot take every core from the requests of other users.
    pub fn max_concurrent_checks() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get().saturating_sub(1))
            .unwrap_or(1)
            .max(1)
    }

    /// Runs `bcrypt::verify` on the blocking pool, at most
    /// [`StaticUsers::max_concurrent_checks`] at once.
    async fn verify(&self, password: &Secret, hash: &str) -> Result<bool> {
        let _permit = self
            .checks
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::internal("the password check pool is closed"))?;
        let (password, hash) = (password.clone(), hash.to_owned());
        tokio::task::spawn_blocking(move || bcrypt::verify(password.expose(), &hash))
            .await
            .map_err(|e| Error::internal("a password check did not finish").with_source(e))?
            .map_err(|_| {
                Error::new(
                    ErrorKind::Config,
                    "a configured password hash cannot be read",
                )
            })
    }

    /// The number of users.
    pub fn len(&self) -> usize {
        self.config.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.config.users.is_empty()
    }

    fn is_superuser(&self, name: &str) -> bool {
        self.config.super_users.iter().any(|s| s == name)
    }

    fn is_public(&self, repository: &RepositoryName) -> bool {
        self.config
            .public_repositories
            .iter()
            .any(|p| pattern_matches(p, repository.as_str()))
    }

    fn cache_key(username: &str, password: &Secret, hash: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [username, password.expose(), hash] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }
}

/// Whether `name` is `namespace` or lies under it (whole path components); `*` matches all.
fn in_namespace(namespace: &str, name: &str) -> bool {
    namespace == "*"
        || name == namespace
        || (name.len() > namespace.len()
            && name.starts_with(namespace)
            && name.as_bytes()[namespace.len()] == b'/')
}

fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(prefix) => in_namespace(prefix, name) && name != prefix,
        None => pattern == "*" || pattern == name,
    }
}

#[async_trait]
impl Authenticator for StaticUsers {
    async fn authenticate(&self, username: &str, password: &Secret) -> Result<Option<Identity>> {
        let Some(hash) = self.config.users.get(username) else {
            // As long as a wrong password takes, so that user names cannot be probed.
            let _ = self.verify(password, &self.dummy_hash).await;
            return Ok(None);
        };
        let key = Self::cache_key(username, password, hash);
        if let Ok(cache) = self.verified.lock() {
            if cache.contains(&key) {
                return Ok(Some(Identity::User(username.to_owned())));
            }
        }
        let ok = self.verify(password, hash).await?;
        if !ok {
            return Ok(None);
        }
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key);
        }
        Ok(Some(Identity::User(username.to_owned())))
    }
}

#[async_trait]
impl Authorizer for StaticUsers {
    async fn allowed(&self, who: &Identity, repository: &RepositoryName) -> Result<Actions> {
        let public = self.is_public(repository);
        let Identity::User(name) = who else {
            return Ok(if public && self.config.anonymous_pull {
                Actions::PULL
            } else {
                Actions::NONE
            });
        };
        if !self.config.users.contains_key(name) {
            // A token for a user since removed from the configuration grants nothing more.
            return Ok(Actions::NONE);
        }
        if self.is_superuser(name) {
            return Ok(Actions::ALL);
        }
        let mut actions = if public { Actions::PULL } else { Actions::NONE };
        if in_namespace(name, repository.as_str()) {
            actions = Actions::ALL;
        }
        for grant in self.config.grants.get(name).into_iter().flatten() {
            if in_namespace(&grant.namespace, repository.as_str()) {
                actions = actions.union(grant.actions);
            }
        }
        Ok(actions)
    }

    async fn may_list_catalog(&self, who: &Identity) -> Result<bool> {
        Ok(match who {
            Identity::User(name) => self.config.users.contains_key(name),
            Identity::Anonymous => self.config.anonymous_pull,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepositoryName {
        s.parse().unwrap()
    }

    fn users() -> StaticUsers {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let mut config = StaticUsersConfig::default();
        for u in ["admin", "alice", "bob"] {
            config.users.insert(u.into(), hash.clone());
        }
        config.super_users = vec!["admin".into()];
        config.grants.insert(
            "bob".into(),
            vec![NamespaceGrant {
                namespace: "team".into(),
                actions: Actions::PULL,
            }],
        );
        config.public_repositories = vec!["library/*".into(), "pub".into()];
        StaticUsers::new(config).unwrap()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn passwords_are_checked() {
        let u = users();
        block_on(async {
            let ok = u.authenticate("alice", &Secret::new("pw")).await.unwrap();
            assert_eq!(ok, Some(Identity::User("alice".into())));
            // The second time comes from the cache, same answer.
            let ok = u.authenticate("alice", &Secret::new("pw")).await.unwrap();
            assert_eq!(ok, Some(Identity::User("alice".into())));
            assert_eq!(
                u.authenticate("alice", &Secret::new("pW")).await.unwrap(),
                None
            );
            assert_eq!(
                u.authenticate("eve", &Secret::new("pw")).await.unwrap(),
                None
            );
        });
    }

    #[test]
    fn rights_follow_namespaces() {
        let u = users();
        let alice = Identity::User("alice".into());
        let bob = Identity::User("bob".into());
        let admin = Identity::User("admin".into());
        let anon = Identity::Anonymous;
        block_on(async {
            assert_eq!(u.allowed(&admin, &repo("x/y")).await.unwrap(), Actions::ALL);
            assert_eq!(
                u.allowed(&alice, &repo("alice/app")).await.unwrap(),
                Actions::ALL
            );
            assert_eq!(
                u.allowed(&alice, &repo("alice")).await.unwrap(),
                Actions::ALL
            );
            assert_eq!(
                u.allowed(&alice, &repo("alicex/app")).await.unwrap(),
                Actions::NONE
            );
            assert_eq!(
                u.allowed(&alice, &repo("team/app")).await.unwrap(),
                Actions::NONE
            );
            assert_eq!(
                u.allowed(&bob, &repo("team/app")).await.unwrap(),
                Actions::PULL
            );
            assert_eq!(
                u.allowed(&bob, &repo("library/a")).await.unwrap(),
                Actions::PULL
            );
            assert_eq!(u.allowed(&bob, &repo("pub")).await.unwrap(), Actions::PULL);
            assert_eq!(
                u.allowed(&bob, &repo("pub/x")).await.unwrap(),
                Actions::NONE
            );
            // Anonymous pull of public repositories is off by default.
            assert_eq!(
                u.allowed(&anon, &repo("library/a")).await.unwrap(),
                Actions::NONE
            );
            let ghost = Identity::User("ghost".into());
            assert_eq!(
                u.allowed(&ghost, &repo("ghost/a")).await.unwrap(),
                Actions::NONE
            );
            assert!(!u.may_list_catalog(&anon).await.unwrap());
            assert!(u.may_list_catalog(&bob).await.unwrap());
        });
        let mut config = u.config.clone();
        config.anonymous_pull = true;
        let u = StaticUsers::new(config).unwrap();
        block_on(async {
            assert_eq!(
                u.allowed(&anon, &repo("library/a")).await.unwrap(),
                Actions::PULL
            );
            assert_eq!(
                u.allowed(&anon, &repo("alice/a")).await.unwrap(),
                Actions::NONE
            );
        });
    }

    #[test]
    fn htpasswd_files_parse() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let text = format!("# users\n\nalice:{hash}\nbob:{hash}\n");
        let users = parse_htpasswd(&text).unwrap();
        assert_eq!(users.len(), 2);
        let e = parse_htpasswd("carol:{SHA}abcdef\n").unwrap_err();
        assert!(e.message().contains("line 1"), "{e}");
        assert!(!e.message().contains("abcdef"));
        assert!(parse_htpasswd("nocolon\n").is_err());
        let mut bad = StaticUsersConfig::default();
        bad.users.insert("x".into(), "plain".into());
        assert!(StaticUsers::new(bad).is_err());
        assert!(is_bcrypt(&tests::users().dummy_hash));
    }
}
