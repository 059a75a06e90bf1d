//! Choosing the tables a question needs when the whole schema does not fit the prompt budget.
//!
//! Each table is a BM25 document (the `bm25` crate) made of its name, its namespace, its
//! column names, comments and the tables its foreign keys reach, with identifiers split into
//! words (`customer_id`, `OrderLines` → `customer id`, `order lines`). Question words that name
//! a value stored in a text column (value linking, from a bounded index of distinct values)
//! add to that table's score, and a table next to a relevant one by foreign key gains a share of
//! its score. Tables are then taken best first while they fit the token budget, each with the
//! tables on the shortest foreign-key path to those already chosen, so that a join the question
//! needs is always in the prompt. A schema that fits the budget is rendered whole.
//!
//! This file ranks and chooses tables; the value index it consults is in [`values`].

mod values;

use std::collections::{BTreeSet, HashMap, VecDeque};

use bm25::{Document, Language, SearchEngine, SearchEngineBuilder};
use serde::Serialize;

use super::{render_table, Schema};
use crate::sql::Dialect;
pub use values::{with_samples, ColumnValues, ValueIndex};

/// Tables scoring below this share of the best table's score are left out.
const RELATIVE_CUTOFF: f32 = 0.2;

/// Tables outside the best table's namespace must score at least this share of its score.
const OTHER_NAMESPACE_CUTOFF: f32 = 0.7;

/// A namespace whose evidence is at least this share of the best namespace's is shown as well.
const RUNNER_UP: f32 = 0.85;

/// Splits an identifier into words: `customer_id` → `customer id`, `OrderLines` → `order lines`.
pub fn split_ident(name: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if c == '_' || c == '-' || c == '.' || c.is_whitespace() {
            out.push(' ');
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower {
            out.push(' ');
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        out.extend(c.to_lowercase());
    }
    out
}

/// `t` as a table of a database of its own: no namespace, nor on references within it.
fn without_namespace(t: &super::Table) -> super::Table {
    let mut bare = t.clone();
    bare.schema = None;
    for fk in &mut bare.foreign_keys {
        if fk.ref_schema == t.schema {
            fk.ref_schema = None;
        }
    }
    bare
}

/// One chosen table and why.
#[derive(Debug, Clone, Serialize)]
pub struct Chosen {
    /// As the query writes it (`schema.table` outside the default schema).
    pub table: String,
    pub score: f32,
    pub why: Vec<String>,
}

/// What the model is given for one question.
#[derive(Debug, Clone, Serialize)]
pub struct Selection {
    pub tables: Vec<Chosen>,
    /// Value hints and the chosen tables' `CREATE TABLE` text.
    pub context: String,
    /// Tokens of `context` (by the model's tokenizer when one was given).
    pub tokens: usize,
    /// The whole schema fits the budget and is shown whole.
    pub whole: bool,
    /// The one namespace (not the default one) every chosen table is in. Its tables are then
    /// shown with bare names, as a database of their own, and the bare names a query writes
    /// must be qualified with it before it runs (the guard's `qualify` does that).
    pub namespace: Option<String>,
}

/// Ranks a schema's tables for questions; built once per schema (and value index).
pub struct Selector {
    engine: SearchEngine<usize>,
    values: ValueIndex,
    /// Undirected foreign-key graph over table indices.
    adjacent: Vec<Vec<usize>>,
    rendered: Vec<String>,
    tokens: Vec<usize>,
    /// Each table rendered without its namespace, and its tokens (for a one-namespace choice).
    bare: Vec<(String, usize)>,
    names: Vec<String>,
    /// Each table's namespace (`None`: the default one).
    namespaces: Vec<Option<String>>,
    whole_tokens: usize,
    whole: String,
}

impl Selector {
    /// Prepares the documents, the foreign-key graph and each table's rendering and size.
    /// `count_tokens` measures text as the model will see it.
    pub fn new(
        schema: &Schema,
        dialect: Dialect,
        values: ValueIndex,
        count_tokens: &dyn Fn(&str) -> usize,
    ) -> Self {
        let n = schema.tables.len();
        let mut adjacent = vec![Vec::new(); n];
        for (i, t) in schema.tables.iter().enumerate() {
            for fk in &t.foreign_keys {
                let target = match &fk.ref_schema {
                    Some(ns) => format!("{ns}.{}", fk.ref_table),
                    None => match &t.schema {
                        Some(ns) => format!("{ns}.{}", fk.ref_table),
                        None => fk.ref_table.clone(),
                    },
                };
                if let Some(j) = schema
                    .tables
                    .iter()
                    .position(|u| same_table(u, &target) || same_table(u, &fk.ref_table))
                {
                    if i != j && !adjacent[i].contains(&j) {
                        adjacent[i].push(j);
                        adjacent[j].push(i);
                    }
                }
            }
        }
        let docs: Vec<Document<usize>> = schema
            .tables
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let name = split_ident(&t.name);
                let mut doc = format!("{name} {name} {name}");
                if let Some(ns) = &t.schema {
                    doc.push(' ');
                    doc.push_str(&split_ident(ns));
                }
                if let Some(c) = &t.comment {
                    doc.push(' ');
                    doc.push_str(c);
                }
                for c in &t.columns {
                    doc.push(' ');
                    doc.push_str(&split_ident(&c.name));
                    if let Some(cm) = &c.comment {
                        doc.push(' ');
                        doc.push_str(cm);
                    }
                }
                for &j in &adjacent[i] {
                    doc.push(' ');
                    doc.push_str(&split_ident(&schema.tables[j].name));
                }
                Document::new(i, doc)
            })
            .collect();
        let engine = SearchEngineBuilder::<usize>::with_documents(Language::English, docs).build();
        let rendered: Vec<String> = schema
            .tables
            .iter()
            .map(|t| render_table(t, dialect))
            .collect();
        let tokens: Vec<usize> = rendered.iter().map(|r| count_tokens(r)).collect();
        let bare = schema
            .tables
            .iter()
            .zip(rendered.iter().zip(&tokens))
            .map(|(t, (r, &n))| {
                if t.schema.is_none() {
                    return (r.clone(), n);
                }
                let text = render_table(&without_namespace(t), dialect);
                let n = count_tokens(&text);
                (text, n)
            })
            .collect();
        let whole = rendered.join("\n");
        let whole_tokens = count_tokens(&whole);
        Self {
            engine,
            values,
            adjacent,
            rendered,
            tokens,
            bare,
            names: schema
                .tables
                .iter()
                .map(|t| t.qualified_name(dialect))
                .collect(),
            namespaces: schema.tables.iter().map(|t| t.schema.clone()).collect(),
            whole_tokens,
            whole,
        }
    }

    /// Tokens of the whole schema's rendering.
    pub fn whole_tokens(&self) -> usize {
        self.whole_tokens
    }

    pub fn value_index(&self) -> &ValueIndex {
        &self.values
    }

    /// The tables for `question` within `budget` tokens (the whole schema when it fits).
    pub fn select(&self, question: &str, budget: usize) -> Selection {
        let n = self.names.len();
        if self.whole_tokens <= budget || n == 0 {
            return Selection {
                tables: self
                    .names
                    .iter()
                    .map(|t| Chosen {
                        table: t.clone(),
                        score: 0.0,
                        why: vec!["the whole schema fits".into()],
                    })
                    .collect(),
                context: self.whole.clone(),
                tokens: self.whole_tokens,
                whole: true,
                namespace: None,
            };
        }
        let mut score = vec![0f32; n];
        let mut why: Vec<Vec<String>> = vec![Vec::new(); n];
        let hits = self.engine.search(question, n);
        let top = hits.first().map_or(1.0, |h| h.score.max(1e-6));
        for h in &hits {
            let i = h.document.id;
            score[i] += h.score / top;
            why[i].push(format!("words {:.2}", h.score / top));
        }
        let values = self.values.matches(question);
        let mut hinted: Vec<(usize, String)> = Vec::new();
        // Per table: the first whole value counts most, more columns a little; words of longer
        // values (only rare words, see `ValueIndex::matches`) count little, once.
        let mut whole_cols: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); n];
        let mut word_hit = vec![false; n];
        let mut shown = vec![0usize; n];
        for (r, whole) in &values {
            let t = r.table;
            if *whole {
                if whole_cols[t].insert(r.column.as_str()) {
                    score[t] += if whole_cols[t].len() == 1 { 0.6 } else { 0.1 };
                    hinted.push((t, format!("'{}' is a value of {}", r.value, r.column)));
                }
            } else if !word_hit[t] {
                word_hit[t] = true;
                score[t] += 0.15;
            }
            if shown[t] < 3 {
                why[t].push(format!(
                    "{} '{}' in {}",
                    if *whole { "value" } else { "word of" },
                    r.value,
                    r.column
                ));
            }
            shown[t] += 1;
        }
        for t in 0..n {
            if shown[t] > 3 {
                why[t].push(format!("{} more value matches", shown[t] - 3));
            }
        }
        // A share of each table's score goes to its foreign-key neighbours.
        let base = score.clone();
        for i in 0..n {
            let best = self.adjacent[i]
                .iter()
                .map(|&j| (base[j], j))
                .fold((0f32, usize::MAX), |m, x| if x.0 > m.0 { x } else { m });
            if best.0 > 0.0 {
                score[i] += 0.25 * best.0;
                why[i].push(format!("joins {}", self.names[best.1]));
            }
        }
        let mut order: Vec<usize> = (0..n).filter(|&i| score[i] > 0.0).collect();
        order.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
        let hint_budget = 40;
        let mut chosen: Vec<usize> = Vec::new();
        let mut used = 0usize;
        let mut bridged: Vec<(usize, usize)> = Vec::new();
        let best = order.first().map_or(0.0, |&i| score[i]);
        // The namespace with the most evidence: the sum of its three best tables' scores.
        let mut per: HashMap<Option<&str>, Vec<f32>> = HashMap::new();
        for &i in &order {
            per.entry(self.namespaces[i].as_deref())
                .or_default()
                .push(score[i]);
        }
        let ns_score: HashMap<Option<&str>, f32> = per
            .into_iter()
            .map(|(ns, v)| (ns, v.iter().take(3).sum::<f32>()))
            .collect();
        let (home_score, home) = ns_score
            .iter()
            .map(|(ns, s)| (*s, *ns))
            .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(&a.1)))
            .map_or((0.0, None), |(s, ns)| (s, ns.map(str::to_string)));
        // A close runner-up namespace is shown too: the question may be about either.
        let runner_up = |ns: &Option<String>| {
            ns_score
                .get(&ns.as_deref())
                .is_some_and(|s| *s >= RUNNER_UP * home_score)
        };
        let best = order
            .iter()
            .find(|&&i| self.namespaces[i] == home)
            .map_or(best, |&i| score[i]);
        // A schema of its own (not the default one) that the question is clearly about and
        // that fits the budget is shown whole, as if it were the database: the model then sees
        // every table and column it might need, not only the best-matching ones.
        let contested = ns_score
            .iter()
            .any(|(ns, s)| ns.map(str::to_string) != home && *s >= RUNNER_UP * home_score);
        let mut whole_schema = false;
        if home.is_some() && !contested {
            let members: Vec<usize> = (0..n).filter(|&i| self.namespaces[i] == home).collect();
            let cost: usize = members.iter().map(|&i| self.bare[i].1 + 1).sum();
            if cost + hint_budget <= budget {
                for &i in &members {
                    if score[i] <= 0.0 {
                        why[i].push("the rest of its schema (which fits whole)".into());
                    }
                }
                used = cost;
                chosen = members;
                whole_schema = true;
            }
        }
        for &i in &order {
            // After a whole schema, only a table elsewhere that nearly matches the best one
            // (below) can still join.
            if chosen.contains(&i) || (whole_schema && self.namespaces[i] == home) {
                continue;
            }
            // Far weaker than the best match: more likely to distract the model than to help.
            if score[i] < RELATIVE_CUTOFF * best {
                break;
            }
            // A question is nearly always about one namespace (foreign keys rarely cross them):
            // a table elsewhere must nearly match the best one to be shown.
            if self.namespaces[i] != home
                && score[i] < OTHER_NAMESPACE_CUTOFF * best
                && !runner_up(&self.namespaces[i])
            {
                continue;
            }
            let bridge = self.bridge(&chosen, i);
            let cost: usize = std::iter::once(i)
                .chain(bridge.iter().copied())
                .map(|t| self.tokens[t] + 1)
                .sum();
            if used + cost + hint_budget > budget {
                continue;
            }
            used += cost;
            chosen.push(i);
            for b in bridge {
                bridged.push((b, i));
                chosen.push(b);
            }
        }
        for (b, for_table) in bridged {
            why[b].push(format!("on the join path to {}", self.names[for_table]));
        }
        chosen.sort_unstable();
        let namespace = match chosen.first() {
            Some(&f) => self.namespaces[f].clone().filter(|_| {
                chosen
                    .iter()
                    .all(|&i| self.namespaces[i] == self.namespaces[f])
            }),
            None => None,
        };
        let rendered: Vec<&str> = chosen
            .iter()
            .map(|&i| match namespace {
                Some(_) => self.bare[i].0.as_str(),
                None => self.rendered[i].as_str(),
            })
            .collect();
        if namespace.is_some() {
            used = chosen.iter().map(|&i| self.bare[i].1 + 1).sum();
        }
        let mut context = String::new();
        for (t, hint) in &hinted {
            if chosen.contains(t) {
                context.push_str(&format!("-- {hint}\n"));
            }
        }
        if !context.is_empty() {
            context.push('\n');
        }
        context.push_str(&rendered.join("\n"));
        let mut tables: Vec<Chosen> = chosen
            .iter()
            .map(|&i| Chosen {
                table: self.names[i].clone(),
                score: score[i],
                why: std::mem::take(&mut why[i]),
            })
            .collect();
        tables.sort_by(|a, b| b.score.total_cmp(&a.score));
        Selection {
            tables,
            context,
            tokens: used,
            whole: false,
            namespace,
        }
    }

    /// The tables (not yet chosen) on the shortest foreign-key path from `to` to the chosen set,
    /// at most 3 steps; empty when `to` is adjacent, unreachable, or nothing is chosen yet.
    fn bridge(&self, chosen: &[usize], to: usize) -> Vec<usize> {
        if chosen.is_empty() {
            return Vec::new();
        }
        let mut prev = vec![usize::MAX; self.names.len()];
        let mut depth = vec![usize::MAX; self.names.len()];
        let mut queue = VecDeque::from([to]);
        depth[to] = 0;
        while let Some(u) = queue.pop_front() {
            if chosen.contains(&u) {
                let mut path = Vec::new();
                let mut v = prev[u];
                while v != to && v != usize::MAX {
                    path.push(v);
                    v = prev[v];
                }
                return path;
            }
            if depth[u] >= 3 {
                continue;
            }
            for &w in &self.adjacent[u] {
                if depth[w] == usize::MAX {
                    depth[w] = depth[u] + 1;
                    prev[w] = u;
                    queue.push_back(w);
                }
            }
        }
        Vec::new()
    }
}

fn same_table(t: &super::Table, name: &str) -> bool {
    match name.split_once('.') {
        Some((ns, bare)) => {
            t.name.eq_ignore_ascii_case(bare)
                && t.schema
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(ns))
        }
        None => t.name.eq_ignore_ascii_case(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, ForeignKey, Table, TableKind};

    fn table(ns: Option<&str>, name: &str, cols: &[&str], fks: &[(&str, &str)]) -> Table {
        Table {
            columns: cols.iter().map(|c| Column::new(*c, "TEXT")).collect(),
            primary_key: vec![cols[0].to_string()],
            foreign_keys: fks
                .iter()
                .map(|(col, target)| ForeignKey {
                    columns: vec![col.to_string()],
                    // As PostgreSQL introspection records a reference within a namespace.
                    ref_schema: ns.map(String::from),
                    ref_table: target.to_string(),
                    ref_columns: vec!["id".into()],
                })
                .collect(),
            ..Table::new(ns.map(String::from), name, TableKind::Table)
        }
    }

    /// A shop among unrelated filler tables.
    fn schema() -> Schema {
        let tables = vec![
            table(None, "customers", &["id", "name", "city"], &[]),
            table(
                None,
                "orders",
                &["id", "customer_id", "status"],
                &[("customer_id", "customers")],
            ),
            table(
                None,
                "order_lines",
                &["id", "order_id", "product_id", "quantity"],
                &[("order_id", "orders"), ("product_id", "products")],
            ),
            table(None, "products", &["id", "title", "price"], &[]),
        ];
        padded(
            tables,
            None,
            "sensor",
            &["id", "reading", "unit", "calibrated_at"],
            60,
        )
    }

    /// `tables` followed by `n` unrelated tables `{prefix}_{i}` of namespace `ns`, each of
    /// columns `cols`.
    fn padded(
        mut tables: Vec<Table>,
        ns: Option<&str>,
        prefix: &str,
        cols: &[&str],
        n: usize,
    ) -> Schema {
        tables.extend((0..n).map(|i| table(ns, &format!("{prefix}_{i}"), cols, &[])));
        Schema { tables }
    }

    /// The tables `pick` chose, as a query writes them.
    fn chosen(pick: &Selection) -> Vec<&str> {
        pick.tables.iter().map(|c| c.table.as_str()).collect()
    }

    fn chars(s: &str) -> usize {
        s.len() / 4
    }

    #[test]
    fn picks_the_named_tables_and_the_join_path_between_them() {
        let s = schema();
        let values = ValueIndex::new(&[ColumnValues {
            table: 0,
            column: "customers.city".into(),
            values: vec!["Rio de Janeiro".into(), "Paris".into()],
        }]);
        let sel = Selector::new(&s, Dialect::Sqlite, values, &chars);
        assert!(sel.whole_tokens() > 300);
        let pick = sel.select("Which products did customers in Rio de Janeiro buy?", 300);
        assert!(!pick.whole);
        let names = chosen(&pick);
        for t in ["customers", "products", "orders", "order_lines"] {
            assert!(names.contains(&t), "{t} missing from {names:?}");
        }
        assert!(pick.tokens <= 300);
        assert!(pick
            .context
            .contains("'Rio de Janeiro' is a value of customers.city"));
        let c = pick.tables.iter().find(|c| c.table == "customers").unwrap();
        assert!(
            c.why.iter().any(|w| w.contains("Rio de Janeiro")),
            "{:?}",
            c.why
        );
        assert!(!names.iter().any(|n| n.starts_with("sensor")), "{names:?}");
        // A generous budget shows the whole schema, as before.
        assert!(sel.select("anything", 100_000).whole);
    }

    #[test]
    fn one_namespace_is_shown_when_the_question_is_about_it() {
        let mut tables = Vec::new();
        for ns in ["concerts", "music"] {
            tables.push(table(
                Some(ns),
                "singer",
                &["singer_id", "name", "country", "age"],
                &[],
            ));
        }
        tables.push(table(
            Some("concerts"),
            "concert",
            &["concert_id", "concert_name", "stadium_id", "year"],
            &[],
        ));
        tables.push(table(
            Some("concerts"),
            "singer_in_concert",
            &["concert_id", "singer_id"],
            &[("singer_id", "singer"), ("concert_id", "concert")],
        ));
        tables.push(table(
            Some("music"),
            "song",
            &["song_id", "title", "sales"],
            &[],
        ));
        let s = padded(tables, Some("zoo"), "animal", &["id", "species"], 30);
        let sel = Selector::new(&s, Dialect::Postgres, ValueIndex::default(), &chars);
        let pick = sel.select("How many singers performed in each concert?", 200);
        let names = chosen(&pick);
        assert!(names.contains(&"concerts.singer_in_concert"), "{names:?}");
        assert!(names.contains(&"concerts.concert"), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("zoo.")), "{names:?}");
        assert!(!names.contains(&"music.song"), "{names:?}");
        // All in one namespace: shown as a database of its own, with bare names.
        assert!(
            names.iter().all(|n| n.starts_with("concerts.")),
            "{names:?}"
        );
        assert_eq!(pick.namespace.as_deref(), Some("concerts"));
        assert!(
            pick.context.contains("CREATE TABLE concert ("),
            "{}",
            pick.context
        );
        assert!(!pick.context.contains("concerts."), "{}", pick.context);
        // Two namespaces: every name is qualified.
        let both = sel.select("singers of concerts and songs of music", 400);
        let ns: BTreeSet<&str> = both
            .tables
            .iter()
            .filter_map(|c| c.table.split_once('.').map(|x| x.0))
            .collect();
        assert_eq!(ns.len(), 2, "{ns:?}");
        assert_eq!(both.namespace, None);
        assert!(
            both.context.contains("CREATE TABLE music."),
            "{}",
            both.context
        );
    }

    #[test]
    fn a_schema_that_fits_is_shown_whole() {
        let tables = vec![
            table(
                Some("shop"),
                "orders",
                &["order_id", "status", "placed_at"],
                &[],
            ),
            table(
                Some("shop"),
                "refunds",
                &["refund_id", "order_id", "amount"],
                &[("order_id", "orders")],
            ),
            table(Some("shop"), "couriers", &["courier_id", "name"], &[]),
        ];
        let s = padded(tables, Some("lab"), "sample", &["id", "reading"], 40);
        let sel = Selector::new(&s, Dialect::Postgres, ValueIndex::default(), &chars);
        // Every table of the schema the question is about, including one it does not name.
        let pick = sel.select("How many orders were refunded?", 300);
        let names = chosen(&pick);
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&"shop.couriers"), "{names:?}");
        let c = pick
            .tables
            .iter()
            .find(|c| c.table == "shop.couriers")
            .unwrap();
        assert!(
            c.why.iter().any(|w| w.contains("fits whole")),
            "{:?}",
            c.why
        );
        assert_eq!(pick.namespace.as_deref(), Some("shop"));
        // Too small a budget for the whole schema: only what the question needs.
        // The schema whole, as shown (bare names), and one token short of it with the hints.
        let whole: usize = s.tables[..3]
            .iter()
            .map(|t| chars(&render_table(&without_namespace(t), Dialect::Postgres)) + 1)
            .sum();
        let tight = sel.select("How many orders were refunded?", whole + 39);
        let names = chosen(&tight);
        assert!(!names.contains(&"shop.couriers"), "{names:?}");
        assert!(names.contains(&"shop.orders"), "{names:?}");
    }

    #[test]
    fn value_index_fills_missing_samples() {
        let mut s = schema();
        s.tables[0].columns[2].samples = vec!["Oslo".into()];
        let cols = vec![
            ColumnValues {
                table: 0,
                column: "customers.city".into(),
                values: vec!["Rio".into(), "Paris".into()],
            },
            ColumnValues {
                table: 0,
                column: "customers.name".into(),
                values: (0..20).map(|i| format!("n{i:02}")).rev().collect(),
            },
            ColumnValues {
                table: 1,
                column: "orders.status".into(),
                values: vec!["shipped".into(), "open".into(), "x".repeat(41)],
            },
        ];
        let filled = with_samples(&s, &cols);
        // Introspection's own samples are kept.
        assert_eq!(filled.tables[0].columns[2].samples, ["Oslo"]);
        // Many values: the first three in order; few: all of them (too long ones left out).
        assert_eq!(filled.tables[0].columns[1].samples, ["n00", "n01", "n02"]);
        assert_eq!(filled.tables[1].columns[2].samples, ["open", "shipped"]);
        assert!(render_table(&filled.tables[1], Dialect::Sqlite).contains("'open', 'shipped'"));
    }

    #[test]
    fn identifiers_split_into_words() {
        assert_eq!(split_ident("customer_id"), "customer id");
        assert_eq!(split_ident("OrderLines"), "order lines");
        assert_eq!(split_ident("HTTPStatus2xx"), "httpstatus2xx");
    }
}
