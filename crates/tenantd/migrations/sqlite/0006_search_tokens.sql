-- Search tokens carry their tenant (records/fts.rs): every indexed word is
-- one token `t<tenant hex>z<word>`, so a term's posting list, its prefix
-- expansion and bm25's count of rows containing it are the tenant's own.
-- The tenant_key column is gone (the tokens say whose they are), and so
-- is the prefix index: prefixes of 2 and 3 characters of a prefixed token
-- are `t6`, `t61`..., useless, and a prefix query reads the range of the
-- tenant's own terms.
--
-- Tokenizing is not possible in SQL: the table is left empty here and the
-- "reindex search" data upgrade (records/reindex.rs, run by
-- store/upgrade.rs right after the migrations) writes every record's entry
-- again, in the same transaction that records it done.
DROP TABLE records_fts;
CREATE VIRTUAL TABLE records_fts USING fts5(
    name, description, url, tags, fields,
    content = '', contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);
-- Ranking: bm25 with column weights (name 10, description 2, url 1,
-- tags 5, fields 1), so `ORDER BY rank` lets FTS5 sort by itself.
INSERT INTO records_fts (records_fts, rank)
VALUES ('rank', 'bm25(10.0, 2.0, 1.0, 5.0, 1.0)');

-- The ledger of data upgrades (store/upgrade.rs): a step named here ran to
-- completion on this database and is never run again.
CREATE TABLE data_upgrades (
    name    TEXT PRIMARY KEY,
    done_at TEXT NOT NULL
);
