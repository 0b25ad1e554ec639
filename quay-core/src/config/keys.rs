//! Which top-level keys are ours, which are Quay's and ignored, and which look misspelt.

/// The keys this engine reads.
pub(crate) const OURS: &[&str] = &[
    "DISTRIBUTED_STORAGE_CONFIG",
    "DISTRIBUTED_STORAGE_PREFERENCE",
    "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS",
    "FEATURE_STORAGE_REPLICATION",
    "FEATURE_PROXY_STORAGE",
    "DB_URI",
    "BUILDLOGS_REDIS",
    "USER_EVENTS_REDIS",
    "SERVER_HOSTNAME",
    "SUPER_USERS",
    "QUAY_REPLICATION_QUEUE",
    "QUAY_REPLICATION_REDIS",
    "QUAY_REPLICATION_REDIS_PREFIX",
    "QUAY_REPLICATION_WORKERS",
    "QUAY_REPLICATION_MAX_ATTEMPTS",
    "QUAY_RECONCILE_INTERVAL_SECS",
    "QUAY_REPLICATION_LEASE_SECS",
    "QUAY_STORAGE_TIMEOUT_SECS",
    "QUAY_DATABASE_TIMEOUT_SECS",
    "QUAY_AUTH_USERS",
    "QUAY_AUTH_HTPASSWD",
    "QUAY_AUTH_PERMISSIONS",
    "QUAY_AUTH_PUBLIC_REPOSITORIES",
    "QUAY_AUTH_ANONYMOUS_PULL",
    "QUAY_AUTH_TOKEN_KEY",
    "SECRET_KEY",
    "QUAY_AUTH_SERVICE",
    "QUAY_AUTH_REALM",
    "QUAY_AUTH_TOKEN_EXPIRY_SECS",
    "QUAY_TLS_CERT",
    "QUAY_TLS_KEY",
    "PREFERRED_URL_SCHEME",
    "QUAY_PRESIGN_EXPIRY_SECS",
    "QUAY_MAX_UPLOADS_PER_REPOSITORY",
    "QUAY_UPLOAD_PART_BUFFERS",
    "QUAY_CLIENT_BODY_TIMEOUT_SECS",
    "QUAY_CLIENT_BODY_MIN_BYTES_PER_SEC",
    "FEATURE_GARBAGE_COLLECTION",
    "GARBAGE_COLLECTION_FREQUENCY",
    "PUSH_TEMP_TAG_EXPIRATION_SEC",
    "DEFAULT_TAG_EXPIRATION",
    "TAG_EXPIRATION_OPTIONS",
    "CLEAN_BLOB_UPLOAD_FOLDER",
    "REGISTRY_STATE",
    "DISABLE_PUSHES",
    "QUAY_SCRUB_BYTES_PER_SEC",
    "QUAY_SCRUB_INTERVAL_SECS",
    "QUAY_GC_ORPHAN_GRACE_SECS",
    "QUAY_GC_ORPHAN_SWEEP_INTERVAL_SECS",
    "QUAY_LOG_FORMAT",
    "QUAY_REPLICATION_DURABILITY",
    "QUAY_REPLICATION_WEBHOOKS",
    "QUAY_REPLICATION_WEBHOOK_INTERVAL_SECS",
    "QUAY_REPLICATION_WEBHOOK_WINDOW_SECS",
];

/// Keys of Quay's that are close to ours in spelling but are real, distinct keys.
const QUAY_NEAR_OURS: &[&str] = &["DB_URI_FILE", "SERVER_HOSTNAMES", "FEATURE_PROXY_CACHE"];

/// How a key not in [`OURS`] is treated.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyClass {
    /// A Quay key (or any other key) this engine does not use.
    QuayIgnored,
    /// Probably a misspelling of one of ours.
    Misspelt(&'static str),
    /// Unknown and not close to ours: ignored too.
    Unknown,
}

pub(crate) fn classify(key: &str) -> KeyClass {
    if QUAY_NEAR_OURS.contains(&key) {
        return KeyClass::QuayIgnored;
    }
    let upper = key.to_ascii_uppercase();
    let best = OURS
        .iter()
        .map(|ours| (edit_distance(&upper, ours), *ours))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, ours)) if d <= 2 || (upper == ours) => KeyClass::Misspelt(ours),
        _ if key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') =>
        {
            KeyClass::QuayIgnored
        }
        _ => KeyClass::Unknown,
    }
}

/// Levenshtein distance over bytes.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
