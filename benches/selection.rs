//! Table selection on the many-schema Spider benchmark, without generating: for each question,
//! which tables the model would be shown, the recall of the gold query's tables among them,
//! the prompt tokens and the time to choose. Run after
//! `scripts/spider-many-schema.py load DATA PG_URL DIR`:
//! `SELECTION_SET=DIR cargo bench --bench selection` (`SELECTION_BUDGET=N` for another
//! --context-tokens; the model is loaded only for its tokenizer).

use std::time::Instant;

use sqlora::cancel::Cancel;
use sqlora::cli::ModelOpts;
use sqlora::hub::device::DeviceChoice;
use sqlora::llm::{Engine, LoadOptions};
use sqlora::pipeline::Pipeline;

fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(
        std::env::var("SELECTION_SET").map_err(|_| anyhow::anyhow!("set SELECTION_SET=DIR"))?,
    );
    let budget: usize = std::env::var("SELECTION_BUDGET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(sqlora::pipeline::DEFAULT_CONTEXT_TOKENS);
    let gold: Vec<Vec<String>> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("gold-tables.json"))?)?;
    let items: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("spider-pg.jsonl"))?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let url = items[0]["db"].as_str().unwrap_or_default().to_string();
    let opts = ModelOpts {
        model: None,
        offline: true,
        adapter: None,
        merge: false,
        device: DeviceChoice::Cpu,
        backend: sqlora::llm::remote::BackendChoice::Local,
    };
    let engine = Engine::load(
        &sqlora::app::session::model_path(&opts)?,
        &LoadOptions::default(),
    )?;
    let t = Instant::now();
    let mut p = Pipeline::new(sqlora::db::connect(&url, &[])?, Some(engine))?;
    p.context_tokens = budget;
    println!(
        "{} tables; introspected in {:.2} s; whole schema {} tokens; budget {budget}",
        p.schema().tables.len(),
        t.elapsed().as_secs_f64(),
        p.engine().unwrap().tokenizer().encode(p.context())?.len()
    );
    let cancel = Cancel::new();
    let t = Instant::now();
    p.prepare_selection(&cancel)?;
    println!(
        "value index and ranking ready in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let (mut hit, mut total, mut full, mut tokens, mut tables) = (0, 0, 0, 0, 0);
    let mut times = Vec::new();
    let mut misses: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let q = item["question"].as_str().unwrap_or_default();
        let t = Instant::now();
        p.context_for(q, &cancel)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let sel = p.last_selection.as_ref().expect("a selection");
        let shown: std::collections::HashSet<String> = sel
            .tables
            .iter()
            .map(|c| c.table.replace('"', "").to_lowercase())
            .collect();
        let h = gold[i].iter().filter(|g| shown.contains(*g)).count();
        hit += h;
        total += gold[i].len();
        if h == gold[i].len() {
            full += 1;
        } else if misses.len() < 12 {
            misses.push(format!(
                "#{i} {q} — missed {:?}",
                gold[i]
                    .iter()
                    .filter(|g| !shown.contains(*g))
                    .collect::<Vec<_>>()
            ));
        }
        tokens += sel.tokens;
        tables += sel.tables.len();
    }
    times.sort_by(f64::total_cmp);
    let n = items.len();
    println!(
        "{n} questions: gold-table recall {:.1}% ({hit}/{total}), all gold tables shown for {full} \
         ({:.1}%); mean {:.1} tables and {:.0} context tokens shown; selection median {:.1} ms, \
         max {:.1} ms",
        100.0 * hit as f64 / total as f64,
        100.0 * full as f64 / n as f64,
        tables as f64 / n as f64,
        tokens as f64 / n as f64,
        times[n / 2],
        times[n - 1]
    );
    for m in misses {
        println!("  {m}");
    }
    Ok(())
}
