//! API keys: `{tenant_id}_sk_{secret}`, so a key names its tenant.
//!
//! The secret part is 40 random base62 characters (~238 bits). Only an
//! HMAC-SHA-256 of the whole key under a server-side pepper is stored, so a
//! leaked database does not yield usable keys, and a key is looked up by
//! that hash (an index probe), then compared in constant time.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::id::TenantId;

/// Separator between the tenant id and the secret.
pub const KEY_MARKER: &str = "_sk_";
/// Length of the random part.
pub const SECRET_LEN: usize = 40;
/// Characters of the visible prefix kept for listings (tenant, marker and
/// the first few secret characters: enough to tell keys apart, useless to
/// an attacker).
const PREFIX_SECRET_CHARS: usize = 6;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` random base62 characters from the OS-seeded CSPRNG (for keys,
/// peppers and other server secrets).
pub fn random_base62(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| {
            let i = rand::RngExt::random_range(&mut rng, 0..BASE62.len());
            char::from(BASE62[i])
        })
        .collect()
}

/// A plaintext API key. Shown once at creation; `Debug` and `Display` never
/// reveal it (use [`PlainKey::expose`] deliberately).
#[derive(Clone, PartialEq, Eq)]
pub struct PlainKey(String);

impl PlainKey {
    /// A new random key for `tenant`.
    pub fn generate(tenant: &TenantId) -> Self {
        Self(format!("{tenant}{KEY_MARKER}{}", random_base62(SECRET_LEN)))
    }

    /// Wraps a presented key if it has the key format; `None` otherwise
    /// (then it is not an API key at all, and may be a JWT).
    pub fn parse(presented: &str) -> Option<Self> {
        let (tenant, secret) = presented.rsplit_once(KEY_MARKER)?;
        let well_formed = crate::id::is_valid(tenant)
            && secret.len() >= 32
            && secret.len() <= 128
            && secret.bytes().all(|b| b.is_ascii_alphanumeric());
        well_formed.then(|| Self(presented.to_owned()))
    }

    /// The tenant named in the key. Only a hint: the stored key decides.
    pub fn tenant_hint(&self) -> Option<TenantId> {
        self.0
            .rsplit_once(KEY_MARKER)
            .and_then(|(t, _)| TenantId::new(t).ok())
    }

    /// The full key text, for the one creation response.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The non-secret prefix shown in listings: `acme_sk_Ab12Cd…`.
    pub fn display_prefix(&self) -> String {
        let (tenant, secret) = self.0.rsplit_once(KEY_MARKER).unwrap_or(("", ""));
        let shown: String = secret.chars().take(PREFIX_SECRET_CHARS).collect();
        format!("{tenant}{KEY_MARKER}{shown}…")
    }
}

impl fmt::Debug for PlainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainKey(***)")
    }
}

impl fmt::Display for PlainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The stored form of a key: HMAC-SHA-256(pepper, key).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Constant-time equality (the lookup is by hash; this guards the final
    /// comparison against timing differences).
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(..)")
    }
}

/// Hashes keys under the server's pepper.
#[derive(Clone)]
pub struct KeyHasher {
    pepper: Vec<u8>,
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher(***)")
    }
}

impl KeyHasher {
    /// A hasher with `pepper` (at least 32 bytes of server secret).
    pub fn new(pepper: &[u8]) -> Self {
        Self {
            pepper: pepper.to_vec(),
        }
    }

    /// The stored hash of `key`.
    pub fn hash(&self, key: &PlainKey) -> KeyHash {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.pepper)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(key.expose().as_bytes());
        KeyHash(mac.finalize().into_bytes().into())
    }
}

/// Constant-time comparison of two secrets of any length (admin keys).
pub fn secrets_match(a: &str, b: &str) -> bool {
    // Compare fixed-size digests so that length differences do not show.
    use sha2::Digest;
    let da = Sha256::digest(a.as_bytes());
    let db = Sha256::digest(b.as_bytes());
    da.as_slice().ct_eq(db.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> TenantId {
        TenantId::new("acme_corp").expect("valid")
    }

    #[test]
    fn generated_keys_have_the_documented_format() {
        let key = PlainKey::generate(&acme());
        let text = key.expose();
        assert!(text.starts_with("acme_corp_sk_"));
        let secret = text.rsplit_once("_sk_").expect("marker").1;
        assert_eq!(secret.len(), SECRET_LEN);
        assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(PlainKey::parse(text), Some(key.clone()));
        assert_eq!(key.tenant_hint(), Some(acme()));
        assert_ne!(PlainKey::generate(&acme()), key, "random");
    }

    #[test]
    fn secrets_never_print() {
        let key = PlainKey::generate(&acme());
        assert_eq!(format!("{key:?}"), "PlainKey(***)");
        assert_eq!(format!("{key}"), "***");
        assert!(!key.display_prefix().contains(&key.expose()[20..]));
        let hasher = KeyHasher::new(b"pepper-pepper-pepper-pepper-pepper");
        assert_eq!(format!("{:?}", hasher.hash(&key)), "KeyHash(..)");
    }

    #[test]
    fn parse_rejects_non_keys() {
        for bad in [
            "",
            "eyJhbGciOiJIUzI1NiJ9.e30.x",
            "acme_sk_short",
            "a/b_sk_0123456789012345678901234567890123456789",
            "acme_sk_0123456789012345678901234567890123456789!",
        ] {
            assert!(PlainKey::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn hashing_is_keyed_and_stable() {
        let key = PlainKey::generate(&acme());
        let h1 = KeyHasher::new(b"one-pepper-one-pepper-one-pepper!");
        let h2 = KeyHasher::new(b"two-pepper-two-pepper-two-pepper!");
        assert!(h1.hash(&key).ct_eq(&h1.hash(&key)));
        assert!(!h1.hash(&key).ct_eq(&h2.hash(&key)));
    }

    #[test]
    fn secret_comparison() {
        assert!(secrets_match("admin-key", "admin-key"));
        assert!(!secrets_match("admin-key", "admin-kex"));
        assert!(!secrets_match("admin-key", "admin-key-longer"));
    }
}
