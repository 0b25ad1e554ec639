//! Garbage collection and the time machine, with Quay's keys as Quay defines them, plus two
//! keys of ours for the orphan sweep.

use serde_yaml::Value;

use super::Problems;

/// Garbage-collection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcSettings {
    /// `FEATURE_GARBAGE_COLLECTION` (true): collect in the background.
    pub enabled: bool,
    /// `GARBAGE_COLLECTION_FREQUENCY` (30): seconds between collection passes.
    pub frequency_secs: u64,
    /// `PUSH_TEMP_TAG_EXPIRATION_SEC` (3600): a manifest pushed or blob uploaded this recently
    /// is never collected, so a push in progress keeps its layers.
    pub push_protection_secs: u64,
    /// `DEFAULT_TAG_EXPIRATION` (`2w`): the time-machine window, in seconds; a moved or
    /// deleted tag keeps its former manifest this long and can be restored.
    pub tag_expiration_secs: u64,
    /// `TAG_EXPIRATION_OPTIONS`: accepted and validated (per-namespace expiration is not
    /// implemented).
    pub tag_expiration_options: Vec<String>,
    /// `CLEAN_BLOB_UPLOAD_FOLDER` (true): sweep upload leftovers (session folders with no
    /// session, temporary files, unfinished multipart uploads) older than the orphan grace.
    pub clean_upload_folder: bool,
    /// `QUAY_GC_ORPHAN_GRACE_SECS` (172800, two days as Quay's upload-folder cleanup): objects
    /// with no database row are removed once untouched this long.
    pub orphan_grace_secs: u64,
    /// `QUAY_GC_ORPHAN_SWEEP_INTERVAL_SECS` (3600): how often the background sweeps each
    /// location for orphans (a listing of the whole location; 0 turns it off).
    pub orphan_sweep_interval_secs: u64,
}

impl Default for GcSettings {
    fn default() -> Self {
        GcSettings {
            enabled: true,
            frequency_secs: 30,
            push_protection_secs: 3600,
            tag_expiration_secs: 14 * 24 * 3600,
            tag_expiration_options: Vec::new(),
            clean_upload_folder: true,
            orphan_grace_secs: 2 * 24 * 3600,
            orphan_sweep_interval_secs: 3600,
        }
    }
}

/// Quay's duration strings: a number and a unit (`s`, `m` minutes, `h`, `d`, `w`, and `y` where
/// `allow_years`), e.g. `2w`. Returns seconds.
pub fn parse_duration(text: &str, allow_years: bool) -> Option<u64> {
    let unit = text.chars().last()?;
    let number: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        'y' if allow_years => 365 * 86_400,
        _ => return None,
    };
    number.checked_mul(seconds)
}

/// A number of seconds given as a YAML number or a numeric string (Quay's schema types some of
/// these as strings).
fn seconds(value: &Value, key: &str, problems: &mut Problems) -> Option<u64> {
    let parsed = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    if parsed.is_none() {
        problems.push(key, "must be a whole number of seconds");
    }
    parsed
}

fn boolean(value: &Value, key: &str, problems: &mut Problems) -> Option<bool> {
    let parsed = value.as_bool();
    if parsed.is_none() {
        problems.push(key, "must be true or false");
    }
    parsed
}

/// The raw keys, as serde read them.
#[derive(Debug, Default)]
pub(super) struct RawGc<'a> {
    pub feature: Option<&'a Value>,
    pub frequency: Option<&'a Value>,
    pub push_temp: Option<&'a Value>,
    pub default_expiration: Option<&'a Value>,
    pub options: Option<&'a Value>,
    pub clean_upload_folder: Option<&'a Value>,
    pub orphan_grace: Option<u64>,
    pub orphan_sweep_interval: Option<u64>,
}

/// Validates the garbage-collection keys, reporting each problem with its key.
pub(super) fn check(raw: RawGc<'_>, problems: &mut Problems) -> GcSettings {
    let mut s = GcSettings::default();
    if let Some(v) = raw.feature {
        s.enabled = boolean(v, "FEATURE_GARBAGE_COLLECTION", problems).unwrap_or(s.enabled);
    }
    if let Some(v) = raw.frequency {
        match seconds(v, "GARBAGE_COLLECTION_FREQUENCY", problems) {
            Some(0) => problems.push("GARBAGE_COLLECTION_FREQUENCY", "must be at least 1"),
            Some(n) => s.frequency_secs = n,
            None => {}
        }
    }
    if let Some(v) = raw.push_temp {
        if let Some(n) = seconds(v, "PUSH_TEMP_TAG_EXPIRATION_SEC", problems) {
            s.push_protection_secs = n;
        }
    }
    if let Some(v) = raw.default_expiration {
        match v.as_str().and_then(|t| parse_duration(t, false)) {
            Some(n) => s.tag_expiration_secs = n,
            None => problems.push(
                "DEFAULT_TAG_EXPIRATION",
                "must match ^[0-9]+(w|m|d|h|s)$, e.g. 2w",
            ),
        }
    }
    if let Some(v) = raw.options {
        match v.as_sequence() {
            Some(items) => {
                for item in items {
                    match item.as_str().filter(|t| parse_duration(t, true).is_some()) {
                        Some(t) => s.tag_expiration_options.push(t.to_owned()),
                        None => problems.push(
                            "TAG_EXPIRATION_OPTIONS",
                            format_args!("{item:?} does not match ^[0-9]+(y|w|m|d|h|s)$"),
                        ),
                    }
                }
            }
            None => problems.push("TAG_EXPIRATION_OPTIONS", "must be a list"),
        }
    }
    if let Some(v) = raw.clean_upload_folder {
        s.clean_upload_folder =
            boolean(v, "CLEAN_BLOB_UPLOAD_FOLDER", problems).unwrap_or(s.clean_upload_folder);
    }
    if let Some(n) = raw.orphan_grace {
        s.orphan_grace_secs = n;
    }
    if let Some(n) = raw.orphan_sweep_interval {
        s.orphan_sweep_interval_secs = n;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quay_duration_strings() {
        assert_eq!(parse_duration("2w", false), Some(14 * 86_400));
        assert_eq!(parse_duration("90m", false), Some(5400));
        assert_eq!(parse_duration("0s", false), Some(0));
        assert_eq!(parse_duration("3y", false), None);
        assert_eq!(parse_duration("3y", true), Some(3 * 365 * 86_400));
        for bad in ["", "w", "2", "2 w", "-1d", "1.5h", "2W"] {
            assert_eq!(parse_duration(bad, true), None, "{bad}");
        }
    }
}
