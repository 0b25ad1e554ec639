//! Driver parameters: what each driver takes ([`Param`]), and the type checks of their values.
//!
//! Values are checked by kind, never echoed in messages (a value may be a secret).

use std::collections::BTreeMap;

use serde_yaml::Value;

pub use crate::auth::Secret;

/// The type a parameter's value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A string (a YAML number is taken as its text, e.g. a bucket named `2024`).
    Text,
    /// A string that is never printed.
    Secret,
    /// `true` or `false`.
    Bool,
    /// An integer from 1 to 65535.
    Port,
    /// A mapping (Swift's `os_options`).
    Mapping,
}

/// One parameter a driver takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// Added to the "requires" message when the parameter is missing.
    pub hint: &'static str,
}

/// A required parameter.
pub(crate) const fn req(name: &'static str, kind: Kind) -> Param {
    Param {
        name,
        kind,
        required: true,
        hint: "",
    }
}

/// A required parameter, with a hint for the "requires" message.
pub(crate) const fn req_because(name: &'static str, kind: Kind, hint: &'static str) -> Param {
    Param {
        name,
        kind,
        required: true,
        hint,
    }
}

/// An optional parameter.
pub(crate) const fn opt(name: &'static str, kind: Kind) -> Param {
    Param {
        name,
        kind,
        required: false,
        hint: "",
    }
}

/// Problems as (parameter key, message); an empty key is the location itself.
pub(crate) type Problems = Vec<(String, String)>;

/// A checked value.
#[derive(Debug, Clone, PartialEq)]
enum Checked {
    Text(String),
    Bool(bool),
    Port(u16),
    Mapping,
}

/// The parameters of one location, each checked against its [`Param`]. Missing, null and
/// empty values are all absent.
#[derive(Debug, Default)]
pub(crate) struct Values(BTreeMap<&'static str, Checked>);

impl Values {
    /// Checks `mapping` against `params`: reports unknown parameters (and Quay's parameters
    /// in `unsupported`), values of the wrong type, and missing required ones.
    pub(crate) fn check(
        driver: &str,
        params: &'static [Param],
        unsupported: &[&str],
        mapping: &serde_yaml::Mapping,
        problems: &mut Problems,
    ) -> Values {
        let mut values = Values::default();
        for (key, value) in mapping {
            let Some(key) = key.as_str() else {
                problems.push((String::new(), "parameter names must be strings".into()));
                continue;
            };
            let Some(param) = params.iter().find(|p| p.name == key) else {
                let message = if unsupported.contains(&key) {
                    format!("is a Quay parameter of {driver} that this engine does not support")
                } else {
                    let names: Vec<&str> = params.iter().map(|p| p.name).collect();
                    format!(
                        "unknown parameter for {driver}; it takes: {}",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    )
                };
                problems.push((key.to_owned(), message));
                continue;
            };
            match check_value(param.kind, value) {
                Ok(Some(checked)) => {
                    values.0.insert(param.name, checked);
                }
                Ok(None) => {}
                Err(expected) => problems.push((key.to_owned(), format!("must be {expected}"))),
            }
        }
        for param in params.iter().filter(|p| p.required) {
            let present = values.0.contains_key(param.name);
            let malformed = problems.iter().any(|(k, _)| k == param.name);
            if !present && !malformed {
                problems.push((
                    param.name.to_owned(),
                    format!("{driver} requires {}{}", param.name, param.hint),
                ));
            }
        }
        values
    }

    /// A text or secret value, if present.
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        match self.0.get(name) {
            Some(Checked::Text(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// A secret value, if present.
    pub(crate) fn secret(&self, name: &str) -> Option<Secret> {
        self.text(name).map(Secret::new)
    }

    /// A boolean value, if present.
    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        match self.0.get(name) {
            Some(Checked::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    /// A port, if present.
    pub(crate) fn port(&self, name: &str) -> Option<u16> {
        match self.0.get(name) {
            Some(Checked::Port(p)) => Some(*p),
            _ => None,
        }
    }

    /// Whether a value (of any kind) is present.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// Checks one value: `Ok(None)` when it is absent (null or empty), `Err` with what was
/// expected when its type is wrong.
fn check_value(kind: Kind, value: &Value) -> Result<Option<Checked>, &'static str> {
    if value.is_null() {
        return Ok(None);
    }
    match kind {
        Kind::Text | Kind::Secret => match value {
            Value::String(s) if s.is_empty() => Ok(None),
            Value::String(s) => Ok(Some(Checked::Text(s.clone()))),
            Value::Number(n) => Ok(Some(Checked::Text(n.to_string()))),
            _ => Err("a string"),
        },
        Kind::Bool => match value {
            Value::Bool(b) => Ok(Some(Checked::Bool(*b))),
            _ => Err("true or false"),
        },
        Kind::Port => match value.as_u64().and_then(|n| u16::try_from(n).ok()) {
            Some(p) if p > 0 => Ok(Some(Checked::Port(p))),
            _ => Err("a port number from 1 to 65535"),
        },
        Kind::Mapping => match value {
            Value::Mapping(_) => Ok(Some(Checked::Mapping)),
            _ => Err("a mapping"),
        },
    }
}

/// Whether `s` is standard base64 (an Azure account key), checked without decoding.
pub(crate) fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len() % 4 == 0
        && s.len() - body.len() <= 2
        && !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}
