//! The server secret API keys are hashed under.
//!
//! From `auth.key_pepper` / `TENANTD_KEY_PEPPER` when set; otherwise read
//! from `data_dir/key_pepper`, generated there (mode 0600) on first start
//! with a warning, so a new installation works with one command and keeps
//! its keys valid across restarts.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

/// File name inside the data directory.
pub const PEPPER_FILE: &str = "key_pepper";
const GENERATED_LEN: usize = 64;

/// The pepper bytes.
pub fn load_or_create(data_dir: &Path, configured: Option<&str>) -> anyhow::Result<Vec<u8>> {
    if let Some(pepper) = configured {
        return Ok(pepper.as_bytes().to_vec());
    }
    let path = data_dir.join(PEPPER_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = text.trim();
            anyhow::ensure!(
                text.len() >= 32,
                "{}: the key pepper is shorter than 32 characters",
                path.display()
            );
            return Ok(text.as_bytes().to_vec());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("{}: cannot read the key pepper", path.display()));
        }
    }
    // With PostgreSQL nothing else creates the data directory.
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("{}: cannot create the data directory", data_dir.display()))?;
    let pepper = tenancy::random_base62(GENERATED_LEN);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("{}: cannot create the key pepper", path.display()))?;
    file.write_all(pepper.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("{}: cannot write the key pepper", path.display()))?;
    tracing::warn!(
        path = %path.display(),
        "TENANTD_KEY_PEPPER is not set: generated a key pepper in the data directory. \
         Back it up with the database; without it no API key can be verified"
    );
    Ok(pepper.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused_and_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create(dir.path(), None).expect("created");
        let second = load_or_create(dir.path(), None).expect("read");
        assert_eq!(first, second);
        assert_eq!(first.len(), GENERATED_LEN);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(PEPPER_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let configured = load_or_create(dir.path(), Some("x".repeat(40).as_str())).expect("cfg");
        assert_eq!(configured, vec![b'x'; 40]);
    }
}
