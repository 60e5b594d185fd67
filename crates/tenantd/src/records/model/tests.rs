//! Unit tests of the model: validation and conversions.

use super::*;

fn input() -> RecordInput {
    RecordInput {
        name: " api ".into(),
        kind: "service".into(),
        url: "https://example.com/api".into(),
        description: Some("  ".into()),
        tags: vec!["a".into(), " a".into(), "b".into()],
        fields: Map::new(),
        tenant_id: None,
    }
}

#[test]
fn normalises_valid_input() {
    let r = NewRecord::try_from(input()).expect("valid");
    assert_eq!(r.name, "api");
    assert_eq!(r.description, None);
    assert_eq!(r.tags, ["a", "b"]);
}

#[test]
fn rejects_bad_fields_naming_them() {
    let cases: Vec<(RecordInput, &str)> = vec![
        (
            RecordInput {
                name: "".into(),
                ..input()
            },
            "name",
        ),
        (
            RecordInput {
                kind: "a b".into(),
                ..input()
            },
            "kind",
        ),
        (
            RecordInput {
                url: "a b".into(),
                ..input()
            },
            "url",
        ),
        (
            RecordInput {
                tags: vec!["".into()],
                ..input()
            },
            "tags",
        ),
        (
            RecordInput {
                tags: vec!["x".into(); 65],
                ..input()
            },
            "tags",
        ),
    ];
    for (i, field) in cases {
        let err = NewRecord::try_from(i).expect_err("invalid");
        assert!(err.to_string().starts_with(field), "{err}");
    }
}

#[test]
fn a_nul_anywhere_is_refused_naming_its_field() {
    let mut fields = Map::new();
    fields.insert("lang".into(), Value::String("r\0".into()));
    let cases: Vec<(RecordInput, &str)> = vec![
        (
            RecordInput {
                description: Some("a\0b".into()),
                ..input()
            },
            "description",
        ),
        (
            RecordInput {
                name: "a\0".into(),
                ..input()
            },
            "name",
        ),
        (
            RecordInput {
                tags: vec!["ok".into(), "\0".into()],
                ..input()
            },
            "tags[1]",
        ),
        (RecordInput { fields, ..input() }, "fields.lang"),
    ];
    for (i, field) in cases {
        let err = NewRecord::try_from(i).expect_err("invalid");
        assert!(
            err.to_string()
                .starts_with(&format!("{field}: must not contain")),
            "{err}"
        );
    }
    let search = SearchRequest {
        kind: Some("a\0".into()),
        ..SearchRequest::default()
    };
    let err = SearchQuery::try_from(search).expect_err("invalid");
    assert!(err.to_string().starts_with("kind: "), "{err}");
}

#[test]
fn record_ids_parse_strictly() {
    let id = RecordId::generate();
    assert_eq!(id.as_str().parse::<RecordId>().expect("round trip"), id);
    for bad in [
        "",
        "rec_",
        "rec_123",
        "det_01JD6ZK8Q3V2N4M5P6R7S8T9VW",
        "../etc/passwd",
    ] {
        assert!(bad.parse::<RecordId>().is_err(), "{bad}");
    }
}

#[test]
fn cursors_round_trip_and_reject_garbage() {
    assert_eq!(
        decode_cursor(Some(&encode_cursor(150))).expect("valid"),
        150
    );
    assert_eq!(decode_cursor(None).expect("none"), 0);
    assert!(decode_cursor(Some("!!")).is_err());
    assert!(decode_cursor(Some("bzotMQ")).is_err());
}

#[test]
fn limits_are_bounded() {
    assert_eq!(check_limit(None).expect("default"), 50);
    assert!(check_limit(Some(0)).is_err());
    assert!(check_limit(Some(1_000_000_000)).is_err());
    assert_eq!(check_limit(Some(1000)).expect("max"), 1000);
}
