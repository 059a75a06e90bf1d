//! `eval --set TEST.jsonl --corrections POOL.jsonl --n 0,5,10,20,50`: what a user's
//! corrections do for a database, simulated. For each N a new feedback store (a SQLite file
//! in a temporary folder, the real [`crate::feedback::Store`]) records the first N pool pairs
//! of each database (after a seeded shuffle of the pool) as corrected answers, the gold SQL as
//! the user's fix; the test questions are then answered with that database's confirmed pairs
//! read back from the store and retrieved as examples, exactly as the shell and `ask` do.
//!
//! With training (`--mode train|both`) the caller's `prepare` step runs between recording and
//! answering: it gets the store and the evaluator, and trains and applies an adapter as
//! `train --auto` would; without retrieval (`train`) no examples are shown.
//!
//! Owns the simulation, its report and its plot (EX against N). Never trains itself (the
//! layer above does, through `prepare`), never prints.

use std::collections::BTreeMap;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::report::Summary;
use super::{run_all, EvalError, Evaluator, Item, Record};
use crate::cancel::Cancel;
use crate::feedback::{NewAnswer, Review, Store};
use crate::pipeline::{Pipeline, Shot};

/// One N of the simulation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Point {
    /// Pool pairs recorded per database (at most N; fewer where the pool has fewer).
    pub n: usize,
    /// Pairs recorded on each database, and the test EX there: (recorded, correct, total).
    pub by_db: BTreeMap<String, (usize, usize, usize)>,
    pub summary: Summary,
    pub records: Vec<Record>,
    /// What `prepare` reported for this N (the training run, in the training modes).
    #[serde(default)]
    pub trained: Option<serde_json::Value>,
}

/// Called for each N after its pairs are recorded and before the set is answered.
pub type Prepare<'a> = dyn FnMut(usize, &mut Store, &mut Evaluator) -> Result<Option<serde_json::Value>, EvalError>
    + 'a;

/// The pool's items in the order a simulated user corrects them: shuffled with `seed` (0
/// keeps the file's order), so that the first N of each database are a fair draw and the
/// pairs of a smaller N are among those of a larger one.
pub fn pool_order(pool: &[Item], seed: u64) -> Vec<&Item> {
    let mut order: Vec<&Item> = pool.iter().collect();
    if seed != 0 {
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    }
    order
}

/// Records the first `n` of `pool` (in [`pool_order`]) of each database in a new store at
/// `store_path`; returns the store and how many pairs each database got.
pub fn record_pool(
    pool: &[&Item],
    n: usize,
    store_path: &Path,
) -> Result<(Store, BTreeMap<String, usize>), EvalError> {
    let err = |e: &dyn std::fmt::Display| EvalError::Set(format!("corrections: {e}"));
    let mut store = Store::open(&store_path.to_string_lossy()).map_err(|e| err(&e))?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut identities: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    for item in pool {
        let c = counts.entry(item.db.clone()).or_default();
        if *c >= n {
            continue;
        }
        if !identities.contains_key(&item.db) {
            let db = crate::db::open(&item.db).map_err(|e| err(&e))?;
            let p = Pipeline::new(db, None).map_err(|e| err(&e))?;
            identities.insert(
                item.db.clone(),
                (
                    p.describe_db(),
                    p.dialect().name().to_string(),
                    p.context().to_string(),
                ),
            );
        }
        let (identity, dialect, context) = &identities[&item.db];
        store
            .record(&NewAnswer {
                question: item.question.clone(),
                db_identity: identity.clone(),
                dialect: dialect.clone(),
                schema_context: context.clone(),
                model: "none".into(),
                final_sql: None,
                verdict: Some(Review::Corrected),
                correction: Some(item.gold.clone()),
                source: "import".into(),
                ..Default::default()
            })
            .map_err(|e| err(&e))?;
        *c += 1;
    }
    Ok((store, counts))
}

/// The confirmed pairs of each test database, read back from `store`.
pub fn shots_of(
    store: &mut Store,
    items: &[Item],
) -> Result<BTreeMap<String, Vec<Shot>>, EvalError> {
    let mut out = BTreeMap::new();
    for item in items {
        if out.contains_key(&item.db) {
            continue;
        }
        let identity = crate::db::open(&item.db)
            .map(|db| db.describe())
            .map_err(|e| EvalError::Set(format!("corrections: {e}")))?;
        let pairs = store
            .confirmed(&identity)
            .map_err(|e| EvalError::Set(format!("corrections: {e}")))?;
        out.insert(
            item.db.clone(),
            pairs
                .into_iter()
                .map(|c| Shot {
                    id: c.id,
                    question: c.question,
                    sql: c.sql,
                })
                .collect(),
        );
    }
    Ok(out)
}

/// Answers `items` once per N in `ns`, after recording the first N pool pairs of each
/// database: with them as examples when `retrieve`, after `prepare(n, store, evaluator)` (which
/// may train and apply an adapter) either way. `progress(n, record, so_far)` is told of each
/// answer. Returns the points and whether every N ran to the end (`false`: cancelled).
#[allow(clippy::too_many_arguments)]
pub fn simulate(
    items: &[Item],
    pool: &[Item],
    ns: &[usize],
    seed: u64,
    evaluator: &mut Evaluator,
    batch: usize,
    cancel: &Cancel,
    retrieve: bool,
    prepare: &mut Prepare<'_>,
    mut progress: impl FnMut(usize, &Record, &[Record]),
) -> Result<(Vec<Point>, bool), EvalError> {
    let order = pool_order(pool, seed);
    let mut points = Vec::new();
    for &n in ns {
        let dir = tempfile::tempdir().map_err(|e| EvalError::Set(e.to_string()))?;
        let (mut store, counts) = record_pool(&order, n, &dir.path().join("feedback.sqlite"))?;
        evaluator.shots = if retrieve {
            shots_of(&mut store, items)?
        } else {
            BTreeMap::new()
        };
        evaluator.reset();
        let trained = prepare(n, &mut store, evaluator)?;
        if cancel.is_set() {
            return Ok((points, false));
        }
        let (records, complete) = run_all(evaluator, items, batch, cancel, |r, all| {
            progress(n, r, all)
        })?;
        let mut by_db: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
        for r in &records {
            let e = by_db.entry(r.db.clone()).or_default();
            e.0 = counts.get(&r.db).copied().unwrap_or(0);
            if r.verdict != super::Verdict::GoldError {
                e.2 += 1;
                e.1 += usize::from(r.verdict == super::Verdict::Correct);
            }
        }
        points.push(Point {
            n,
            by_db,
            summary: Summary::of(&records),
            records,
            trained,
        });
        if !complete {
            return Ok((points, false));
        }
    }
    Ok((points, true))
}

/// Draws EX against N (one line for the whole set, one per database when there are several)
/// into `png`.
pub fn plot(points: &[Point], png: &Path, title: &str) -> Result<(), String> {
    use plotters::prelude::*;
    crate::train::plot::register_font();
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", png.display());
    let x_max = points.iter().map(|p| p.n).max().unwrap_or(1).max(1) as f64;
    let root = BitMapBackend::new(png, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max * 1.02, 0f64..100f64)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("corrections recorded per database (N)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("execution accuracy (%)")
        .draw()
        .map_err(|e| err(&e))?;
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = vec![(
        "all".into(),
        points
            .iter()
            .map(|p| (p.n as f64, p.summary.overall.ex()))
            .collect(),
    )];
    let dbs: Vec<String> = points
        .first()
        .map(|p| p.by_db.keys().cloned().collect())
        .unwrap_or_default();
    if dbs.len() > 1 {
        for db in dbs {
            let name = Path::new(&db)
                .file_stem()
                .map_or_else(|| db.clone(), |s| s.to_string_lossy().into_owned());
            lines.push((
                name,
                points
                    .iter()
                    .filter_map(|p| {
                        let (_, c, t) = p.by_db.get(&db)?;
                        Some((p.n as f64, 100.0 * *c as f64 / (*t).max(1) as f64))
                    })
                    .collect(),
            ));
        }
    }
    for (i, (name, pts)) in lines.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let width = if i == 0 { 3 } else { 1 };
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(width)))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(i: usize, db: &str) -> Item {
        Item {
            index: i,
            question: format!("q{i}"),
            db: db.into(),
            gold: "SELECT 1".into(),
            order_matters: false,
            hardness: None,
            gold_db: None,
        }
    }

    #[test]
    fn the_pool_order_is_seeded_and_nested() {
        let pool: Vec<Item> = (0..30).map(|i| item(i, "a")).collect();
        let a: Vec<usize> = pool_order(&pool, 7).iter().map(|i| i.index).collect();
        let b: Vec<usize> = pool_order(&pool, 7).iter().map(|i| i.index).collect();
        let c: Vec<usize> = pool_order(&pool, 8).iter().map(|i| i.index).collect();
        let file: Vec<usize> = pool_order(&pool, 0).iter().map(|i| i.index).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(file, (0..30).collect::<Vec<_>>());
    }
}
