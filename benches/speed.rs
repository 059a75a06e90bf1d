//! Speed of the default model on the demo database: load time, prefill and decode speed, and
//! question→rows latency (p50/p90). Run with `scripts/bench-cpu`, or `scripts/bench-gpu` on a
//! GPU machine with a `--features cuda` build.
//!
//! Environment: `BENCH_MODEL` (name or path, default qwen2.5-coder-0.5b), `BENCH_DEVICE`
//! (cpu, cuda, cuda:N; default cpu), `BENCH_FORMATS=1`
//! to also time the other weight representations on a 128-token prompt, `BENCH_ADAPTER=R` to
//! time a random rank-R LoRA adapter on all 7 projections, applied and then merged,
//! `BENCH_QUICK=1` to stop after load, prefill and decode, `BENCH_TYPING=S` for when the first
//! question is typed in the shell's first-answer figure (default 5 s).

use std::time::Instant;

use sqlora::cancel::Cancel;
use sqlora::cli::ModelOpts;
use sqlora::hub::device::{plan_for, select, DeviceChoice};
use sqlora::llm::{Engine, LoadOptions, WeightFormat, WeightPlan};
use sqlora::pipeline::Pipeline;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let opts = ModelOpts {
        model: std::env::var("BENCH_MODEL").ok(),
        offline: false,
        adapter: None,
        merge: false,
        device: DeviceChoice::Cpu,
        backend: sqlora::llm::remote::BackendChoice::Local,
    };
    let path = sqlora::app::session::model_path(&opts)?;
    let choice: DeviceChoice = std::env::var("BENCH_DEVICE")
        .unwrap_or_else(|_| "cpu".into())
        .parse()
        .map_err(anyhow::Error::msg)?;
    let (device, chosen) = select(choice)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "sqlora benchmark — model {} — {chosen} — {threads} CPU threads",
        path.display()
    );
    let load_opts = LoadOptions {
        plan: plan_for(&device),
        device: device.clone(),
        kv_dir: None,
        weights_dir: None,
    };

    // The first start on a GGUF converts its weights and writes them to the weight cache; every
    // later start maps them.
    let weights = tempfile::tempdir()?;
    let load_opts = LoadOptions {
        weights_dir: Some(weights.path().to_path_buf()),
        ..load_opts
    };
    let t = Instant::now();
    drop(Engine::load(&path, &load_opts)?);
    println!(
        "first load (prefill {:?} + decode {:?} weights, converted and cached): {:.2} s",
        load_opts.plan.prefill,
        load_opts.plan.decode,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let engine = Engine::load(&path, &load_opts)?;
    println!("load (weights cached): {:.2} s", t.elapsed().as_secs_f64());

    let dir = tempfile::tempdir()?;
    let db_path = sqlora::db::demo::ensure(dir.path())?;
    let db = sqlora::db::open(&db_path.to_string_lossy())?;
    let mut p = Pipeline::new(db, Some(engine))?;

    // Prefill: the demo schema prompt, from an empty cache.
    let prompt = sqlora::llm::prompt::build_prompt(
        p.engine().unwrap().template(),
        "How many customers are there?",
        p.context(),
        p.dialect(),
        &[],
    );
    let ids = p.engine().unwrap().tokenizer().encode(&prompt.text())?;
    let e = p.engine_mut().unwrap();
    e.prefill_only(&ids[..16])?; // warm-up
    e.prefill_only(&ids[..555.min(ids.len())])?;
    for n in [555.min(ids.len()), ids.len()] {
        let t = Instant::now();
        e.prefill_only(&ids[..n])?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "prefill: {n} tokens in {:.3} s = {:.0} tok/s",
            s,
            n as f64 / s
        );
    }

    let n = 128;
    e.decode_n(&ids[..32], 8)?; // warm-up (captures the CUDA graph)
    let s = e.decode_n(&ids[..32], n)?;
    println!(
        "decode ({}): {n} tokens in {:.2} s = {:.1} tok/s",
        e.decode_path(),
        s,
        n as f64 / s
    );
    let long = e.decode_n(&ids[..ids.len().min(555)], 256)?;
    println!(
        "decode after a {}-token prompt: 256 tokens in {long:.2} s = {:.1} tok/s",
        ids.len().min(555),
        256.0 / long
    );
    if std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1") {
        return Ok(()); // load, prefill and decode only
    }
    if let Some((worst, same)) = e.check_fast_decode(&ids[..ids.len().min(555)], 32)? {
        println!(
            "fused decode vs candle's kernels over 32 steps: same token {same}/32, max |logit \
             difference| {worst:.4}"
        );
        e.set_fast_decode(false);
        let s = e.decode_n(&ids[..32], n)?;
        println!(
            "decode ({}): {n} tokens in {:.2} s = {:.1} tok/s",
            e.decode_path(),
            s,
            n as f64 / s
        );
        e.set_fast_decode(true);
    }

    // Batched decode (what `eval --batch` runs): steps of one token for every sequence.
    for b in [8, 32] {
        let s = e.decode_batch_n(&ids[..32], b, 32)?;
        println!(
            "decode, batch {b}: {} tokens in {:.2} s = {:.1} tok/s",
            32 * b,
            s,
            (32 * b) as f64 / s
        );
    }

    if std::env::var("BENCH_FORMATS").is_ok_and(|v| v == "1") {
        use WeightFormat::*;
        for fmt in [Native, Q8_0, F32, Int8] {
            let plan = WeightPlan {
                prefill: fmt,
                decode: fmt,
                wide_rows: 1,
            };
            let t = Instant::now();
            let run = || -> anyhow::Result<(f64, f64)> {
                let mut e = Engine::load(
                    &path,
                    &LoadOptions {
                        plan,
                        ..load_opts.clone()
                    },
                )?;
                let t = Instant::now();
                e.prefill_only(&ids[..128])?;
                let pre = 128.0 / t.elapsed().as_secs_f64();
                Ok((pre, 32.0 / e.decode_n(&ids[..16], 32)?))
            };
            match run() {
                Ok((pre, dec)) => println!(
                    "  all {fmt:?}: load+run {:.1} s, prefill {pre:.0} tok/s, decode {dec:.1} tok/s",
                    t.elapsed().as_secs_f64()
                ),
                Err(e) => println!("  all {fmt:?}: failed: {e}"),
            }
        }
    }

    if let Some(r) = std::env::var("BENCH_ADAPTER")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        bench_adapter(&path, &load_opts, &ids, r)?;
    }

    // The first answer on a database whose schema the model has not read yet: one-shot (`ask`
    // reads the schema, then answers), and in the shell, which reads it while the first
    // question is typed (BENCH_TYPING seconds after the start, default 5).
    let cancel = Cancel::new();
    let first = "How many customers are from Germany?";
    let typing: f64 = std::env::var("BENCH_TYPING")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0);
    let schema_tokens = p.prefix_tokens().unwrap_or(0);
    p.engine_mut().unwrap().clear_prefix_cache();
    let t = Instant::now();
    p.ask(first, &cancel)?;
    let cold = t.elapsed().as_secs_f64();
    p.engine_mut().unwrap().clear_prefix_cache();
    let warming = p
        .start_warm_up(&cancel)
        .ok_or_else(|| anyhow::anyhow!("the schema is not read ahead for this database"))?;
    std::thread::sleep(std::time::Duration::from_secs_f64(typing));
    let t = Instant::now();
    p.finish_warm_up(warming)?;
    p.ask(first, &cancel)?;
    println!(
        "first answer on a new database ({schema_tokens} schema tokens): {cold:.2} s one-shot; \
         {:.2} s after the question in the shell, typed {typing:.0} s after it started",
        t.elapsed().as_secs_f64()
    );

    // Question → rows, with the schema prefix cached as in the shell.
    let t = Instant::now();
    let cached = p.warm_up(&cancel)?;
    println!(
        "schema prefix: {cached} tokens cached in {:.2} s (once per session)",
        t.elapsed().as_secs_f64()
    );
    let questions: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("../tests/data/demo_questions.json"))?;
    // Each lever of answer generation on its own and together: the schema mask, and
    // BENCH_CANDIDATES (default 4) answers voted on by their results.
    let n: usize = std::env::var("BENCH_CANDIDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    for (constrain, candidates) in [(false, 1), (true, 1), (false, n), (true, n)] {
        p.levers = sqlora::pipeline::Levers {
            constrain,
            candidates,
            ..Default::default()
        };
        println!("levers: {}", p.levers.describe());
        let mut lat = Vec::new();
        let (mut toks, mut dsecs, mut msecs) = (0usize, 0f64, 0f64);
        for q in &questions {
            let question = q["question"].as_str().unwrap_or_default();
            let t = Instant::now();
            let r = p.ask(question, &cancel);
            let s = t.elapsed().as_secs_f64();
            lat.push(s);
            match r {
                Ok(a) => {
                    toks += a.generation.new_tokens;
                    dsecs += a.generation.decode_secs;
                    msecs += a.generation.mask_secs;
                    println!("  {:5.2} s  {:3} rows  {question}", s, a.outcome.rows.len());
                }
                Err(e) => println!(
                    "  {:5.2} s  error    {question}: {}",
                    s,
                    e.to_string().lines().next().unwrap_or("")
                ),
            }
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        println!(
            "question→rows over {} questions ({}): p50 {:.2} s, p90 {:.2} s, max {:.2} s; answer \
             decode {:.1} tok/s; token mask {:.3} ms per token",
            lat.len(),
            p.levers.describe(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.9),
            lat[lat.len() - 1],
            toks as f64 / dsecs.max(1e-9),
            msecs * 1e3 / toks.max(1) as f64,
        );
    }
    Ok(())
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Prefill and decode speed and resident memory with a random adapter, unmerged then merged.
fn bench_adapter(
    path: &std::path::Path,
    load_opts: &LoadOptions,
    ids: &[u32],
    r: usize,
) -> anyhow::Result<()> {
    use candle_core::{Device, Tensor};
    use sqlora::llm::lora::adapter::{Adapter, AdapterConfig, LoraPair, Target};
    let mut e = Engine::load(path, load_opts)?;
    let speed = |e: &mut Engine, label: &str| -> anyhow::Result<()> {
        let t = Instant::now();
        e.prefill_only(&ids[..256])?;
        let pre = 256.0 / t.elapsed().as_secs_f64();
        let dec = 64.0 / e.decode_n(&ids[..32], 64)?;
        println!(
            "  {label}: prefill {pre:.0} tok/s, decode {dec:.1} tok/s, process RSS {:.0} MB",
            rss_mb()
        );
        Ok(())
    };
    println!("adapter r={r} on all 7 projections of every layer (a second engine):");
    speed(&mut e, "base")?;
    let mut weights = std::collections::BTreeMap::new();
    for layer in 0..e.model().n_layers() {
        for t in Target::ALL {
            let (out, inp) = e.model().projection_dims(layer, t).unwrap();
            let a = (Tensor::randn(0f32, 1.0, (r, inp), &Device::Cpu)? * 0.01)?;
            let b = (Tensor::randn(0f32, 1.0, (out, r), &Device::Cpu)? * 0.01)?;
            weights.insert((layer, t), LoraPair { a, b });
        }
    }
    e.set_adapter(Some(Adapter {
        config: AdapterConfig::new(r, 2.0 * r as f64, &Target::ALL),
        weights,
        sha256: "bench".into(),
        label: "bench".into(),
    }))?;
    speed(&mut e, "with adapter")?;
    let t = Instant::now();
    e.merge_adapter()?;
    println!("  merged in {:.2} s", t.elapsed().as_secs_f64());
    speed(&mut e, "merged")?;
    Ok(())
}
