//! The dump key: the operator's secret that authenticates dumps.
//!
//! A dump's SHA-256 is unkeyed, so anyone who can write a file can make a
//! dump that passes it. An export signed with the dump key carries an
//! HMAC-SHA256 of the same bytes the SHA-256 covers; an import given the key
//! verifies it (in constant time) before anything is written. Without the
//! key nobody can make a dump this deployment accepts as signed.
//!
//! # The key file (`--dump-key-file`)
//!
//! The key is the file's bytes with leading and trailing ASCII whitespace
//! removed, used as they are (a hex or base64 text is *not* decoded: it is
//! a key of its characters), at least [`MIN_KEY_BYTES`] bytes long. Make
//! one with `openssl rand -hex 32 > dump.key && chmod 600 dump.key`. On
//! Unix the file must not be readable, writable or executable by others
//! (mode `0600` or `0640`): a key every local user can read authenticates
//! nothing.

use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::PortableError;

/// The shortest key accepted (the HMAC-SHA256 block of security).
pub const MIN_KEY_BYTES: usize = 32;

/// A dump key, loaded and checked. Its bytes never leave this type:
/// `Debug` shows only its [`DumpKey::id`].
#[derive(Clone)]
pub struct DumpKey {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for DumpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpKey").field("id", &self.id()).finish()
    }
}

impl DumpKey {
    /// Reads the key file at `path` (see the module documentation).
    pub fn load(path: &Path) -> Result<Self, PortableError> {
        let bad = |why: String| PortableError::Key(format!("{}: {why}", path.display()));
        let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        if !meta.is_file() {
            return Err(bad("not a regular file".to_owned()));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode();
            if mode & 0o007 != 0 {
                return Err(bad(format!(
                    "mode {:o} lets other users use the dump key; chmod 600 it",
                    mode & 0o777
                )));
            }
        }
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            PortableError::Key(why) => bad(why),
            other => other,
        })
    }

    /// A key of `bytes` (whitespace around them removed).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PortableError> {
        let bytes = bytes.trim_ascii();
        if bytes.len() < MIN_KEY_BYTES {
            return Err(PortableError::Key(format!(
                "the dump key has {} bytes; at least {MIN_KEY_BYTES} are required \
                 (e.g. `openssl rand -hex 32`)",
                bytes.len()
            )));
        }
        Ok(Self {
            bytes: bytes.to_vec(),
        })
    }

    /// A public name for the key, written next to the HMAC so that an
    /// import under another key says so: the first 16 hex digits of a
    /// SHA-256 of the key (one way, so it reveals nothing of it).
    pub fn id(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(b"tenantd dump key id\0");
        hash.update(&self.bytes);
        let mut hex = hex::encode(hash.finalize());
        hex.truncate(16);
        hex
    }

    /// A fresh HMAC-SHA256 under this key.
    pub(crate) fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.bytes)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }
}

/// Checks `hmac_hex` (from a dump's end line) against `mac`, which has
/// been fed the bytes it covers; constant-time.
pub(crate) fn verify(mac: Hmac<Sha256>, hmac_hex: &str) -> bool {
    hex::decode(hmac_hex).is_ok_and(|tag| mac.verify_slice(&tag).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_key_is_refused_and_whitespace_does_not_count() {
        let short = format!("  {}\n", "k".repeat(MIN_KEY_BYTES - 1));
        let err = DumpKey::from_bytes(short.as_bytes()).expect_err("short");
        assert!(err.to_string().contains("at least 32"), "{err}");
        let key = DumpKey::from_bytes(format!("{}\n", "k".repeat(32)).as_bytes()).expect("ok");
        assert_eq!(
            key.id(),
            DumpKey::from_bytes("k".repeat(32).as_bytes())
                .expect("ok")
                .id()
        );
        assert!(!format!("{key:?}").contains("kkkk"), "Debug hides the key");
    }

    #[test]
    fn verify_takes_only_the_right_tag() {
        let key = DumpKey::from_bytes(&[7; 32]).expect("key");
        let mut mac = key.mac();
        mac.update(b"dump bytes");
        let tag = hex::encode(mac.finalize().into_bytes());
        let fed = |data: &[u8]| {
            let mut mac = key.mac();
            mac.update(data);
            mac
        };
        assert!(verify(fed(b"dump bytes"), &tag));
        assert!(!verify(fed(b"dump bytez"), &tag));
        assert!(!verify(fed(b"dump bytes"), "not hex"));
        let other = DumpKey::from_bytes(&[8; 32]).expect("key");
        let mut mac = other.mac();
        mac.update(b"dump bytes");
        assert!(!verify(mac, &tag));
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dump.key");
        std::fs::write(&path, "a".repeat(64)).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = DumpKey::load(&path).expect_err("world-readable");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        DumpKey::load(&path).expect("private key file");
    }
}
