//! Repository detection: open (or clone) a git repository and compute the
//! facts a `repository` record holds.
//!
//! Runs on a blocking thread. Everything is read from git objects at HEAD
//! (not a working tree), so bare clones suffice and uncommitted files do not
//! count. Limits bound the work: total blob bytes, file count, commits
//! walked, and an interrupt flag checked between objects (set on timeout,
//! cancellation and shutdown).

mod classify;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::clock::rfc3339;

/// Where a repository is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on this machine (`/path` or `file:///path`).
    Local(PathBuf),
    /// A URL to clone (`https://`, `http://`, `ssh://`, `git://`, `git@host:path`).
    Remote(String),
}

/// Work limits of one detection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Stop (and fail) after reading this many blob bytes.
    pub max_bytes: u64,
    /// Stop (and fail) after this many files.
    pub max_files: u64,
    /// Count at most this many commits (the count is then a lower bound).
    pub max_commits: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 512 * 1024 * 1024,
            max_files: 200_000,
            max_commits: 1_000_000,
        }
    }
}

/// Why a detection failed. `retryable` ones are worth another attempt.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The local path does not exist.
    #[error("Repository path '{0}' does not exist")]
    Missing(String),
    /// The path exists but is not a git repository.
    #[error("'{0}' is not a git repository")]
    NotARepository(String),
    /// The repository has no commit at HEAD.
    #[error("The repository has no commits")]
    Empty,
    /// Cloning failed (network, authentication, unknown host...).
    #[error("Could not clone the repository: {0}")]
    Clone(String),
    /// A limit was hit.
    #[error("The repository is too large: {0}")]
    TooLarge(String),
    /// Interrupted (timeout, cancellation or shutdown).
    #[error("Detection was interrupted")]
    Interrupted,
    /// Reading git objects failed.
    #[error("Could not read the repository: {0}")]
    Git(String),
}

impl DetectError {
    /// Whether another attempt may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Clone(_) | Self::Git(_) | Self::Interrupted)
    }
}

/// What a detection found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepoFacts {
    /// Bytes of source per language (vendored, generated and binary files
    /// excluded), largest first when serialised by the record.
    pub languages: BTreeMap<String, u64>,
    /// The language with the most bytes.
    pub primary_language: Option<String>,
    /// Manifest files found, by path.
    pub manifests: Vec<String>,
    /// Package managers implied by manifests and lock files.
    pub package_managers: Vec<String>,
    /// SPDX id of the top-level license, when recognisable.
    pub license: Option<String>,
    /// Path of the top-level license file, if any.
    pub license_file: Option<String>,
    /// Whether a top-level README exists.
    pub has_readme: bool,
    /// The branch HEAD points to.
    pub default_branch: Option<String>,
    /// The commit at HEAD.
    pub head_commit: String,
    /// Commits reachable from HEAD (at most `max_commits`).
    pub commit_count: u64,
    /// Whether `commit_count` stopped at the limit.
    pub commit_count_truncated: bool,
    /// Committer time of HEAD, RFC 3339 UTC.
    pub last_commit_at: Option<String>,
    /// Files at HEAD that were examined.
    pub files_scanned: u64,
    /// Bytes of blobs read.
    pub bytes_scanned: u64,
}

fn check(interrupt: &AtomicBool) -> Result<(), DetectError> {
    if interrupt.load(Ordering::Relaxed) {
        Err(DetectError::Interrupted)
    } else {
        Ok(())
    }
}

/// Inspects the repository at `location`. Remote repositories are cloned
/// (bare) under `scratch`, which the caller removes afterwards.
pub fn detect(
    location: &Location,
    limits: &Limits,
    interrupt: &AtomicBool,
    scratch: &Path,
) -> Result<RepoFacts, DetectError> {
    let repo = match location {
        Location::Local(path) => open_local(path)?,
        Location::Remote(url) => clone(url, scratch, interrupt)?,
    };
    analyse(&repo, limits, interrupt)
}

fn open_local(path: &Path) -> Result<gix::Repository, DetectError> {
    let shown = path.display().to_string();
    if !path.exists() {
        return Err(DetectError::Missing(shown));
    }
    gix::open(path).map_err(|_| DetectError::NotARepository(shown))
}

fn clone(
    url: &str,
    scratch: &Path,
    interrupt: &AtomicBool,
) -> Result<gix::Repository, DetectError> {
    std::fs::create_dir_all(scratch).map_err(|e| DetectError::Clone(e.to_string()))?;
    let mut prepare =
        gix::prepare_clone_bare(url, scratch).map_err(|e| DetectError::Clone(e.to_string()))?;
    let (repo, _outcome) = prepare
        .fetch_only(gix::progress::Discard, interrupt)
        .map_err(|e| {
            if interrupt.load(Ordering::Relaxed) {
                DetectError::Interrupted
            } else {
                DetectError::Clone(e.to_string())
            }
        })?;
    Ok(repo)
}

fn git_err(e: impl std::fmt::Display) -> DetectError {
    DetectError::Git(e.to_string())
}

fn analyse(
    repo: &gix::Repository,
    limits: &Limits,
    interrupt: &AtomicBool,
) -> Result<RepoFacts, DetectError> {
    let head = repo.head_commit().map_err(|_| DetectError::Empty)?;
    let head_commit = head.id.to_string();
    let default_branch = repo
        .head_name()
        .ok()
        .flatten()
        .map(|name| name.shorten().to_string());
    let last_commit_at = head.time().ok().and_then(|t| {
        time::OffsetDateTime::from_unix_timestamp(t.seconds)
            .ok()
            .map(rfc3339)
    });

    let (commit_count, truncated) = count_commits(repo, &head, limits, interrupt)?;
    let TreeScan {
        languages,
        manifests,
        managers,
        license,
        license_file,
        has_readme,
        files,
        bytes,
    } = scan_tree(repo, &head, limits, interrupt)?;

    let primary_language = languages
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(name, _)| name.clone());
    Ok(RepoFacts {
        languages,
        primary_language,
        manifests: manifests.into_iter().collect(),
        package_managers: managers.into_iter().collect(),
        license,
        license_file,
        has_readme,
        default_branch,
        head_commit,
        commit_count,
        commit_count_truncated: truncated,
        last_commit_at,
        files_scanned: files,
        bytes_scanned: bytes,
    })
}

/// Counts commits reachable from `head`, stopping at `limits.max_commits`
/// (then the count is marked truncated).
fn count_commits(
    repo: &gix::Repository,
    head: &gix::Commit<'_>,
    limits: &Limits,
    interrupt: &AtomicBool,
) -> Result<(u64, bool), DetectError> {
    let mut commit_count = 0u64;
    let mut truncated = false;
    let walk = repo.rev_walk([head.id]).all().map_err(git_err)?;
    for info in walk {
        info.map_err(git_err)?;
        commit_count += 1;
        if commit_count.is_multiple_of(1024) {
            check(interrupt)?;
        }
        if commit_count >= limits.max_commits {
            truncated = true;
            break;
        }
    }
    Ok((commit_count, truncated))
}

/// What a walk over the files of the head tree found.
struct TreeScan {
    languages: BTreeMap<String, u64>,
    manifests: BTreeSet<String>,
    managers: BTreeSet<String>,
    license: Option<String>,
    license_file: Option<String>,
    has_readme: bool,
    files: u64,
    bytes: u64,
}

/// Walks the files of the head tree: languages by size, manifests and
/// package managers, the licence, a README. Fails once the tree passes
/// `limits.max_files` or `limits.max_bytes`; only files that can count
/// (a language or a licence) are read, so their bytes are what is limited.
fn scan_tree(
    repo: &gix::Repository,
    head: &gix::Commit<'_>,
    limits: &Limits,
    interrupt: &AtomicBool,
) -> Result<TreeScan, DetectError> {
    let tree = head.tree().map_err(git_err)?;
    let entries = tree.traverse().breadthfirst.files().map_err(git_err)?;
    let mut languages: BTreeMap<String, u64> = BTreeMap::new();
    let mut manifests = BTreeSet::new();
    let mut managers = BTreeSet::new();
    let mut license = None;
    let mut license_file = None;
    let mut has_readme = false;
    let mut files = 0u64;
    let mut bytes = 0u64;
    for entry in entries {
        if !entry.mode.is_blob() {
            continue;
        }
        check(interrupt)?;
        let path = entry.filepath.to_string();
        files += 1;
        if files > limits.max_files {
            return Err(DetectError::TooLarge(format!(
                "more than {} files",
                limits.max_files
            )));
        }
        if classify::is_readme(&path) {
            has_readme = true;
        }
        if classify::is_vendored_or_generated(&path) {
            continue;
        }
        if let Some(manager) = classify::package_manager(&path) {
            managers.insert(manager.to_owned());
            if classify::is_manifest(&path) {
                manifests.insert(path.clone());
            }
        }
        let is_license = classify::is_license_file(&path);
        let language = classify::language(&path);
        if language.is_none() && !is_license {
            continue;
        }
        let size = repo.find_header(entry.oid).map_err(git_err)?.size();
        bytes = bytes.saturating_add(size);
        if bytes > limits.max_bytes {
            return Err(DetectError::TooLarge(format!(
                "more than {} bytes of files",
                limits.max_bytes
            )));
        }
        let blob = repo.find_blob(entry.oid).map_err(git_err)?;
        if classify::is_binary(&blob.data) {
            continue;
        }
        if is_license && license_file.is_none() {
            license_file = Some(path.clone());
            license =
                classify::spdx_from_text(&String::from_utf8_lossy(&blob.data)).map(str::to_owned);
        }
        if let Some(language) = language {
            *languages.entry(language.to_owned()).or_default() += size;
        }
    }
    Ok(TreeScan {
        languages,
        manifests,
        managers,
        license,
        license_file,
        has_readme,
        files,
        bytes,
    })
}

/// Parses a submitted repository URL or path. `None`: not acceptable.
pub fn parse_location(raw: &str, allow_local: bool) -> Option<Location> {
    let url = raw.trim();
    if url.is_empty()
        || url.len() > 2048
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    for scheme in ["https://", "http://", "ssh://", "git://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = host.rsplit('@').next().unwrap_or("");
            let path = &rest[rest.find('/').unwrap_or(rest.len())..];
            return (!host.is_empty() && host != ":" && path.len() > 1)
                .then(|| Location::Remote(url.to_owned()));
        }
    }
    if let Some(rest) = url.strip_prefix("git@") {
        let (host, path) = rest.split_once(':')?;
        return (!host.is_empty() && !path.is_empty() && !host.contains('/'))
            .then(|| Location::Remote(url.to_owned()));
    }
    if !allow_local {
        return None;
    }
    if let Some(path) = url.strip_prefix("file://") {
        return (path.starts_with('/')).then(|| Location::Local(PathBuf::from(path)));
    }
    let path = Path::new(url);
    path.is_dir().then(|| Location::Local(path.to_path_buf()))
}

/// The record name of a repository: `host/path` for URLs (so that two
/// `api` repositories of different owners stay distinct), the directory
/// name for local paths; `.git` suffixes and trailing slashes removed.
pub fn repository_name(location: &Location) -> String {
    let raw = match location {
        Location::Local(path) => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string()),
        Location::Remote(url) => {
            let rest = url.split_once("://").map_or_else(
                || {
                    url.strip_prefix("git@")
                        .unwrap_or(url)
                        .replacen(':', "/", 1)
                },
                |(_, rest)| rest.to_owned(),
            );
            rest.rsplit('@').next().unwrap_or(&rest).to_owned()
        }
    };
    let trimmed = raw.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    let name: String = trimmed.chars().take(256).collect();
    if name.is_empty() {
        "repository".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_classified() {
        assert!(matches!(
            parse_location("https://github.com/a/b", true),
            Some(Location::Remote(_))
        ));
        assert!(matches!(
            parse_location("git@github.com:a/b.git", true),
            Some(Location::Remote(_))
        ));
        assert!(matches!(
            parse_location("ssh://git@host/a/b", true),
            Some(Location::Remote(_))
        ));
        assert!(matches!(
            parse_location("file:///tmp", true),
            Some(Location::Local(_))
        ));
        assert!(matches!(
            parse_location("/tmp", true),
            Some(Location::Local(_))
        ));
        for bad in [
            "",
            "   ",
            "ftp://x/y",
            "https://",
            "https:///x",
            "not a url",
            "/definitely/not/here",
            "git@:x",
            "file://relative",
        ] {
            assert_eq!(parse_location(bad, true), None, "{bad}");
        }
        assert_eq!(
            parse_location("/tmp", false),
            None,
            "local paths can be disabled"
        );
    }

    #[test]
    fn names_are_derived() {
        let n = |s: &str| repository_name(&parse_location(s, true).expect("valid"));
        assert_eq!(n("https://github.com/acme/api.git"), "github.com/acme/api");
        assert_eq!(n("git@github.com:acme/api.git"), "github.com/acme/api");
        assert_eq!(n("ssh://git@host.example/x/y/"), "host.example/x/y");
        assert_eq!(
            repository_name(&Location::Local(PathBuf::from("/srv/repos/widget"))),
            "widget"
        );
    }
}
