//! Validated names: repositories, tags, references and storage location ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, ErrorKind};

/// The longest repository name accepted.
pub const MAX_REPOSITORY_NAME_LEN: usize = 255;
/// The longest tag accepted.
pub const MAX_TAG_LEN: usize = 128;

macro_rules! string_newtype {
    ($name:ident, $check:path) => {
        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                $check(s)?;
                Ok($name(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self, Error> {
                $check(&s)?;
                Ok($name(s))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl $name {
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

/// A repository name following the OCI Distribution grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`,
/// at most [`MAX_REPOSITORY_NAME_LEN`] characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepositoryName(String);
string_newtype!(RepositoryName, check_repository_name);

impl RepositoryName {
    /// The first path component (the namespace), e.g. `library` of `library/alpine`.
    pub fn namespace(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

fn name_invalid(message: String) -> Error {
    Error::new(ErrorKind::NameInvalid, message)
}

fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

fn check_repository_name(s: &str) -> Result<(), Error> {
    if s.is_empty() {
        return Err(name_invalid("repository name is empty".into()));
    }
    if s.len() > MAX_REPOSITORY_NAME_LEN {
        return Err(name_invalid(format!(
            "repository name is {} characters long, the limit is {MAX_REPOSITORY_NAME_LEN}",
            s.len()
        )));
    }
    for component in s.split('/') {
        if !valid_component(component) {
            return Err(name_invalid(format!(
                "invalid repository name {:?}: each /-separated component must be lower-case \
                 letters and digits, joined by '.', '_', '__' or dashes",
                shown(s)
            )));
        }
    }
    Ok(())
}

fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);
string_newtype!(Tag, check_tag);

fn check_tag(s: &str) -> Result<(), Error> {
    let bytes = s.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes[1..]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::ManifestInvalid,
            format!(
                "invalid tag {:?}: up to 128 of [a-zA-Z0-9_.-], not starting with '.' or '-'",
                shown(s)
            ),
        ))
    }
}

/// A manifest reference: a tag or a digest.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Reference {
    /// A tag.
    Tag(Tag),
    /// A digest.
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// The id of a storage location, as a key of Quay's `DISTRIBUTED_STORAGE_CONFIG`
/// (e.g. `usstorage`): 1 to 64 of `[A-Za-z0-9_.-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LocationId(String);
string_newtype!(LocationId, check_location_id);

fn check_location_id(s: &str) -> Result<(), Error> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Config,
            format!(
                "invalid storage location id {:?}: use 1 to 64 of [A-Za-z0-9_.-]",
                shown(s)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_valid_names() {
        for ok in [
            "a",
            "library/alpine",
            "my-org/my.app/v1",
            "a__b",
            "a---b",
            "a_b.c-d",
            "0/1/2",
        ] {
            assert!(ok.parse::<RepositoryName>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_invalid_names() {
        let long = "a".repeat(256);
        for bad in [
            "",
            "../x",
            "a//b",
            "Upper",
            "a/",
            "/a",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a b",
            long.as_str(),
        ] {
            let err = bad.parse::<RepositoryName>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NameInvalid, "{bad}");
        }
        assert!("a".repeat(255).parse::<RepositoryName>().is_ok());
    }

    #[test]
    fn tags_and_references() {
        assert!("latest".parse::<Tag>().is_ok());
        assert!("_x.Y-1".parse::<Tag>().is_ok());
        assert!(".x".parse::<Tag>().is_err());
        assert!("-x".parse::<Tag>().is_err());
        assert!("a".repeat(129).parse::<Tag>().is_err());
        assert!(matches!("v1".parse::<Reference>(), Ok(Reference::Tag(_))));
        assert!(".INVALID_MANIFEST_NAME".parse::<Reference>().is_err());
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(d.parse::<Reference>(), Ok(Reference::Digest(_))));
    }

    #[test]
    fn location_ids() {
        assert!("usstorage".parse::<LocationId>().is_ok());
        assert!("local_us-1".parse::<LocationId>().is_ok());
        assert!("".parse::<LocationId>().is_err());
        assert!("a/b".parse::<LocationId>().is_err());
    }

    fn regex_matches(s: &str) -> bool {
        // A direct transcription of the spec's grammar, independent of `valid_component`.
        let component = |c: &str| -> bool {
            let mut rest = c;
            let take_alnum = |r: &str| -> usize {
                r.bytes()
                    .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                    .count()
            };
            let n = take_alnum(rest);
            if n == 0 {
                return false;
            }
            rest = &rest[n..];
            while !rest.is_empty() {
                let sep = if rest.starts_with("__") {
                    2
                } else if rest.starts_with('.') || rest.starts_with('_') {
                    1
                } else {
                    let d = rest.bytes().take_while(|&b| b == b'-').count();
                    if d == 0 {
                        return false;
                    }
                    d
                };
                rest = &rest[sep..];
                let n = take_alnum(rest);
                if n == 0 {
                    return false;
                }
                rest = &rest[n..];
            }
            true
        };
        !s.is_empty() && s.len() <= 255 && s.split('/').all(component)
    }

    proptest! {
        #[test]
        fn name_parser_agrees_with_grammar(s in "[a-z0-9._/A-Z-]{0,40}") {
            prop_assert_eq!(s.parse::<RepositoryName>().is_ok(), regex_matches(&s), "{}", s);
        }

        #[test]
        fn reference_parse_never_panics(s in ".{0,300}") {
            let _ = s.parse::<Reference>();
        }

        #[test]
        fn valid_tags_round_trip(s in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}") {
            let tag: Tag = s.parse().unwrap();
            prop_assert_eq!(tag.as_str(), s.as_str());
        }
    }
}
