use super::*;

const BASIC: &str = r#"
DISTRIBUTED_STORAGE_CONFIG:
  local_us:
    - LocalStorage
    - storage_path: /tmp/quay-us
  scratch:
    - MemoryStorage
    - {}
DISTRIBUTED_STORAGE_PREFERENCE: [local_us, scratch]
DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [local_us, scratch]
FEATURE_STORAGE_REPLICATION: true
DB_URI: postgresql://quay:secret@db/quay
SETUP_COMPLETE: true
REGISTRY_TITLE: Quay
"#;

#[test]
fn parses_local_and_memory() {
    let c = QuayConfig::from_yaml(BASIC, None).unwrap();
    assert_eq!(c.locations.len(), 2);
    assert_eq!(c.preference[0].as_str(), "local_us");
    assert!(c.replication);
    assert_eq!(c.db_uri.as_deref(), Some("postgres://quay:secret@db/quay"));
    assert_eq!(c.ignored_keys, vec!["REGISTRY_TITLE", "SETUP_COMPLETE"]);
    assert!(!format!("{c:?}").contains("secret"));
}

#[test]
fn environment_overrides_preference() {
    let c = QuayConfig::from_yaml(BASIC, Some(" scratch  local_us ")).unwrap();
    assert_eq!(c.preference[0].as_str(), "scratch");
    let err = QuayConfig::from_yaml(BASIC, Some("nowhere")).unwrap_err();
    assert!(err
        .message()
        .contains("QUAY_DISTRIBUTED_STORAGE_PREFERENCE"));
}

#[test]
fn reports_every_problem_with_its_key() {
    let text = r#"
DISTRIBUTED_STORAGE_CONFIG:
  a: [NoSuchDriver, {}]
  b: [LocalStorage, {}]
DISTRIBUTED_STORAGE_PREFERENCE: [c]
DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [d]
DISTRIBUTED_STORAGE_PREFERENCES: [a]
"#;
    let msg = QuayConfig::from_yaml(text, None).unwrap_err().to_string();
    for needle in [
        "DISTRIBUTED_STORAGE_CONFIG.a: unknown storage driver \"NoSuchDriver\"",
        "DISTRIBUTED_STORAGE_CONFIG.b.storage_path: LocalStorage requires storage_path",
        "DISTRIBUTED_STORAGE_PREFERENCE: names \"c\"",
        "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: names \"d\"",
        "DISTRIBUTED_STORAGE_PREFERENCES: unknown key; did you mean DISTRIBUTED_STORAGE_PREFERENCE?",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
    }
}

#[test]
fn empty_config_is_an_error() {
    assert!(QuayConfig::from_yaml("", None).is_err());
}

#[test]
fn edit_distance_basics() {
    assert_eq!(keys::edit_distance("DB_URL", "DB_URI"), 1);
    assert_eq!(keys::classify("DB_URL"), keys::KeyClass::Misspelt("DB_URI"));
    assert_eq!(keys::classify("DB_URI_FILE"), keys::KeyClass::QuayIgnored);
    assert_eq!(
        keys::classify("PREFERRED_URL_SCHEME"),
        keys::KeyClass::QuayIgnored
    );
}
