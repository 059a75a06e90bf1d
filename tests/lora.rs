//! LoRA adapters on the real default model: a zero adapter changes nothing, a random one adds
//! exactly `scale · x·Aᵀ·Bᵀ` to each projection (checked against plain f32 matrix products),
//! changes the logits, and adapters made for another model are refused without touching it.

mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use sqlora::llm::lora::adapter::{Adapter, AdapterConfig, LoraPair, Target};
use sqlora::llm::lora::bundled;
use sqlora::llm::{Engine, KvCache, LoadOptions};

fn engine() -> Engine {
    Engine::load(&common::model_path(), &LoadOptions::default()).unwrap()
}

fn logits(e: &Engine, ids: &[u32]) -> Vec<f32> {
    let mut cache = KvCache::default();
    e.model()
        .forward(ids, &mut cache)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// An adapter on every projection of every layer, B zero or random: the random values follow
/// from `seed` (unit variance, uniform), so a test sees the same adapter on every run.
fn adapter(e: &Engine, r: usize, zero_b: bool, seed: u64) -> Adapter {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut randn = |shape: (usize, usize)| {
        let v: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| rng.random_range(-1.0f32..1.0) * 3f32.sqrt())
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    };
    let mut weights = BTreeMap::new();
    let mut k = seed;
    for layer in 0..e.model().n_layers() {
        for t in Target::ALL {
            let (out, inp) = e.model().projection_dims(layer, t).unwrap();
            k += 1;
            let a = (randn((r, inp)) * (0.02 + (k % 3) as f64 * 0.01)).unwrap();
            let b = if zero_b {
                Tensor::zeros((out, r), DType::F32, &Device::Cpu).unwrap()
            } else {
                (randn((out, r)) * 0.02).unwrap()
            };
            weights.insert((layer, t), LoraPair { a, b });
        }
    }
    Adapter {
        config: AdapterConfig::new(r, 2.0 * r as f64, &Target::ALL),
        weights,
        sha256: format!("test-{seed}-{zero_b}"),
        label: format!("test-{seed}"),
    }
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn adapters_apply_exactly_and_wrong_ones_are_refused() {
    let mut e = engine();
    let ids: Vec<u32> = e
        .tokenizer()
        .encode("SELECT name FROM customers WHERE")
        .unwrap();
    let base = logits(&e, &ids);

    // B = 0: the adapter adds nothing, bit for bit.
    e.set_adapter(Some(adapter(&e, 8, true, 1))).unwrap();
    assert_eq!(logits(&e, &ids), base);

    // A random adapter: each projection gains exactly scale · x·Aᵀ·Bᵀ.
    let ad = adapter(&e, 8, false, 2);
    let scale = ad.config.scale();
    e.set_adapter(None).unwrap();
    let dev = Device::Cpu;
    let last = e.model().n_layers() - 1;
    let mut plain = Vec::new();
    for layer in [0, last] {
        for t in Target::ALL {
            let (_, inp) = e.model().projection_dims(layer, t).unwrap();
            let x = Tensor::randn(0f32, 1.0, (3, inp), &dev).unwrap();
            plain.push((
                layer,
                t,
                x.clone(),
                e.model().project(layer, t, &x).unwrap(),
            ));
        }
    }
    e.set_adapter(Some(ad.clone())).unwrap();
    for (layer, t, x, base_y) in plain {
        let pair = &ad.weights[&(layer, t)];
        let reference = (base_y
            + x.matmul(&pair.a.t().unwrap())
                .unwrap()
                .matmul(&pair.b.t().unwrap())
                .unwrap()
                * scale)
            .unwrap();
        let got = e.model().project(layer, t, &x).unwrap();
        let d = max_rel_diff(
            &got.flatten_all().unwrap().to_vec1().unwrap(),
            &reference.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert!(d < 1e-4, "layer {layer} {t:?}: relative difference {d}");
    }
    let adapted = logits(&e, &ids);
    assert!(
        max_rel_diff(&adapted, &base) > 1e-3,
        "the adapter changed nothing"
    );

    // Made for another model: wrong width, or more layers. Refused, and the model keeps the
    // adapter it had.
    let mut wrong = ad.clone();
    let pair = wrong.weights.get_mut(&(0, Target::Q)).unwrap();
    pair.a = Tensor::zeros((8, 1536), DType::F32, &dev).unwrap();
    let err = e.set_adapter(Some(wrong)).unwrap_err().to_string();
    assert!(err.contains("made for another base model"), "{err}");
    let mut deep = ad.clone();
    let extra = deep.weights[&(0, Target::Q)].clone();
    deep.weights.insert((99, Target::Q), extra);
    let err = e.set_adapter(Some(deep)).unwrap_err().to_string();
    assert!(err.contains("layer 99"), "{err}");
    assert_eq!(logits(&e, &ids), adapted);

    // Removing the adapter restores the base exactly.
    e.set_adapter(None).unwrap();
    assert_eq!(logits(&e, &ids), base);
}

#[test]
fn adapters_round_trip_through_peft_files() {
    let e = engine();
    let ad = adapter(&e, 4, false, 3);
    let dir = tempfile::tempdir().unwrap();
    ad.save(dir.path()).unwrap();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["r"], 4);
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["bias"], "none");
    let back = Adapter::load(dir.path()).unwrap();
    assert_eq!(back.weights.len(), ad.weights.len());
    let a0 = &back.weights[&(0, Target::Down)];
    assert_eq!(
        a0.a.to_vec2::<f32>().unwrap(),
        ad.weights[&(0, Target::Down)].a.to_vec2::<f32>().unwrap()
    );
}

fn sqlora(data: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_sqlora"));
    c.env("SQLORA_DATA_DIR", data)
        .env_remove("SQLORA_ADAPTER")
        .env_remove("SQLORA_MODEL")
        .env_remove("DATABASE_URL")
        .stdin(std::process::Stdio::null());
    c
}

fn run_ok(c: &mut std::process::Command) -> (String, String) {
    let out = c.output().unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{c:?}\nstdout: {o}\nstderr: {e}");
    (o, e)
}

#[test]
fn the_adapter_library_from_the_command_line() {
    let e = engine();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let zero = tmp.path().join("zero");
    adapter(&e, 4, true, 5).save(&zero).unwrap();
    drop(e);

    run_ok(
        sqlora(&data)
            .args(["adapters", "import", "--offline"])
            .arg(&zero),
    );
    let (list, _) = run_ok(sqlora(&data).args(["adapters", "list"]));
    assert!(list.contains("zero") && list.contains("r=4"), "{list}");

    // A zero adapter answers exactly like the base model.
    let q = "How many customers are there?";
    let ask = |extra: &[&str]| {
        let (o, _) = run_ok(
            sqlora(&data)
                .args(["ask", "--offline", "--format", "json"])
                .args(extra)
                .arg(q),
        );
        serde_json::from_str::<serde_json::Value>(o.trim()).unwrap()
    };
    let base = ask(&["--adapter", "none"]);
    assert_eq!(base["adapter"], serde_json::Value::Null);
    let with = ask(&["--adapter", "zero"]);
    assert_eq!(base["sql"], with["sql"]);
    assert_eq!(base["rows"], with["rows"]);

    // Side by side: a zero adapter agrees with the base model.
    let (o, _) = run_ok(
        sqlora(&data)
            .args([
                "ask",
                "--offline",
                "--format",
                "json",
                "--compare",
                "--adapter",
                "zero",
            ])
            .arg(q),
    );
    let cmp: serde_json::Value = serde_json::from_str(o.trim()).unwrap();
    assert_eq!(cmp["results_agree"], true, "{cmp}");
    assert_eq!(cmp["with_adapter"]["sql"], cmp["base"]["sql"]);
    assert_eq!(cmp["adapter"], "zero");

    // And over an eval set: same EX, nothing flipped.
    let set = tmp.path().join("set.jsonl");
    let demo = data.join("demo.sqlite");
    std::fs::write(
        &set,
        format!(
            "{}\n",
            serde_json::json!({"question": q, "db": demo, "query": "SELECT COUNT(*) FROM customers"})
        ),
    )
    .unwrap();
    let (o, _) = run_ok(
        sqlora(&data)
            .args([
                "eval",
                "--offline",
                "--adapter",
                "zero",
                "--compare-base",
                "--set",
            ])
            .arg(&set),
    );
    assert!(
        o.contains("base EX 100.0% (1/1) → adapter EX 100.0% (1/1); 0 questions flipped"),
        "{o}"
    );

    // Without a choice the default model answers with the adapter shipped for it, which the
    // list shows; a database's own choice (`zero`, then `none`) comes first, and `default`
    // forgets it again.
    let (list, _) = run_ok(sqlora(&data).args(["adapters", "list"]));
    assert!(list.contains(bundled::NAME), "{list}");
    let adapter_of_ask = || ask(&[])["adapter"].clone();
    assert_eq!(adapter_of_ask(), bundled::NAME);
    run_ok(sqlora(&data).args(["adapters", "use", "zero"]));
    let (list, _) = run_ok(sqlora(&data).args(["adapters", "list"]));
    assert!(list.contains("default for sqlite:"), "{list}");
    assert_eq!(adapter_of_ask(), "zero");
    run_ok(sqlora(&data).args(["adapters", "use", "none"]));
    assert_eq!(adapter_of_ask(), serde_json::Value::Null);
    run_ok(sqlora(&data).args(["adapters", "use", "default"]));
    assert_eq!(adapter_of_ask(), bundled::NAME);
    // The shipped adapter's name is kept for it.
    let out = sqlora(&data)
        .args(["adapters", "import", "--offline", "--name", bundled::NAME])
        .arg(&zero)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shipped with sqlora"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Export gives the PEFT files back.
    let out = tmp.path().join("out");
    run_ok(sqlora(&data).args(["adapters", "export", "zero"]).arg(&out));
    assert!(Adapter::load(&out).is_ok());

    // Wrong adapters: one line, non-zero exit.
    let mut small = BTreeMap::new();
    small.insert(
        (0, Target::Q),
        LoraPair {
            a: Tensor::zeros((2, 64), DType::F32, &Device::Cpu).unwrap(),
            b: Tensor::zeros((64, 2), DType::F32, &Device::Cpu).unwrap(),
        },
    );
    let other = tmp.path().join("other");
    Adapter {
        config: AdapterConfig::new(2, 4.0, &[Target::Q]),
        weights: small,
        sha256: String::new(),
        label: "other".into(),
    }
    .save(&other)
    .unwrap();
    for (args, want) in [
        (
            vec!["adapters", "import", "--offline", other.to_str().unwrap()],
            "does not fit this model",
        ),
        (
            vec!["ask", "--offline", "--adapter", "nope", q],
            "no adapter named `nope`",
        ),
        (
            vec!["adapters", "remove", "nope"],
            "no adapter named `nope`",
        ),
    ] {
        let out = sqlora(&data).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    run_ok(sqlora(&data).args(["adapters", "remove", "zero"]));
}

#[test]
fn merged_adapters_give_the_same_answers_and_cannot_be_switched() {
    let mut e = engine();
    let ids: Vec<u32> = e
        .tokenizer()
        .encode("SELECT name FROM customers WHERE country =")
        .unwrap();
    let ad = adapter(&e, 8, false, 4);
    let base = logits(&e, &ids);
    e.set_adapter(Some(ad.clone())).unwrap();
    let unmerged = logits(&e, &ids);
    e.merge_adapter().unwrap();
    assert!(e.is_merged());
    let merged = logits(&e, &ids);
    // Merged, each weight (the base's plus the adapter's delta) is re-quantized to 256 levels
    // per block of 32 (the CPU's int8 cells): the logits move by that rounding, far less than
    // the adapter moves them, and the greedy choice stays.
    let d = max_rel_diff(&merged, &unmerged);
    let adapter_effect = max_rel_diff(&base, &unmerged);
    eprintln!("merged logits differ by {d}; the adapter moves them by {adapter_effect}");
    assert!(
        d < 0.05 && d < adapter_effect / 4.0,
        "merged logits differ by {d}"
    );
    // And decode too.
    let mut cache = KvCache::default();
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .fold((0, f32::MIN), |m, (i, &x)| if x > m.1 { (i, x) } else { m })
            .0
    };
    e.model()
        .forward(&ids[..ids.len() - 1], &mut cache)
        .unwrap();
    let step: Vec<f32> = e
        .model()
        .forward(&ids[ids.len() - 1..], &mut cache)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(argmax(&step), argmax(&unmerged));
    let err = e.set_adapter(None).unwrap_err().to_string();
    assert!(err.contains("--merge"), "{err}");
    let err = e.set_adapter(Some(ad)).unwrap_err().to_string();
    assert!(err.contains("merged"), "{err}");
}
