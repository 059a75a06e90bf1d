//! QLoRA training on a tiny random Qwen2 (2 layers, hidden 64): the frozen quantized linear's
//! backward against a dense reference, LoRA gradients against finite differences, a loss that
//! falls on a small set the adapter can memorise, and an adapter that, once saved, gives the
//! inference path the logits training computed.

mod common;

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlora::cancel::Cancel;
use sqlora::llm::lora::adapter::{Adapter, AdapterConfig, Target};
use sqlora::llm::{
    linear::FrozenLinear,
    lora::{dropout::Dropout, params::LoraParams},
};
use sqlora::llm::{KvCache, Model, WeightFormat, WeightPlan};
use sqlora::train::{self, Compute, Example, Options, Schedule};
use DType::F32;

fn dense() -> WeightPlan {
    WeightPlan {
        prefill: WeightFormat::F32,
        decode: WeightFormat::F32,
        wide_rows: 1,
    }
}

fn native() -> WeightPlan {
    WeightPlan {
        prefill: WeightFormat::Native,
        decode: WeightFormat::Native,
        wide_rows: 1,
    }
}

fn pass(chunk: usize, grads: bool, recompute: bool, dtype: DType) -> train::Pass {
    train::Pass {
        chunk,
        grads,
        recompute,
        dtype,
        hand: true,
    }
}

/// LoRA matrices on every projection, `A` and `B` both drawn from `seed` (PEFT starts `B` at
/// zero; non-zero, gradients reach both). Seeded, so that a test sees the same values each run.
fn lora_with_b(model: &Model, rank: usize, alpha: f64, seed: u64) -> LoraParams {
    let mut rng = StdRng::seed_from_u64(seed);
    let cfg = AdapterConfig::new(rank, alpha, &Target::ALL);
    let lora = LoraParams::init(model, cfg, &Target::ALL, &mut rng).unwrap();
    for (_, b) in lora.pairs.values() {
        let (o, r) = b.as_tensor().dims2().unwrap();
        // Uniform with a standard deviation of 0.1.
        let w: Vec<f32> = (0..o * r)
            .map(|_| rng.random_range(-0.173..0.173))
            .collect();
        b.set(&Tensor::from_vec(w, (o, r), &Device::Cpu).unwrap())
            .unwrap();
    }
    lora
}

fn options(steps: usize) -> Options {
    Options {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: Target::ALL.to_vec(),
        lr: 1e-2,
        weight_decay: 0.0,
        steps,
        batch: 2,
        grad_accum: 1,
        warmup: 2,
        schedule: Schedule::Constant,
        clip: 5.0,
        seed: 7,
        loss_chunk: 5,
        recompute: false,
        compute: Compute::F32,
    }
}

/// Random sequences whose last tokens are the "answer".
fn examples(n: usize, seed: u64) -> Vec<Example> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let len = 10 + i % 4;
            let ids = (0..len).map(|_| rng.random_range(0..128u32)).collect();
            Example {
                ids,
                answer_start: len - 4,
            }
        })
        .collect()
}

#[test]
fn frozen_quantized_linear_backward_matches_the_dense_reference() {
    let dev = Device::Cpu;
    let w = (Tensor::randn(0f32, 1.0, (96, 64), &dev).unwrap() * 0.1).unwrap();
    let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
    let w_deq = q.dequantize(&dev).unwrap();
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 64), &dev).unwrap()).unwrap();
    let r = Tensor::randn(0f32, 1.0, (2, 3, 96), &dev).unwrap();
    let y = x.as_tensor().apply_op1(FrozenLinear(Arc::new(q))).unwrap();
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let dx = g.get(x.as_tensor()).unwrap().flatten_all().unwrap();
    let y_ref = x.as_tensor().broadcast_matmul(&w_deq.t().unwrap()).unwrap();
    let g_ref = (&y_ref * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let dx_ref = g_ref.get(x.as_tensor()).unwrap().flatten_all().unwrap();
    let err = common::max_abs_diff(&dx, &dx_ref);
    eprintln!("max |dx - dx_dense| = {err:.2e}");
    assert!(err < 1e-4, "{err}");
    // The forward is the same dense product, from the weight dequantized inside the op.
    let fwd = common::max_abs_diff(&y, &y_ref);
    assert!(fwd < 1e-5, "{fwd}");
    // In bf16 (the GPU's compute dtype) the op computes in bf16, close to the f32 reference.
    let xb = x.as_tensor().to_dtype(DType::BF16).unwrap();
    let yb = xb
        .apply_op1(FrozenLinear(Arc::new(
            QTensor::quantize(&w, GgmlDType::Q8_0).unwrap(),
        )))
        .unwrap();
    assert_eq!(yb.dtype(), DType::BF16);
    let fwd = common::max_abs_diff(&yb.to_dtype(F32).unwrap(), &y_ref);
    assert!(fwd < 0.05, "{fwd}");
}

#[test]
fn lora_gradients_match_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny::model(dir.path(), GgmlDType::F32, &dense());
    let lora = lora_with_b(&model, 2, 4.0, 1);
    let data = examples(2, 3);
    let batch: Vec<&Example> = data.iter().collect();
    let loss_of = |lora: &LoraParams, grads: bool| {
        let r = train::batch_loss(
            &model,
            lora,
            &batch,
            &mut Dropout::off(),
            pass(3, grads, false, F32),
        )
        .unwrap();
        (r.loss, r.grads)
    };
    let grads = loss_of(&lora, true).1.unwrap();
    let mut checked = 0;
    let mut large = 0;
    let mut worst = 0f64;
    for (&(layer, t), (a, b)) in &lora.pairs {
        if !(layer == 1 || t == Target::Q || t == Target::Down) {
            continue;
        }
        for var in [a, b] {
            let g = grads.get(var.as_tensor()).unwrap();
            let (rows, cols) = g.dims2().unwrap();
            let g: Vec<Vec<f32>> = g.to_vec2().unwrap();
            for k in 0..2 {
                let (i, j) = ((k * 7 + layer) % rows, (k * 13 + 5) % cols);
                let base: Vec<Vec<f32>> = var.as_tensor().to_vec2().unwrap();
                let eps = 1e-2f32;
                let at = |d: f32| {
                    let mut w = base.clone();
                    w[i][j] += d;
                    var.set(&Tensor::new(w, &Device::Cpu).unwrap()).unwrap();
                    loss_of(&lora, false).0
                };
                let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
                var.set(&Tensor::new(base, &Device::Cpu).unwrap()).unwrap();
                let an = g[i][j] as f64;
                // The loss (about 5) is an f32: its last bit, over 2·eps, limits the numeric
                // derivative to about ±3e-5, so the comparison allows that much besides 2%.
                let resolution = 5.0 * f32::EPSILON as f64 / (2.0 * eps as f64);
                let scale = fd.abs().max(an.abs());
                if scale >= 1e-3 {
                    worst = worst.max((fd - an).abs() / scale);
                    large += 1;
                }
                assert!(
                    (fd - an).abs() <= 2e-2 * scale + resolution,
                    "layer {layer} {t:?} [{i},{j}]: analytic {an}, numeric {fd}"
                );
                checked += 1;
            }
        }
    }
    eprintln!(
        "{checked} LoRA gradients checked; worst relative difference {worst:.2e} among the \
         {large} of magnitude 1e-3 or more"
    );
    assert!(checked >= 20);
    assert!(
        large >= checked / 2,
        "{large} of {checked} large enough to compare tightly"
    );
}

#[test]
fn training_memorises_a_small_set_and_the_saved_adapter_reproduces_it() {
    let dir = tempfile::tempdir().unwrap();
    // Training runs on the quantized base (Q8_0 here), as QLoRA does.
    let model = common::tiny::model(dir.path(), GgmlDType::Q8_0, &native());
    let data = examples(6, 11);
    let held_out = examples(2, 99);
    let mut losses = Vec::new();
    let lora = train::train(
        &model,
        &data,
        &held_out,
        &options(150),
        20,
        &Cancel::new(),
        &mut |r| losses.push(r.loss),
    )
    .unwrap();
    let first = losses[..3].iter().sum::<f64>() / 3.0;
    let last = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
    assert_eq!(losses.len(), 150);
    // The tiny model's frozen output layer has small random weights, so its logits span little
    // more than ±1.5 and no loss gets near 0; memorising shows as the loss falling by over a
    // nat and the answer tokens becoming the model's first choice.
    let correct = top1_hits(&model, &lora, &data);
    let targets: usize = data.iter().map(|e| e.ids.len() - e.answer_start).sum();
    eprintln!(
        "loss {first:.3} → {last:.3} over {} steps; {correct}/{targets} answer tokens first choice",
        losses.len()
    );
    assert!(last < first - 1.0, "loss {first} → {last}");
    assert!(correct * 10 >= targets * 9, "{correct}/{targets}");
    let before = LoraParams::init(
        &model,
        AdapterConfig::new(4, 8.0, &Target::ALL),
        &Target::ALL,
        &mut StdRng::seed_from_u64(7),
    )
    .unwrap();
    assert!(
        top1_hits(&model, &before, &data) * 4 < targets,
        "memorised before training?"
    );

    // Same seed, same run.
    let mut again = Vec::new();
    train::train(
        &model,
        &data,
        &[],
        &options(5),
        0,
        &Cancel::new(),
        &mut |r| again.push(r.loss),
    )
    .unwrap();
    assert_eq!(again, losses[..5].to_vec());

    // Saved in PEFT's format and loaded through the inference path, the adapter gives the
    // logits training computed (the inference model holds the same Q8_0 weights, dequantized).
    let adapter = lora.to_adapter("trained").unwrap();
    let saved = dir.path().join("adapter");
    adapter.save(&saved).unwrap();
    let loaded = Adapter::load(&saved).unwrap();
    let mut infer = common::tiny::model(dir.path(), GgmlDType::Q8_0, &dense());
    infer.set_adapter(Some(&loaded)).unwrap();
    let e = &data[0];
    let ids = Tensor::new(e.ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mut drop = Dropout::off();
    let dense_train = common::tiny::model(dir.path(), GgmlDType::Q8_0, &dense());
    let hidden = dense_train
        .hidden_train(&ids, &lora, &mut drop, F32)
        .unwrap();
    let last_h = hidden
        .narrow(1, e.ids.len() - 1, 1)
        .unwrap()
        .squeeze(1)
        .unwrap();
    let trained: Vec<f32> = dense_train
        .logits_train(&last_h)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let inferred: Vec<f32> = infer
        .forward(&e.ids, &mut KvCache::default())
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap();
    let d = trained
        .iter()
        .zip(&inferred)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("training vs inference logits: max |difference| {d:.2e}");
    assert!(d < 1e-4, "{d}");
}

/// Answer tokens the model ranks first, after the prompt and the answer so far.
fn top1_hits(model: &Model, lora: &LoraParams, data: &[Example]) -> usize {
    let mut hits = 0;
    for e in data {
        let mut drop = Dropout::off();
        let ids = Tensor::new(e.ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let h = model
            .hidden_train(&ids, lora, &mut drop, F32)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let best: Vec<u32> = model
            .logits_train(&h)
            .unwrap()
            .argmax(1)
            .unwrap()
            .to_vec1()
            .unwrap();
        hits += (e.answer_start - 1..e.ids.len() - 1)
            .filter(|&t| best[t] == e.ids[t + 1])
            .count();
    }
    hits
}

/// `sqlora train` end to end on the real model (one step, so it stays quick on CPU): the
/// adapter lands in the library in PEFT's format with its training record and metrics, and
/// `ask --adapter` answers with it.
#[test]
fn train_command_adds_an_adapter_that_ask_can_use() {
    let _ = common::model_path();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.jsonl");
    let ctx = "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT);";
    let lines: Vec<String> = [
        (
            "How many customers are there?",
            "SELECT count(*) FROM customers",
        ),
        (
            "Which countries do customers live in?",
            "SELECT DISTINCT country FROM customers",
        ),
        (
            "Name the customers from Spain.",
            "SELECT name FROM customers WHERE country = 'Spain'",
        ),
    ]
    .iter()
    .map(|(q, a)| serde_json::json!({"question": q, "context": ctx, "answer": a}).to_string())
    .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sqlora"))
            .env("SQLORA_DATA_DIR", dir.path())
            .env_remove("SQLORA_ADAPTER")
            .env_remove("DATABASE_URL")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "train",
        "--offline",
        "--data",
        data.to_str().unwrap(),
        "--out",
        "shop",
        "--steps",
        "1",
        "--batch",
        "1",
        "--eval-split",
        "0.34",
        "--lr",
        "1e-4",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lib = dir.path().join("adapters/shop");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lib.join("sqlora.json")).unwrap()).unwrap();
    assert_eq!(meta["training"]["examples"], 2);
    assert_eq!(meta["training"]["eval_examples"], 1);
    assert_eq!(meta["training"]["options"]["rank"], 16);
    assert_eq!(meta["training"]["data_sha256"].as_str().unwrap().len(), 64);
    assert!(meta["training"]["final_loss"].as_f64().unwrap().is_finite());
    assert_eq!(meta["base"]["hidden_size"], 896);
    let metrics = std::fs::read_to_string(lib.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 1);
    let png = std::fs::read(lib.join("loss.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    // A finished run leaves no checkpoint behind.
    assert!(!dir.path().join("runs/shop/checkpoint").exists());
    let adapter = Adapter::load(&lib).unwrap();
    assert_eq!(adapter.weights.len(), 24 * 7);
    assert_eq!(adapter.config.r, 16);
    // The same name again is refused, and the first adapter is kept.
    let again = run(&[
        "train",
        "--offline",
        "--data",
        data.to_str().unwrap(),
        "--out",
        "shop",
        "--steps",
        "1",
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let ask = run(&[
        "ask",
        "--offline",
        "--adapter",
        "shop",
        "--format",
        "json",
        "How many customers are there?",
    ]);
    assert!(
        ask.status.success(),
        "{}",
        String::from_utf8_lossy(&ask.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&ask.stdout).unwrap();
    assert_eq!(v["row_count"], 1);
}

#[test]
fn recomputing_activations_gives_the_gradients_of_the_whole_graph() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny::model(dir.path(), GgmlDType::Q8_0, &native());
    let lora = lora_with_b(&model, 4, 8.0, 3);
    let data = examples(3, 5);
    let batch: Vec<&Example> = data.iter().collect();
    // Dropout on: the recomputed layers must draw the masks they drew going forward.
    let run = |recompute: bool| {
        train::batch_loss(
            &model,
            &lora,
            &batch,
            &mut Dropout::new(0.3, 11),
            pass(4, true, recompute, F32),
        )
        .unwrap()
    };
    let (whole, again) = (run(false), run(true));
    assert_eq!(whole.loss, again.loss);
    let (gw, ga) = (whole.grads.unwrap(), again.grads.unwrap());
    let mut worst = 0f32;
    let mut n = 0;
    for v in lora.vars() {
        let a: Vec<f32> = gw
            .get(v.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = ga
            .get(v.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (x, y) in a.iter().zip(&b) {
            worst = worst.max((x - y).abs() / x.abs().max(1e-3));
        }
        n += 1;
    }
    eprintln!(
        "{n} gradients, recomputed vs kept activations: worst relative difference {worst:.1e}"
    );
    assert_eq!(n, 2 * 2 * Target::ALL.len());
    assert!(worst < 1e-4, "{worst}");
    // A different dropout seed gives different gradients (the masks are really applied).
    let other = train::batch_loss(
        &model,
        &lora,
        &batch,
        &mut Dropout::new(0.3, 12),
        pass(4, true, true, F32),
    )
    .unwrap();
    assert_ne!(other.loss, whole.loss);
}

#[test]
fn a_run_resumed_from_a_checkpoint_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny::model(dir.path(), GgmlDType::Q8_0, &native());
    let data = examples(7, 21);
    let mut opts = options(6);
    opts.dropout = 0.1;
    opts.grad_accum = 2;
    opts.weight_decay = 0.01;
    opts.recompute = true;
    opts.schedule = Schedule::Cosine;
    let mut whole = train::Trainer::new(&model, &opts).unwrap();
    let straight: Vec<f64> = (0..6).map(|_| whole.step(&data).unwrap().loss).collect();

    let mut first = train::Trainer::new(&model, &opts).unwrap();
    let mut resumed: Vec<f64> = (0..3).map(|_| first.step(&data).unwrap().loss).collect();
    let ckpt = dir.path().join("run/checkpoint");
    first.save_checkpoint(&ckpt, "run-1").unwrap();
    drop(first);
    // Another run's identity is refused.
    assert!(train::Trainer::resume(&model, &opts, &ckpt, "run-2").is_err());
    let mut second = train::Trainer::resume(&model, &opts, &ckpt, "run-1").unwrap();
    assert_eq!(second.step, 3);
    while !second.done() {
        resumed.push(second.step(&data).unwrap().loss);
    }
    assert_eq!(resumed, straight);
    // And the adapters are the same.
    for (k, (a, b)) in &whole.lora.pairs {
        let (a2, b2) = &second.lora.pairs[k];
        for (x, y) in [(a, a2), (b, b2)] {
            let d = common::max_abs_diff(x.as_tensor(), y.as_tensor());
            assert_eq!(d, 0.0, "{k:?}");
        }
    }
}

/// A run that goes on from an adapter starts at its weights exactly (its loss is that adapter's
/// loss, not a fresh adapter's) and then learns from there.
#[test]
fn a_run_can_go_on_from_an_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny::model(dir.path(), GgmlDType::Q8_0, &native());
    let data = examples(6, 5);
    let opts = options(8);
    let mut first = train::Trainer::new(&model, &opts).unwrap();
    let fresh_loss = first.eval_loss(&data).unwrap();
    for _ in 0..8 {
        first.step(&data).unwrap();
    }
    let first_loss = first.eval_loss(&data).unwrap();
    assert!(first_loss < fresh_loss, "{first_loss} vs {fresh_loss}");
    let trained = first.lora.to_adapter("first").unwrap();

    let mut on = train::Trainer::from_start(&model, &opts, Some(&trained)).unwrap();
    assert_eq!(on.step, 0, "a new run, with a fresh optimizer");
    for (k, (a, b)) in &first.lora.pairs {
        let (a2, b2) = &on.lora.pairs[k];
        for (x, y) in [(a, a2), (b, b2)] {
            assert_eq!(
                common::max_abs_diff(x.as_tensor(), y.as_tensor()),
                0.0,
                "{k:?}"
            );
        }
    }
    assert_eq!(
        on.eval_loss(&data).unwrap(),
        first_loss,
        "starts where the first run ended"
    );
    for _ in 0..8 {
        on.step(&data).unwrap();
    }
    let on_loss = on.eval_loss(&data).unwrap();
    assert!(
        on_loss < first_loss,
        "and learns on: {on_loss} vs {first_loss}"
    );
}

/// `sqlora train --auto`: nothing until enough new judged answers exist; then a run on them
/// (weighted up, with Spider train pairs replayed beside them) that marks them used and adopts
/// the adapter as the database's default only if its held-out loss is not worse than the
/// current default's.
#[test]
fn periodic_training_waits_for_new_pairs_then_trains_and_decides() {
    let _ = common::model_path();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT);
         INSERT INTO customers VALUES (1, 'Ana', 'Spain'), (2, 'Ben', 'Chile');",
    )
    .unwrap();
    drop(conn);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sqlora"))
            .env("SQLORA_DATA_DIR", dir.path())
            .env_remove("SQLORA_ADAPTER")
            .env_remove("DATABASE_URL")
            .env_remove("SQLORA_FEEDBACK_DB")
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {text}");
        text
    };
    let db_arg = db.to_str().unwrap();
    let record = |q: &str, sql: &str| {
        run(&[
            "feedback",
            "record",
            "--db",
            db_arg,
            "--question",
            q,
            "--sql",
            sql,
        ]);
    };
    record(
        "How many customers are there?",
        "SELECT count(*) FROM customers",
    );
    record(
        "List the countries.",
        "SELECT DISTINCT country FROM customers",
    );
    let auto = [
        "train",
        "--auto",
        "--min-new",
        "3",
        "--db",
        db_arg,
        "--offline",
    ];
    let waiting = run(&auto);
    assert!(
        waiting.contains("2 new accepted or corrected answers"),
        "{waiting}"
    );
    assert!(waiting.contains("waits for 3"), "{waiting}");
    // A question set that cannot be read is an error before anything else happens.
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_sqlora"))
        .env("SQLORA_DATA_DIR", dir.path())
        .args(auto)
        .args(["--eval-set", "/nonexistent/check.jsonl"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(
        err.contains("cannot read /nonexistent/check.jsonl") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert!(!dir.path().join("adapters").join("fb1").exists());

    record(
        "Who lives in Spain?",
        "SELECT name FROM customers WHERE country = 'Spain'",
    );
    record("Name every customer.", "SELECT name FROM customers");
    // Execution accuracy on a question set of one's own is part of the decision too.
    let set = dir.path().join("check.jsonl");
    std::fs::write(
        &set,
        [
            r#"{"question": "How many customers are there?", "db": "shop.sqlite", "query": "SELECT count(*) FROM customers"}"#,
            r#"{"question": "Which customers live in Chile?", "db": "shop.sqlite", "query": "SELECT name FROM customers WHERE country = 'Chile'"}"#,
            r#"{"question": "List every country.", "db": "shop.sqlite", "query": "SELECT DISTINCT country FROM customers"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let mut args = auto.to_vec();
    args.extend([
        "--out",
        "fb1",
        "--steps",
        "1",
        "--batch",
        "1",
        "--eval-split",
        "0.5",
        "--lr",
        "1e-4",
        "--eval-set",
        set.to_str().unwrap(),
        "--eval-limit",
        "3",
        "--replay",
        "8",
    ]);
    let trained = run(&args);
    let ex_line = trained
        .lines()
        .find(|l| l.starts_with("sqlora: `fb1` on ") && l.contains("EX "))
        .unwrap_or_else(|| panic!("{trained}"));
    assert!(
        ex_line.contains("check.jsonl[0..3]") && ex_line.contains("/3)"),
        "{ex_line}"
    );
    assert!(
        trained.contains("4 feedback pairs marked as used by `fb1`"),
        "{trained}"
    );
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("adapters/fb1/sqlora.json")).unwrap(),
    )
    .unwrap();
    // Two feedback pairs held out; the other two weighted up 4× (the default `--weight`),
    // beside 8 replayed Spider train pairs.
    assert_eq!(meta["training"]["eval_examples"], 2);
    assert_eq!(meta["training"]["examples"], 2 * 4 + 8, "{meta}");
    assert!(
        meta["training"]["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|s| s == "spider-train replay (8 pairs)")),
        "{meta}"
    );
    // The decision follows the two held-out losses it prints.
    let line = trained
        .lines()
        .find(|l| l.contains("held-out loss"))
        .unwrap_or_else(|| panic!("{trained}"));
    // Adapter names (`qwen2.5-coder-0.5b-sql`) hold digits too: read the numbers outside them.
    let unquoted: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
    let nums: Vec<f64> = unquoted
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|w| w.contains('.') && w.len() > 2)
        .filter_map(|w| w.parse().ok())
        .collect();
    eprintln!("{ex_line}\n{line}");
    assert_eq!(nums.len(), 2, "{line}");
    // "EX a/3 against b/3": the new adapter's and the current default's (the shipped adapter,
    // which the run also went on from).
    assert!(
        trained.contains("going on from adapter `qwen2.5-coder-0.5b-sql`"),
        "{trained}"
    );
    let ex: Vec<usize> = line
        .split("EX ")
        .nth(1)
        .unwrap_or_else(|| panic!("{line}"))
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .take(4)
        .map(|w| w.parse().unwrap())
        .collect();
    assert_eq!((ex.len(), ex[1], ex[3]), (4, 3, 3), "{line}");
    let defaults =
        std::fs::read_to_string(dir.path().join("adapters/defaults.json")).unwrap_or_default();
    if line.contains("is now the default") {
        // "held-out loss NEW, `qwen2.5-coder-0.5b-sql` OLD; EX NEW/3 against OLD/3"
        assert!(nums[0] <= nums[1] && ex[0] >= ex[2], "{line}");
        assert!(defaults.contains("\"fb1\""), "{defaults}");
    } else if line.contains("answers fewer questions correctly") {
        assert!(ex[0] < ex[2], "{line}");
        assert!(!defaults.contains("fb1"), "{defaults}");
    } else {
        // "its held-out loss OLD is lower than NEW's"
        assert!(line.contains("stays the default"), "{line}");
        assert!(nums[0] < nums[1], "{line}");
        assert!(!defaults.contains("fb1"), "{defaults}");
    }
    // The pairs are used: the next periodic run waits again.
    let again = run(&auto);
    assert!(
        again.contains("0 new accepted or corrected answers"),
        "{again}"
    );
}

#[test]
fn bf16_compute_follows_the_f32_loss_and_gradients() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny::model(dir.path(), GgmlDType::Q8_0, &native());
    let lora = lora_with_b(&model, 4, 8.0, 4);
    let data = examples(4, 9);
    let batch: Vec<&Example> = data.iter().collect();
    let run = |dtype| {
        train::batch_loss(
            &model,
            &lora,
            &batch,
            &mut Dropout::off(),
            pass(4, true, true, dtype),
        )
        .unwrap()
    };
    let (full, half) = (run(F32), run(DType::BF16));
    let flat = |g: &train::Grads| -> Vec<f32> {
        lora.vars()
            .iter()
            .flat_map(|v| {
                let t = g.get(v.as_tensor()).unwrap();
                assert_eq!(t.dtype(), F32, "gradients of the master weights are f32");
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            })
            .collect()
    };
    let (a, b) = (
        flat(full.grads.as_ref().unwrap()),
        flat(half.grads.as_ref().unwrap()),
    );
    let dot: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let cosine = dot / (norm(&a) * norm(&b));
    let rel = (full.loss - half.loss).abs() / full.loss;
    eprintln!(
        "bf16 vs f32: loss {:.5} vs {:.5} ({rel:.1e} relative), gradient cosine {cosine:.5}",
        half.loss, full.loss
    );
    assert!(rel < 0.02, "{rel}");
    assert!(cosine > 0.99, "{cosine}");
}

#[test]
fn a_pair_file_names_its_dialect_or_is_refused_at_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pairs.jsonl");
    let line = |d: &str| {
        format!(
            r#"{{"question": "q", "context": "CREATE TABLE t (a int);", "answer": "SELECT a FROM t"{d}}}"#
        )
    };
    let good = [
        line(""),
        line(r#", "dialect": "PostgreSQL""#),
        line(r#", "dialect": "mariadb""#),
    ];
    std::fs::write(&file, good.join("\n")).unwrap();
    let got: Vec<_> = sqlora::train::read_pairs(&file)
        .unwrap()
        .into_iter()
        .map(|p| p.dialect)
        .collect();
    assert_eq!(
        got,
        [
            None,
            Some(sqlora::sql::Dialect::Postgres),
            Some(sqlora::sql::Dialect::MySql)
        ]
    );
    std::fs::write(
        &file,
        [line(""), line(r#", "dialect": "oracle""#)].join("\n"),
    )
    .unwrap();
    let err = sqlora::train::read_pairs(&file).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("oracle"), "{err}");
}
