//! Turning text into FTS5 tokens and user text into a safe FTS5 query.
//!
//! **Every indexed word carries its tenant.** The index holds one token
//! per word, `<tenant token>z<word>` ([`tenant_token`]: `t` + lowercase
//! hex of the tenant id; hex has no `z`, so the first `z` is the boundary
//! and no tenant's tokens are a prefix of another's). A tenant's words
//! are therefore terms of their own in the FTS5 vocabulary: a term's
//! posting list holds that tenant's rows only, so a query walks the
//! tenant's rows only, a prefix expands over the tenant's vocabulary
//! only, and bm25's document frequency of a term is the number of *that
//! tenant's* records containing it. What another tenant writes does not
//! change which of a tenant's words are rare. (bm25 still reads two
//! global totals, the number of rows and the average column lengths.)
//!
//! Words are split here, in Rust, on the boundaries of FTS5's `unicode61`
//! tokenizer (a token is a run of letters, digits and private-use
//! characters: [`is_token_char`]) and lower-cased; `unicode61` then reads
//! each prefixed word as one token and folds its diacritics
//! (`remove_diacritics 2`), on the indexed text and on the quoted query
//! terms alike, so the two agree.
//!
//! User input never reaches FTS5 as syntax: each term is emitted as a
//! quoted string of token characters. Quotes, `*`, `:`, `^`, `NEAR`,
//! `AND`/`OR`/`NOT`, parentheses and column filters typed by a user are
//! plain text (split away or a word), and can never be a syntax error or
//! widen the query.
//!
//! PostgreSQL gets the same words as a `tsquery` text ([`ts_query`]): each
//! a quoted lexeme, so nothing typed is tsquery syntax either. The tenant
//! restriction there is an SQL predicate (and row-level security).

use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory as _};

/// Longest accepted search text, in characters.
pub const MAX_QUERY_CHARS: usize = 1000;
/// Most terms used from one query (the rest are ignored).
pub const MAX_TERMS: usize = 32;

/// What separates the tenant token from the word in an indexed token: a
/// letter that hex never contains.
const BOUNDARY: char = 'z';

/// The tenant's part of every token it indexes: `t` + lowercase hex of
/// its id. Tenant ids contain `-` and `_`, which the tokenizer would
/// split on; hex keeps it letters and digits, and free of [`BOUNDARY`].
pub fn tenant_token(tenant: &str) -> String {
    let mut out = String::with_capacity(1 + tenant.len() * 2);
    out.push('t');
    for b in tenant.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether `unicode61` (its default `categories 'L* N* Co'`) keeps `c`
/// inside a token: letters, numbers and private-use characters. Marks are
/// separators there (a combining accent, a Devanagari vowel sign), so
/// they are here too: a word split by the tokenizer after prefixing would
/// leave a part without its tenant.
fn is_token_char(c: char) -> bool {
    matches!(
        c.general_category_group(),
        GeneralCategoryGroup::Letter | GeneralCategoryGroup::Number
    ) || c.general_category() == GeneralCategory::PrivateUse
}

/// The words of `text` as FTS5 tokens them, lower-cased; empty ones
/// dropped.
///
/// Lower-casing can add a character that is not a token character (`İ`
/// becomes `i` and a combining dot): those are dropped, so a word stays
/// one token, the one property the prefixing and quoting rely on.
fn fts_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !is_token_char(c))
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.to_lowercase()
                .chars()
                .filter(|c| is_token_char(*c))
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
}

/// The searchable terms of `text`, lower-cased, at most [`MAX_TERMS`].
pub fn terms(text: &str) -> Vec<String> {
    fts_words(text).take(MAX_TERMS).collect()
}

/// The text FTS5 indexes for `text` of a record of the tenant whose
/// [`tenant_token`] is `tenant_token`: each word as one token
/// `<tenant token>z<word>`, separated by spaces. Every word is indexed
/// (no [`MAX_TERMS`] bound: that bounds queries).
pub fn indexed_text(tenant_token: &str, text: &str) -> String {
    let mut out = String::new();
    for word in fts_words(text) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(tenant_token);
        out.push(BOUNDARY);
        out.push_str(&word);
    }
    out
}

/// The words of `text` (runs of letters and digits), at most
/// [`MAX_TERMS`], as typed: what the PostgreSQL side quotes.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .take(MAX_TERMS)
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

/// The MATCH expression of `text` for `tenant`: every term required,
/// each as the tenant's token for it, the last one a prefix (for
/// search-as-you-type): `"t…zword1" "t…zword2"*`. A prefix of a tenant's
/// token only ever matches that tenant's tokens (the boundary `z` is in
/// it). `None` when there are no terms.
pub fn match_expression(tenant: &str, text: &str) -> Option<String> {
    let terms = terms(text);
    let (last, rest) = terms.split_last()?;
    let tenant = tenant_token(tenant);
    let mut expr = String::new();
    for term in rest {
        push_term(&mut expr, &tenant, term);
        expr.push(' ');
    }
    push_term(&mut expr, &tenant, last);
    expr.push('*');
    Some(expr)
}

/// Appends `"<tenant>z<term>"`.
fn push_term(expr: &mut String, tenant: &str, term: &str) {
    expr.push('"');
    expr.push_str(tenant);
    expr.push(BOUNDARY);
    expr.push_str(term);
    expr.push('"');
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
        let t = "t61636d65z";
        assert_eq!(
            e,
            format!(
                "\"{t}a\" \"{t}or\" \"{t}b\" \"{t}near\" \"{t}c\" \"{t}name\" \"{t}d\" \"{t}e\" \"{t}f\"*"
            )
        );
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
    fn lower_casing_keeps_terms_one_token() {
        assert_eq!(terms("İstanbul"), ["istanbul"]);
    }

    #[test]
    fn indexed_text_prefixes_every_word_and_is_not_bounded() {
        assert_eq!(
            indexed_text("t61", "Payments-API v2, CAFÉ_au lait"),
            "t61zpayments t61zapi t61zv2 t61zcafé t61zau t61zlait"
        );
        let many = "w ".repeat(500);
        assert_eq!(indexed_text("t61", &many).split(' ').count(), 500);
        assert_eq!(indexed_text("t61", " -- "), "");
    }

    #[test]
    fn marks_split_words_as_the_tokenizer_does() {
        // U+093E (a vowel sign, category Mc) and U+0301 (a combining
        // accent, Mn) are alphabetic to Rust but separators to unicode61.
        assert_eq!(
            terms("\u{92e}\u{930}\u{93e}\u{920}"),
            ["\u{92e}\u{930}", "\u{920}"]
        );
        assert_eq!(terms("cafe\u{301}s"), ["cafe", "s"]);
        // Private-use characters stay inside a word, as in unicode61.
        assert_eq!(terms("a\u{e000}b"), ["a\u{e000}b"]);
    }

    /// A tenant id as `TenantId` accepts them.
    fn tenant_id() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9][a-zA-Z0-9_-]{0,40}"
    }

    proptest! {
        #[test]
        fn expression_never_contains_user_syntax(tenant in tenant_id(), text in "\\PC{0,200}") {
            if let Some(e) = match_expression(&tenant, &text) {
                // `"term" "term" … "term"*`: only our own quotes and star,
                // every quoted term the tenant's token of token characters.
                let body = e.strip_suffix('*').expect("prefix on the last term");
                let prefix = format!("{}z", tenant_token(&tenant));
                for quoted in body.split(' ') {
                    let term = quoted
                        .strip_prefix('"')
                        .and_then(|t| t.strip_suffix('"'))
                        .expect("quoted");
                    let word = term.strip_prefix(&prefix).expect("the tenant's token");
                    prop_assert!(!word.is_empty());
                    prop_assert!(word.chars().all(is_token_char), "{word:?}");
                }
            }
        }

        #[test]
        fn tokens_of_two_tenants_never_share_a_prefix_query(
            a in tenant_id(),
            b in tenant_id(),
            word_a in "[a-z0-9]{0,8}",
            word_b in "[a-z0-9]{1,8}",
        ) {
            prop_assume!(a != b);
            // B's token for a word never begins with what A's prefix
            // query for any word asks: the boundary decides.
            let asked = format!("{}z{word_a}", tenant_token(&a));
            let indexed = indexed_text(&tenant_token(&b), &word_b);
            prop_assert!(!indexed.starts_with(&asked), "{indexed} starts with {asked}");
        }

        #[test]
        fn every_indexed_token_is_one_token_of_its_tenant(
            tenant in tenant_id(),
            text in "\\PC{0,200}",
        ) {
            let prefix = format!("{}z", tenant_token(&tenant));
            let indexed = indexed_text(&tenant_token(&tenant), &text);
            for token in indexed.split(' ').filter(|t| !t.is_empty()) {
                let word = token.strip_prefix(&prefix).expect("prefixed");
                prop_assert!(!word.is_empty());
                prop_assert!(word.chars().all(is_token_char), "{word:?}");
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
