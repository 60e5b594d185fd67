//! Real git repositories made with the `git` command in temp dirs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs git in `dir` with a fixed identity and dates.
pub(crate) fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_AUTHOR_DATE", "2024-05-06T07:08:09Z")
        .env("GIT_COMMITTER_DATE", "2024-05-06T07:08:09Z")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(dir: &Path, path: &str, content: &[u8]) {
    let full = dir.join(path);
    if let Some(parent) = full.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(full, content).expect("write");
}

pub(crate) const MIT: &str = "MIT License\n\nCopyright (c) 2024 Test\n\nPermission is hereby granted, free of charge, to any person obtaining a copy\nof this software and associated documentation files (the \"Software\"), to deal\nin the Software without restriction.\n";

/// A polyglot repository on branch `trunk` with three commits:
/// Rust 300 bytes, Python 120, TypeScript 50 (+ vendored and binary files
/// that must not count), Cargo.toml, web/package.json, an MIT LICENSE and a
/// README.
pub(crate) fn polyglot(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    git(&dir, &["init", "-q", "-b", "trunk"]);
    write(&dir, "README.md", b"# Demo\n");
    write(&dir, "LICENSE", MIT.as_bytes());
    write(&dir, "Cargo.toml", b"[package]\nname = \"demo\"\n");
    write(&dir, "src/main.rs", &[b'a'; 200]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "one"]);
    write(&dir, "src/lib.rs", &[b'b'; 100]);
    write(&dir, "tools/gen.py", &[b'c'; 120]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "two"]);
    write(&dir, "web/package.json", b"{\"name\":\"web\"}\n");
    write(&dir, "web/app.ts", &[b'd'; 50]);
    write(&dir, "web/node_modules/dep/index.js", &[b'e'; 5000]);
    write(&dir, "vendor/lib.go", &[b'f'; 7000]);
    write(&dir, "static/app.min.js", &[b'g'; 9000]);
    let mut binary = vec![b'h'; 64];
    binary[10] = 0;
    write(&dir, "src/blob.rs", &binary);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "three"]);
    dir
}

/// A one-commit repository (fast to detect), on branch `main`.
pub(crate) fn tiny(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    git(&dir, &["init", "-q", "-b", "main"]);
    write(&dir, "main.go", b"package main\n");
    write(&dir, "go.mod", b"module x\n");
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "init"]);
    dir
}
