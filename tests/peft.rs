//! Interoperability with Hugging Face PEFT, against fixtures made by PEFT itself
//! (`scripts/peft-interop.py make tests/data/peft`, torch 2.11, transformers 5.17, peft 0.21):
//! a tiny random Qwen2 (2 layers, hidden 64, vocab 128) and two adapters PEFT saved (plain LoRA
//! on all 7 projections; rsLoRA on q/v/down), with the logits PEFT computed at every position.
//! sqlora must load those adapters and reproduce PEFT's logits. `sqlora-written/` is an adapter
//! that sqlora saved for the same base, which PEFT loaded back and reproduced
//! (`scripts/peft-interop.py check tests/data/peft`); here sqlora must still compute the logits
//! that were checked there. `SQLORA_REGENERATE_PEFT=1` rewrites `sqlora-written/`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use serde_json::Value;
use sqlora::llm::lora::adapter::{Adapter, AdapterConfig, LoraPair, Target};
use sqlora::llm::{KvCache, Model, WeightFormat, WeightPlan};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/peft")
}

/// Dense f32 weights: PEFT's logits are matched to 1e-4, below the int8 cells' rounding of the
/// activations (the cells are held to f32 by tests/llm.rs and the kernels' own tests).
fn tiny_model(dir: &Path) -> Model {
    let plan = WeightPlan {
        prefill: WeightFormat::F32,
        decode: WeightFormat::F32,
        wide_rows: 4,
    };
    common::tiny::model(dir, GgmlDType::F32, &plan)
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
        .unwrap()
}

fn ids() -> Vec<u32> {
    expected()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn rows(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

/// sqlora's logits at every position, one token at a time (the decode path), plus the last
/// position of the whole sequence in one call (the prefill path).
fn sqlora_logits(model: &Model, ids: &[u32]) -> (Vec<Vec<f32>>, Vec<f32>) {
    let mut cache = KvCache::default();
    let stepwise = ids
        .iter()
        .map(|&id| model.forward(&[id], &mut cache).unwrap().to_vec1().unwrap())
        .collect();
    let whole = model
        .forward(ids, &mut KvCache::default())
        .unwrap()
        .to_vec1()
        .unwrap();
    (stepwise, whole)
}

fn max_abs(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

fn assert_matches(model: &Model, want: &[Vec<f32>], what: &str) {
    let (stepwise, whole) = sqlora_logits(model, &ids());
    let d = max_abs(&stepwise, want);
    eprintln!("{what}: max |logit difference| {d:.2e}");
    assert!(d < 1e-4, "{what}: logits differ from PEFT's by up to {d}");
    let d = max_abs(&[whole], &want[want.len() - 1..]);
    assert!(d < 1e-4, "{what} (prefill): logits differ by up to {d}");
}

#[test]
fn adapters_saved_by_peft_reproduce_peft_logits() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = tiny_model(dir.path());
    let want = expected();
    assert_matches(&model, &rows(&want["base"]), "base model");
    for name in ["plain", "rslora"] {
        let adapter = Adapter::load(&fixture().join(name)).unwrap();
        if name == "rslora" {
            assert!(adapter.config.use_rslora);
            assert_eq!(adapter.config.scale(), 16.0 / 8f64.sqrt());
            assert_eq!(adapter.weights.len(), 2 * 3);
        } else {
            assert_eq!(adapter.weights.len(), 2 * 7);
        }
        model.set_adapter(Some(&adapter)).unwrap();
        let adapted = rows(&want[name]);
        assert_matches(&model, &adapted, name);
        // The adapter moves the logits well beyond the tolerance, so the match means something.
        assert!(max_abs(&adapted, &rows(&want["base"])) > 0.1);
    }
    model.set_adapter(None).unwrap();
    assert_matches(
        &model,
        &rows(&want["base"]),
        "base model after removing the adapter",
    );

    // Merged into the weights, the adapter still gives PEFT's logits.
    let adapter = Adapter::load(&fixture().join("plain")).unwrap();
    model.set_adapter(Some(&adapter)).unwrap();
    model.merge_adapter().unwrap();
    assert_matches(&model, &rows(&want["plain"]), "plain, merged");
}

#[test]
fn adapter_written_by_sqlora_keeps_the_logits_peft_reproduced() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = tiny_model(dir.path());
    let out = fixture().join("sqlora-written");
    if std::env::var_os("SQLORA_REGENERATE_PEFT").is_some() {
        let mut weights = BTreeMap::new();
        let dev = Device::Cpu;
        for layer in 0..model.n_layers() {
            for t in Target::ALL {
                let (o, i) = model.projection_dims(layer, t).unwrap();
                let a = (Tensor::randn(0f32, 1.0, (6, i), &dev).unwrap() * 0.05).unwrap();
                let b = (Tensor::randn(0f32, 1.0, (o, 6), &dev).unwrap() * 0.05).unwrap();
                weights.insert((layer, t), LoraPair { a, b });
            }
        }
        let adapter = Adapter {
            config: AdapterConfig::new(6, 12.0, &Target::ALL),
            weights,
            sha256: String::new(),
            label: "sqlora-written".into(),
        };
        adapter.save(&out).unwrap();
        model.set_adapter(Some(&adapter)).unwrap();
        let (logits, _) = sqlora_logits(&model, &ids());
        let record = serde_json::json!({ "ids": ids(), "logits": logits });
        std::fs::write(out.join("expected.json"), record.to_string()).unwrap();
    }
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("expected.json")).unwrap()).unwrap();
    let adapter = Adapter::load(&out).unwrap();
    assert_eq!(
        adapter.config.target_modules.to_string().split(',').count(),
        7
    );
    model.set_adapter(Some(&adapter)).unwrap();
    assert_matches(&model, &rows(&recorded["logits"]), "sqlora-written adapter");
    // Saving it again gives the same tensors under the same PEFT names.
    let again = dir.path().join("again");
    adapter.save(&again).unwrap();
    let back = Adapter::load(&again).unwrap();
    assert_eq!(back.sha256, adapter.sha256);
}

#[test]
fn peft_adapters_with_options_sqlora_cannot_honour_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("m");
    std::fs::create_dir(&model_dir).unwrap();
    let mut model = tiny_model(&model_dir);
    let src = fixture().join("plain");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap())
            .unwrap();
    for (key, value, says) in [
        ("use_dora", Value::Bool(true), "DoRA"),
        ("fan_in_fan_out", Value::Bool(true), "fan_in_fan_out"),
        (
            "rank_pattern",
            serde_json::json!({"q_proj": 8}),
            "rank_pattern",
        ),
        ("bias", Value::String("all".into()), "bias"),
        ("peft_type", Value::String("IA3".into()), "peft_type"),
        ("target_modules", serde_json::json!(["c_attn"]), "c_attn"),
    ] {
        let case = dir.path().join(key);
        std::fs::create_dir(&case).unwrap();
        let mut c = config.clone();
        c[key] = value;
        std::fs::write(case.join("adapter_config.json"), c.to_string()).unwrap();
        std::fs::copy(
            src.join("adapter_model.safetensors"),
            case.join("adapter_model.safetensors"),
        )
        .unwrap();
        let err = Adapter::load(&case).unwrap_err().to_string();
        assert!(err.contains(says), "{key}: {err}");
        assert!(!err.contains('\n'), "{key}: {err}");
    }
    // PEFT's single-string form of target_modules is accepted.
    let case = dir.path().join("all-linear");
    std::fs::create_dir(&case).unwrap();
    let mut c = config.clone();
    c["target_modules"] = Value::String("all-linear".into());
    std::fs::write(case.join("adapter_config.json"), c.to_string()).unwrap();
    std::fs::copy(
        src.join("adapter_model.safetensors"),
        case.join("adapter_model.safetensors"),
    )
    .unwrap();
    let adapter = Adapter::load(&case).unwrap();
    model.set_adapter(Some(&adapter)).unwrap();
}
