//! Pure classification of repository paths and contents: languages,
//! manifests, licenses, vendored and generated files. No git here, so it is
//! unit-tested on plain strings.

/// Folders whose content is not the project's own code.
const SKIPPED_DIRS: &[&str] = &[
    "vendor",
    "vendors",
    "node_modules",
    "third_party",
    "third-party",
    "thirdparty",
    "external",
    "dist",
    "build",
    "target",
    "out",
    ".git",
    "bower_components",
    "Pods",
    "Carthage",
    "__pycache__",
    ".venv",
    "venv",
    ".tox",
    ".mypy_cache",
    "site-packages",
    "generated",
    "gen",
];

/// Whether `path` lies in a vendored or build-output folder, or is a
/// generated/minified file.
pub fn is_vendored_or_generated(path: &str) -> bool {
    let mut parts = path.split('/').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_some() && SKIPPED_DIRS.contains(&part) {
            return true;
        }
    }
    let file = path.rsplit('/').next().unwrap_or(path);
    file.ends_with(".min.js")
        || file.ends_with(".min.css")
        || file.ends_with(".pb.go")
        || file.ends_with("_pb2.py")
        || file.ends_with(".generated.cs")
        || file.ends_with(".g.dart")
        || file.ends_with(".designer.cs")
}

/// Content with a NUL byte in its first 8,000 bytes is binary (git's rule).
pub fn is_binary(content: &[u8]) -> bool {
    content.iter().take(8000).any(|b| *b == 0)
}

/// The programming language of a file, by name or extension.
pub fn language(path: &str) -> Option<&'static str> {
    let file = path.rsplit('/').next().unwrap_or(path);
    match file {
        "Dockerfile" | "Containerfile" => return Some("Dockerfile"),
        "Makefile" | "GNUmakefile" | "makefile" => return Some("Makefile"),
        "CMakeLists.txt" => return Some("CMake"),
        "Rakefile" | "Gemfile" => return Some("Ruby"),
        _ => {}
    }
    let ext = file.rsplit_once('.').map(|(_, e)| e)?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "rs" => "Rust",
        "py" | "pyi" => "Python",
        "js" | "mjs" | "cjs" | "jsx" => "JavaScript",
        "ts" | "tsx" | "mts" | "cts" => "TypeScript",
        "go" => "Go",
        "java" => "Java",
        "kt" | "kts" => "Kotlin",
        "scala" | "sc" => "Scala",
        "c" | "h" => "C",
        "cc" | "cpp" | "cxx" | "hpp" | "hh" | "hxx" => "C++",
        "cs" => "C#",
        "fs" | "fsx" => "F#",
        "rb" => "Ruby",
        "php" => "PHP",
        "swift" => "Swift",
        "m" | "mm" => "Objective-C",
        "sh" | "bash" | "zsh" => "Shell",
        "ps1" => "PowerShell",
        "pl" | "pm" => "Perl",
        "lua" => "Lua",
        "r" => "R",
        "jl" => "Julia",
        "dart" => "Dart",
        "ex" | "exs" => "Elixir",
        "erl" | "hrl" => "Erlang",
        "hs" => "Haskell",
        "ml" | "mli" => "OCaml",
        "clj" | "cljs" | "cljc" => "Clojure",
        "zig" => "Zig",
        "nim" => "Nim",
        "sql" => "SQL",
        "html" | "htm" => "HTML",
        "css" | "scss" | "sass" | "less" => "CSS",
        "vue" => "Vue",
        "svelte" => "Svelte",
        "tf" | "hcl" => "HCL",
        "proto" => "Protocol Buffers",
        "groovy" | "gradle" => "Groovy",
        _ => return None,
    })
}

/// The package manager a manifest or lock file implies.
pub fn package_manager(path: &str) -> Option<&'static str> {
    let file = path.rsplit('/').next().unwrap_or(path);
    Some(match file {
        "Cargo.toml" => "cargo",
        "package.json" => "npm",
        "yarn.lock" => "yarn",
        "pnpm-lock.yaml" => "pnpm",
        "bun.lockb" | "bun.lock" => "bun",
        "pyproject.toml" => "pip",
        "poetry.lock" => "poetry",
        "Pipfile" => "pipenv",
        "uv.lock" => "uv",
        "requirements.txt" | "setup.py" | "setup.cfg" => "pip",
        "go.mod" => "go",
        "pom.xml" => "maven",
        "build.gradle" | "build.gradle.kts" | "settings.gradle" | "settings.gradle.kts" => "gradle",
        "Gemfile" => "bundler",
        "composer.json" => "composer",
        "mix.exs" => "hex",
        "Package.swift" => "swiftpm",
        "Podfile" => "cocoapods",
        "pubspec.yaml" => "pub",
        "build.sbt" => "sbt",
        "rebar.config" => "rebar",
        "stack.yaml" | "cabal.project" => "cabal",
        "deno.json" | "deno.jsonc" => "deno",
        "conanfile.txt" | "conanfile.py" => "conan",
        "vcpkg.json" => "vcpkg",
        _ if file.ends_with(".csproj")
            || file.ends_with(".fsproj")
            || file == "packages.config" =>
        {
            "nuget"
        }
        _ => return None,
    })
}

/// Whether the file is a manifest (as opposed to a lock file) worth listing.
pub fn is_manifest(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or(path);
    package_manager(path).is_some()
        && !matches!(
            file,
            "yarn.lock" | "pnpm-lock.yaml" | "bun.lockb" | "bun.lock" | "poetry.lock" | "uv.lock"
        )
}

/// Whether a top-level file is the license text.
pub fn is_license_file(path: &str) -> bool {
    if path.contains('/') {
        return false;
    }
    let upper = path.to_ascii_uppercase();
    let stem = upper.split('.').next().unwrap_or(&upper);
    matches!(
        stem,
        "LICENSE" | "LICENCE" | "COPYING" | "UNLICENSE" | "LICENSE-MIT" | "LICENSE-APACHE"
    )
}

/// Whether a top-level file is the README.
pub fn is_readme(path: &str) -> bool {
    !path.contains('/') && path.to_ascii_uppercase().starts_with("README")
}

/// The SPDX id of a license text, when it is one we recognise.
pub fn spdx_from_text(text: &str) -> Option<&'static str> {
    let t: String = text
        .to_ascii_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let has = |s: &str| t.contains(s);
    if has("apache license") && has("version 2.0") {
        Some("Apache-2.0")
    } else if has("gnu affero general public license") && has("version 3") {
        Some("AGPL-3.0")
    } else if has("gnu lesser general public license") && has("version 3") {
        Some("LGPL-3.0")
    } else if has("gnu lesser general public license") && has("version 2.1") {
        Some("LGPL-2.1")
    } else if has("gnu general public license") && has("version 3") {
        Some("GPL-3.0")
    } else if has("gnu general public license") && has("version 2") {
        Some("GPL-2.0")
    } else if has("mozilla public license") && has("2.0") {
        Some("MPL-2.0")
    } else if has("permission is hereby granted, free of charge") {
        Some("MIT")
    } else if has("this is free and unencumbered software released into the public domain") {
        Some("Unlicense")
    } else if has(
        "permission to use, copy, modify, and/or distribute this software for any purpose",
    ) {
        Some("ISC")
    } else if has("redistribution and use in source and binary forms") {
        if has("neither the name") || has("names of its contributors") {
            Some("BSD-3-Clause")
        } else {
            Some("BSD-2-Clause")
        }
    } else if has("boost software license") {
        Some("BSL-1.0")
    } else if has("creative commons") && has("cc0") {
        Some("CC0-1.0")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_by_extension_and_name() {
        assert_eq!(language("src/main.rs"), Some("Rust"));
        assert_eq!(language("a/b/c.PY"), Some("Python"));
        assert_eq!(language("web/app.tsx"), Some("TypeScript"));
        assert_eq!(language("Dockerfile"), Some("Dockerfile"));
        assert_eq!(language("README.md"), None);
        assert_eq!(language("noext"), None);
    }

    #[test]
    fn vendored_and_generated_are_skipped() {
        assert!(is_vendored_or_generated("vendor/lib.go"));
        assert!(is_vendored_or_generated("web/node_modules/x/index.js"));
        assert!(is_vendored_or_generated("static/app.min.js"));
        assert!(
            !is_vendored_or_generated("src/vendor.rs"),
            "a file named vendor is fine"
        );
        assert!(!is_vendored_or_generated("src/lib.rs"));
    }

    #[test]
    fn manifests_and_managers() {
        assert_eq!(package_manager("Cargo.toml"), Some("cargo"));
        assert_eq!(package_manager("web/package.json"), Some("npm"));
        assert_eq!(package_manager("App/App.csproj"), Some("nuget"));
        assert!(is_manifest("pyproject.toml"));
        assert!(!is_manifest("yarn.lock"));
        assert_eq!(package_manager("src/main.rs"), None);
    }

    #[test]
    fn licenses_are_recognised() {
        assert_eq!(
            spdx_from_text(
                "MIT License\n\nPermission is hereby granted, free of charge, to any person"
            ),
            Some("MIT")
        );
        assert_eq!(
            spdx_from_text("Apache License\n Version 2.0, January 2004"),
            Some("Apache-2.0")
        );
        assert_eq!(
            spdx_from_text("GNU GENERAL PUBLIC LICENSE\nVersion 3, 29 June 2007"),
            Some("GPL-3.0")
        );
        assert_eq!(spdx_from_text("All rights reserved."), None);
        assert!(is_license_file("LICENSE"));
        assert!(is_license_file("LICENSE.md"));
        assert!(is_license_file("COPYING"));
        assert!(!is_license_file("docs/LICENSE"));
    }

    #[test]
    fn binary_detection() {
        assert!(is_binary(b"\x89PNG\r\n\x1a\n\0\0"));
        assert!(!is_binary(b"fn main() {}"));
    }
}
