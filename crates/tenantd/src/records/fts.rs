//! Turning user text into a safe FTS5 query.
//!
//! User input never reaches FTS5 as syntax: it is split into terms on the
//! same boundaries the `unicode61` tokenizer uses (anything that is not a
//! letter or digit), and each term is emitted as a quoted string. Quotes,
//! `*`, `:`, `^`, `NEAR`, `AND`/`OR`/`NOT`, parentheses and column filters
//! typed by a user are therefore plain text, and can never be a syntax
//! error or widen the query. The tenant restriction is a separate, leading
//! term on the `tenant_key` column.
//!
//! PostgreSQL gets the same terms as a `tsquery` text ([`ts_query`]): each
//! term a quoted lexeme, so nothing typed is tsquery syntax either. The
//! tenant restriction there is an SQL predicate (and row-level security).

/// Longest accepted search text, in characters.
pub const MAX_QUERY_CHARS: usize = 1000;
/// Most terms used from one query (the rest are ignored).
pub const MAX_TERMS: usize = 32;

/// The single FTS token that stands for a tenant: `t` + hex of its id.
/// Tenant ids contain `-` and `_`, which the tokenizer would split on.
pub fn tenant_token(tenant: &str) -> String {
    let mut out = String::with_capacity(1 + tenant.len() * 2);
    out.push('t');
    for b in tenant.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The words of `text` (runs of letters and digits), at most
/// [`MAX_TERMS`], as typed.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .take(MAX_TERMS)
}

/// The searchable terms of `text`, lower-cased, at most [`MAX_TERMS`].
///
/// Lower-casing can add a character that is not a letter or digit (`İ`
/// becomes `i` and a combining dot): those are dropped, so a term stays
/// letters and digits, the one property the quoting relies on.
pub fn terms(text: &str) -> Vec<String> {
    words(text)
        .map(|w| {
            w.to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// The PostgreSQL `tsquery` text for `text`, the counterpart of
/// [`match_expression`]: every term required, the last one as a prefix
/// (`'a' & 'b' & 'c':*`). `None` when there are no terms.
///
/// Terms are letters and digits only, so the quotes around each are the
/// only syntax. They are left as typed: the `records_search` text search
/// configuration folds case and diacritics of the query exactly as it
/// folded the indexed text (see `migrations/postgres/0001_records.sql`).
pub fn ts_query(text: &str) -> Option<String> {
    let terms: Vec<&str> = words(text).collect();
    let (last, rest) = terms.split_last()?;
    let mut query = String::new();
    for term in rest {
        query.push('\'');
        query.push_str(term);
        query.push_str("' & ");
    }
    query.push('\'');
    query.push_str(last);
    query.push_str("':*");
    Some(query)
}

/// The MATCH expression: the tenant's token AND every term (the last one
/// as a prefix, for search-as-you-type). `None` when there are no terms.
pub fn match_expression(tenant: &str, text: &str) -> Option<String> {
    let terms = terms(text);
    let (last, rest) = terms.split_last()?;
    let mut expr = format!(
        "tenant_key : \"{}\" AND {{name description url tags fields}} : (",
        tenant_token(tenant)
    );
    for term in rest {
        expr.push('"');
        expr.push_str(term);
        expr.push_str("\" ");
    }
    expr.push('"');
    expr.push_str(last);
    expr.push_str("\"*)");
    Some(expr)
}

/// Text of a JSON `fields` object for the index: keys and scalar values.
pub fn fields_text(fields: &serde_json::Map<String, serde_json::Value>) -> String {
    fn walk(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::String(s) => {
                out.push_str(s);
                out.push(' ');
            }
            serde_json::Value::Number(n) => {
                out.push_str(&n.to_string());
                out.push(' ');
            }
            serde_json::Value::Bool(b) => {
                out.push_str(if *b { "true " } else { "false " });
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    out.push_str(k);
                    out.push(' ');
                    walk(v, out);
                }
            }
            serde_json::Value::Null => {}
        }
    }
    let mut out = String::new();
    for (k, v) in fields {
        out.push_str(k);
        out.push(' ');
        walk(v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn metacharacters_become_plain_terms() {
        let e = match_expression("acme", "\"a\" OR b* NEAR(c) name:d ^e -f").expect("terms");
        assert!(e.starts_with("tenant_key : \"t61636d65\" AND "));
        assert!(e.contains("\"a\" \"or\" \"b\" \"near\" \"c\" \"name\" \"d\" \"e\" \"f\"*"));
    }

    #[test]
    fn nothing_searchable_is_none() {
        assert_eq!(match_expression("a", ""), None);
        assert_eq!(match_expression("a", " *** \"\" ()"), None);
        assert_eq!(ts_query(" *** '' () :* & | !"), None);
    }

    #[test]
    fn tsquery_metacharacters_become_plain_terms() {
        assert_eq!(
            ts_query("'a' | b:* & !c <-> (D) 'it''s'").as_deref(),
            Some("'a' & 'b' & 'c' & 'D' & 'it' & 's':*")
        );
        assert_eq!(ts_query("Café").as_deref(), Some("'Café':*"));
    }

    #[test]
    fn term_count_is_bounded() {
        let text = "x ".repeat(500);
        assert_eq!(terms(&text).len(), MAX_TERMS);
    }

    #[test]
    fn tenant_token_is_one_alnum_token() {
        assert_eq!(tenant_token("a-b_C"), "t612d625f43");
    }

    #[test]
    fn lower_casing_keeps_terms_alphanumeric() {
        assert_eq!(terms("İstanbul"), ["istanbul"]);
    }

    proptest! {
        #[test]
        fn expression_never_contains_user_quotes(text in "\\PC{0,200}") {
            if let Some(e) = match_expression("t", &text) {
                // Only our own quotes: every quoted term is alphanumeric.
                let inner: Vec<&str> = e.split('"').skip(1).step_by(2).collect();
                for term in inner {
                    prop_assert!(term.chars().all(char::is_alphanumeric), "{term:?}");
                }
            }
        }

        #[test]
        fn tsquery_never_contains_user_syntax(text in "\\PC{0,200}") {
            if let Some(q) = ts_query(&text) {
                // Quoted alphanumeric terms joined by our own operators.
                let body = q.strip_suffix(":*").expect("prefix on the last term");
                for quoted in body.split(" & ") {
                    let term = quoted
                        .strip_prefix('\'')
                        .and_then(|t| t.strip_suffix('\''))
                        .expect("quoted");
                    prop_assert!(!term.is_empty());
                    prop_assert!(term.chars().all(char::is_alphanumeric), "{term:?}");
                }
            }
        }
    }
}
