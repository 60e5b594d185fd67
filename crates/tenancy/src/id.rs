//! [`TenantId`]: the validated name of a tenant.
//!
//! A tenant id travels in headers, query strings, JSON bodies, log lines, SQL
//! parameters, file names (dedicated storage) and Redis keys. Restricting it
//! to `^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$` makes every one of those uses safe
//! without escaping: no `/`, no `..`, no NUL, no whitespace, no unicode
//! look-alikes. A `TenantId` that exists is a valid one.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest accepted tenant id, in bytes (all accepted bytes are ASCII).
pub const MAX_TENANT_ID_LEN: usize = 63;

/// Human description of the accepted format, used in every error about it.
pub const TENANT_ID_RULE: &str = "a tenant id is 1 to 63 characters: letters, digits, '_' and '-', starting with a letter or digit";

/// A validated, case-sensitive tenant identifier.
///
/// Cheap to clone (a shared string): it is copied into every request's
/// context, span and storage scope.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

/// Why a string is not a [`TenantId`]. The offending value is deliberately
/// not kept: it may be ten thousand characters of attacker input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid tenant id: {TENANT_ID_RULE}")]
pub struct InvalidTenantId;

impl TenantId {
    /// Validates `value` and wraps it.
    pub fn new(value: &str) -> Result<Self, InvalidTenantId> {
        if is_valid(value) {
            Ok(Self(Arc::from(value)))
        } else {
            Err(InvalidTenantId)
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// True when `value` matches `^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`.
pub fn is_valid(value: &str) -> bool {
    let bytes = value.as_bytes();
    match bytes.split_first() {
        None => false,
        Some((first, rest)) => {
            bytes.len() <= MAX_TENANT_ID_LEN
                && first.is_ascii_alphanumeric()
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        }
    }
}

impl FromStr for TenantId {
    type Err = InvalidTenantId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for TenantId {
    type Error = InvalidTenantId;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl TryFrom<&str> for TenantId {
    type Error = InvalidTenantId;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", &self.0)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for TenantId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        TenantId::new(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in [
            "a",
            "Z",
            "0",
            "tenant-a",
            "tenant_b",
            "A1-_",
            &"x".repeat(63),
        ] {
            assert!(TenantId::new(ok).is_ok(), "{ok} should be valid");
        }
    }

    #[test]
    fn rejects_everything_else() {
        let long = "x".repeat(64);
        for bad in [
            "",
            " ",
            "-a",
            "_a",
            "a/b",
            "..",
            "a..b/..",
            "a\0",
            "%00",
            "tenant a",
            "ténant",
            "a'; DROP TABLE records;--",
            "a*",
            "\"a\"",
            "a:b",
            &long,
        ] {
            assert!(TenantId::new(bad).is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn is_case_sensitive() {
        let a = TenantId::new("Acme").expect("valid");
        let b = TenantId::new("acme").expect("valid");
        assert_ne!(a, b);
    }

    #[test]
    fn serde_round_trip_validates() {
        let id: TenantId = serde_json::from_str("\"acme\"").expect("valid");
        assert_eq!(serde_json::to_string(&id).expect("serialize"), "\"acme\"");
        assert!(serde_json::from_str::<TenantId>("\"a/b\"").is_err());
    }

    proptest! {
        #[test]
        fn valid_ids_round_trip(s in "[A-Za-z0-9][A-Za-z0-9_-]{0,62}") {
            let id = TenantId::new(&s).expect("matches the rule");
            prop_assert_eq!(id.to_string(), s);
        }

        #[test]
        fn parse_agrees_with_the_regex(s in "\\PC{0,70}") {
            let expected = !s.is_empty()
                && s.len() <= 63
                && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            prop_assert_eq!(TenantId::new(&s).is_ok(), expected);
        }
    }
}
