//! Search relevance is each tenant's own: which of a tenant's words are
//! rare is decided by the tenant's records, never by what another tenant
//! writes (SQLite's index counts a term's documents per tenant;
//! PostgreSQL's `ts_rank` reads no collection statistics at all).

use super::*;

/// A record of `tenant` whose only searchable words, beside its name and
/// the helper's url, tag and owner, are `words`.
async fn put(app: &App, tenant: &str, name: &str, words: &str) -> String {
    let created = app.create(tenant, name, words).await;
    created["id"].as_str().expect("id").to_owned()
}

/// Replaces `tenant`'s record `id` (named `name`) with `words` as its
/// description, keeping every other field, so each column keeps its
/// length in words.
async fn replace(app: &App, tenant: &str, id: &str, name: &str, words: &str) {
    let resp = app
        .req(reqwest::Method::PUT, tenant, &format!("/records/{id}"))
        .json(&record_body(tenant, name, words))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), 200);
}

/// The ids and scores of `tenant`'s search for `query`.
async fn ranked(app: &App, tenant: &str, query: &str) -> Vec<(String, f64)> {
    let (status, page) = app.search(tenant, json!({"query": query})).await;
    assert_eq!(status, 200, "{page}");
    page["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|hit| {
            (
                hit["id"].as_str().expect("id").to_owned(),
                hit["score"].as_f64().expect("score"),
            )
        })
        .collect()
}

#[backends]
async fn what_another_tenant_writes_does_not_reorder_a_tenants_results() {
    let data = TestStorage::new();
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;
    // In acme, "alpha" is everywhere and "beta" is rare: the record with
    // more of the rare word ranks first.
    for i in 0..8 {
        put(&app, "acme", &format!("filler{i}"), "alpha").await;
    }
    let rare_first = put(&app, "acme", "one", "beta beta beta alpha").await;
    let common_first = put(&app, "acme", "two", "alpha alpha alpha beta").await;
    // globex has as many records, without either word yet.
    let mut theirs = Vec::new();
    for i in 0..30 {
        let name = format!("g{i}");
        theirs.push((
            put(&app, "globex", &name, "gamma gamma gamma gamma").await,
            name,
        ));
    }
    let before = ranked(&app, "acme", "alpha beta").await;
    let order: Vec<&str> = before.iter().map(|(id, _)| id.as_str()).collect();
    if support::on_postgres() {
        // ts_rank weighs no word by its rarity: both records, either order.
        assert_eq!(order.len(), 2);
    } else {
        assert_eq!(order, [rare_first.as_str(), common_first.as_str()]);
    }

    // globex now writes acme's rare word everywhere (over its records,
    // then in more): acme's order holds. Counted over the whole index,
    // "beta" would now be the common word and the other record would lead.
    for (id, name) in &theirs {
        replace(&app, "globex", id, name, "beta beta beta beta").await;
    }
    let replaced = ranked(&app, "acme", "alpha beta").await;
    for i in 0..30 {
        put(&app, "globex", &format!("h{i}"), "beta beta beta beta").await;
    }
    let added = ranked(&app, "acme", "alpha beta").await;
    let ids_of = |hits: &[(String, f64)]| hits.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
    assert_eq!(ids_of(&replaced), ids_of(&before));
    assert_eq!(ids_of(&added), ids_of(&before));
    if support::on_postgres() {
        // ts_rank reads nothing but the record and the query.
        assert_eq!(added, before);
    }
    // (SQLite's scores move a little: bm25 also reads the index's row
    // count and average column lengths, global totals that every write
    // changes; which of acme's words are rare, it reads from acme's rows.)
    // And each finds its own records only.
    let (_, page) = app.search("globex", json!({"query": "beta"})).await;
    assert_eq!(page["total"], 60);
    let (_, page) = app.search("acme", json!({"query": "beta"})).await;
    assert_eq!(page["total"], 2);
    app.finish().await;
}

#[backends]
async fn prefixes_and_words_match_within_the_tenant_only() {
    let data = TestStorage::new();
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;
    let mine = put(&app, "acme", "payments-api", "Café crème, déjà vu").await;
    put(&app, "acme-2", "payments-api", "Café crème, déjà vu").await;
    put(&app, "acm", "payments-api", "Café crème, déjà vu").await;
    for query in [
        "payments",
        "paym",
        "PAYMENTS api",
        "cafe",
        "CAFÉ creme",
        "deja v",
        "déjà",
    ] {
        let (status, page) = app.search("acme", json!({"query": query})).await;
        assert_eq!(status, 200);
        assert_eq!(ids(&page), [mine.as_str()], "{query}");
        assert_eq!(page["total"], 1, "{query}");
    }
    for query in ["payments nothing", "zzz", "\"payments\" OR x", "pay*ments"] {
        let (status, page) = app.search("acme", json!({"query": query})).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(page["total"], 0, "{query}: {page}");
    }
    app.finish().await;
}

/// Whether its total comes from the count or from a short last page, every
/// page of a search says the same total; a page past the end (records
/// deleted since the cursor was handed out) counts again.
#[backends]
async fn every_page_of_a_search_reports_the_same_total() {
    let data = TestStorage::new();
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(put(&app, "acme", &format!("p{i}"), "paging words").await);
    }
    put(&app, "globex", "other", "paging words").await;
    let mut body = json!({"query": "paging", "limit": 2});
    let mut seen = 0;
    let mut cursors = Vec::new();
    loop {
        let (status, page) = app.search("acme", body.clone()).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], 5, "{page}");
        seen += page["results"].as_array().expect("results").len();
        match page["next_cursor"].as_str() {
            Some(c) => {
                cursors.push(c.to_owned());
                body = json!({"query": "paging", "limit": 2, "cursor": c});
            }
            None => break,
        }
    }
    assert_eq!(seen, 5);
    // A short first page is the whole result.
    let (_, page) = app
        .search("acme", json!({"query": "paging", "limit": 10}))
        .await;
    assert_eq!(page["total"], 5);
    assert_eq!(page["results"].as_array().expect("results").len(), 5);
    // Three records go; the last cursor now points past the end.
    for id in &ids[..3] {
        let resp = app
            .req(reqwest::Method::DELETE, "acme", &format!("/records/{id}"))
            .send()
            .await
            .expect("delete");
        assert_eq!(resp.status(), 204);
    }
    let last = cursors.last().expect("two full pages");
    let (status, page) = app
        .search(
            "acme",
            json!({"query": "paging", "limit": 2, "cursor": last}),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["results"].as_array().expect("results").len(), 0);
    assert_eq!(page["total"], 2, "counted, not guessed from the offset");
    app.finish().await;
}
