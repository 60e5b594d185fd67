use proptest::prelude::*;

use super::*;

#[test]
fn secrets_are_redacted_at_any_depth() {
    let body = br#"{"name":"n","oidc":{"client_secret":"s3cr3t","issuer":"https://i"},"api_key":"acme_sk_x","password":"p","max_api_keys":3}"#;
    let text = params(Some("grace_seconds=5&token=abc"), body);
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(!text.contains("acme_sk_x"), "{text}");
    assert!(!text.contains("abc"), "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["body"]["oidc"]["issuer"], "https://i");
    assert_eq!(v["body"]["max_api_keys"], 3);
    assert_eq!(v["query"]["grace_seconds"], "5");
}

#[test]
fn userinfo_of_urls_is_redacted() {
    let body = br#"{"repository_url":"https://oauth2:glpat-xyz@gitlab.example.com/a/b.git","url":"https://example.com/x@y"}"#;
    let text = params(None, body);
    assert!(!text.contains("glpat-xyz"), "{text}");
    assert!(
        text.contains("https://***@gitlab.example.com/a/b.git"),
        "{text}"
    );
    assert!(text.contains("https://example.com/x@y"), "{text}");
}

#[test]
fn connection_urls_keep_their_shape_without_credentials() {
    for (given, shown) in [
        (
            "postgres://vault:s3cret@db-2:5432/vault",
            "postgres://***@db-2:5432/vault",
        ),
        (
            "postgres://db/v?user=vault&password=S3cretPw",
            "postgres://db/v?user=***&password=***",
        ),
        (
            "postgresql://db/v?sslmode=require&sslpassword=x&pass=y&application_name=a",
            "postgresql://db/v?sslmode=require&sslpassword=***&pass=***&application_name=a",
        ),
        ("postgres://db-2/vault", "postgres://db-2/vault"),
        ("postgres://[::1]:5432/v", "postgres://[::1]:5432/v"),
        ("postgres://[::1]/v", "postgres://[::1]/v"),
        ("postgres://db/v?S3cretPw", "postgres://db/v?***"),
        ("postgres://db/v?a%20b=c", "postgres://db/v?***=***"),
        ("postgres://db/v?password=", "postgres://db/v?password="),
        ("postgres://db/v#frag", "postgres://db/v#***"),
        ("https://h/p?x=1#", "https://h/p?x=***#"),
        // Passwords with characters a URL reserves, unencoded.
        ("postgres://u:pa/ss@db/v", "postgres://***@db/v"),
        ("postgres://u:pa?ss@db/v", "postgres://***@db/v"),
        ("postgres://u:pa#ss@db/v", "postgres://***@db/v"),
        ("postgres://u:p@ss@db/v", "postgres://***@db/v"),
        ("postgres://u:pa ss@db/v", "postgres://***@db/v"),
        ("redis://:pw@cache:6379/0", "redis://***@cache:6379/0"),
        ("postgres://u:secretonly", "postgres://u:***"),
        ("postgres://host?user=x@y", "postgres://host?user=***"),
        ("not a url", "not a url"),
        ("", ""),
    ] {
        assert_eq!(url(given), shown, "{given}");
    }
}

#[test]
fn text_redacts_every_url_and_secret_pair_in_it() {
    let t = text(
        "the target database postgres://u:pw1@db/v?password=pw2 cannot be opened: \
         host=db password=pw3 sslpassword='p w4' user=x",
    );
    for secret in ["pw1", "pw2", "pw3", "p w4", "w4"] {
        assert!(!t.contains(secret), "{secret} in {t}");
    }
    assert!(t.contains("postgres://***@db/v?password=***"), "{t}");
    assert!(t.contains("host=db"), "{t}");
    assert!(t.contains("user=x"), "{t}");
    assert_eq!(
        text("password authentication failed for user \"vault\""),
        "password authentication failed for user \"vault\""
    );
    assert_eq!(text("a == b, k=v"), "a == b, k=v");
}

#[test]
fn audit_params_redact_query_credentials_of_nested_urls() {
    let body = br#"{"id":"vault","storage":{"isolation":"dedicated","url":"postgres://db/v?user=vault&password=S3cretPw"},"to":"dedicated"}"#;
    let text = params(None, body);
    assert!(!text.contains("S3cretPw"), "{text}");
    assert!(
        text.contains("postgres://db/v?user=***&password=***"),
        "{text}"
    );
    let text = params(
        Some("url=postgres%3A%2F%2Fdb%2Fv%3Fpassword%3DS3cretPw"),
        b"",
    );
    assert!(!text.contains("S3cretPw"), "{text}");
}

#[test]
fn json_masks_by_name_and_keeps_flags() {
    let mut v = serde_json::json!({
        "admin_key": "hunter2", "url": "postgres://user:pw@db/x", "plain": "ok",
        "nested": {"client_secret": "s", "client_secret_set": true, "enabled": true},
        "pass": 1234, "items": ["x", "password=pw5"]
    });
    json(&mut v);
    assert_eq!(v["admin_key"], "***");
    assert_eq!(v["url"], "postgres://***@db/x");
    assert_eq!(v["plain"], "ok");
    assert_eq!(v["nested"]["client_secret"], "***");
    assert_eq!(v["nested"]["client_secret_set"], true);
    assert_eq!(v["pass"], "***");
    assert_eq!(v["items"][1], "password=***");
}

#[test]
fn credential_values_are_redacted_whatever_their_name() {
    let body = br#"{"note":"acme_sk_abcdefghijklmnop","other":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig","plain":"hello"}"#;
    let text = params(None, body);
    assert!(!text.contains("abcdefghijklmnop"), "{text}");
    assert!(!text.contains("eyJzdWIi"), "{text}");
    assert!(text.contains("hello"), "{text}");
}

#[test]
fn large_and_non_json_bodies_are_bounded() {
    let big = format!(
        r#"{{"description":"{}","fields":{{"a":"{}"}}}}"#,
        "x".repeat(10_000),
        "y".repeat(300)
    );
    let text = params(None, big.as_bytes());
    assert!(text.len() <= MAX_TEXT, "{}", text.len());
    let text = params(None, b"\xff\xfe not json");
    assert_eq!(text, r#"{"body_bytes":11}"#);
    assert_eq!(params(None, b""), "{}");
}

/// A password of letters and digits (so it cannot be mistaken for the
/// URL's own text) at least 8 long (so it is not a substring of the rest
/// by chance).
fn password() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{8,24}".prop_map(|p| format!("Pw{p}"))
}

proptest! {
    #[test]
    fn a_password_never_survives_a_url(
        pw in password(),
        user in "[a-z]{1,8}",
        host in "(db|10\\.0\\.0\\.7|\\[::1\\]|db\\.example\\.com)(:5432)?",
        name in "(password|sslpassword|pass|pwd|token|secret|key|passfile|user|x)",
        extra in "(sslmode=require&|application_name=a&|)",
        placement in 0u8..6,
    ) {
        let given = match placement {
            0 => format!("postgres://{user}:{pw}@{host}/db"),
            1 => format!("postgres://{host}/db?{extra}{name}={pw}"),
            2 => format!("postgresql://{user}:{pw}@{host}/db?{extra}{name}={pw}"),
            3 => format!("postgres://{host}/db?{extra}{pw}"),
            4 => format!("postgres://{host}/db#{pw}"),
            _ => format!("postgres://:{pw}@{host}"),
        };
        let shown = url(&given);
        prop_assert!(!shown.contains(&pw), "{given} -> {shown}");
        let in_text = text(&format!("cannot connect to {given}: refused"));
        prop_assert!(!in_text.contains(&pw), "{given} -> {in_text}");
        let mut doc = serde_json::json!({"storage": {"url": given.clone()}, "list": [given.clone()]});
        json(&mut doc);
        prop_assert!(!doc.to_string().contains(&pw), "{given} -> {doc}");
    }

    #[test]
    fn url_never_panics(s in "\\PC{0,80}") {
        let _ = url(&s);
        let _ = text(&s);
    }
}
