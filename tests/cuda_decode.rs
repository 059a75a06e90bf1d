//! The fused CUDA decoder against candle's kernels, on the real model. CUDA builds only, and
//! only on a machine with an NVIDIA GPU (CI has none; `scripts/bench-gpu` runs this file there):
//! `cargo test --release --features cuda --test cuda_decode`.
#![cfg(feature = "cuda")]

mod common;

use sqlora::cancel::Cancel;
use sqlora::llm::device::{plan_for, select, DeviceChoice};
use sqlora::llm::{prompt, Engine, GenOptions, LoadOptions, WeightFormat, WeightPlan};

/// The model on the GPU; with `dense`, candle's kernels decode with the dense f32 weights the
/// fused decoder's f16 copy is made from (so the two differ only by that rounding), else with
/// the 4-bit kernels (which also round each activation row to 8 bits).
fn engine(dense: bool) -> Engine {
    let (device, _) = select(DeviceChoice::Cuda(0))
        .unwrap_or_else(|e| panic!("this test needs an NVIDIA GPU: {e}"));
    let plan = if dense {
        WeightPlan {
            prefill: WeightFormat::F32,
            decode: WeightFormat::F32,
            wide_rows: 4,
        }
    } else {
        plan_for(&device)
    };
    let opts = LoadOptions {
        plan,
        device,
        kv_dir: None,
    };
    Engine::load(&common::model_path(), &opts).unwrap()
}

#[test]
fn fused_decode_chooses_the_tokens_candles_kernels_choose() {
    let (_d, db_path) = common::demo_db();
    let mut db = sqlora::db::open(&db_path.to_string_lossy()).unwrap();
    let context = sqlora::schema::render_context(&db.introspect().unwrap(), db.dialect());
    let mut e = engine(true);
    assert!(e.decode_path().starts_with("fused"), "{}", e.decode_path());
    let cancel = Cancel::new();
    let opts = GenOptions::default();
    let questions = [
        "How many customers are there?",
        "List the names of products that cost more than 50, most expensive first.",
        "Which country has the most customers?",
        "Show each category with its number of products.",
    ];
    for q in questions {
        let p = prompt::build_prompt(e.template(), q, &context, db.dialect(), &[]);
        let ids = e.tokenizer().encode(&p.text()).unwrap();
        // Teacher-forced: both paths fed the same tokens, step by step.
        let (worst, same) = e
            .check_fast_decode(&ids, 40)
            .unwrap()
            .expect("fused decoder");
        assert!(same >= 39, "{q}: same token in {same} of 40 steps");
        assert!(worst < 0.2, "{q}: logits differ by up to {worst}");
        // Free-running: the same answer as candle's kernels give.
        let fused = e.generate(&p, &opts, &cancel).unwrap();
        e.set_fast_decode(false);
        let reference = e.generate(&p, &opts, &cancel).unwrap();
        e.set_fast_decode(true);
        assert_eq!(fused.text, reference.text, "{q}");
        assert!(fused.text.contains("SELECT"), "{q}: {}", fused.text);
    }
}

#[test]
fn fused_decode_runs_to_the_end_of_the_context() {
    let mut e = engine(false);
    let max = e.model().max_positions();
    // A prompt that leaves room for only a few tokens: decode stops at the context's end with
    // an answer, never an out-of-bounds write.
    let ids: Vec<u32> = (0..max as u32 - 5).map(|i| 100 + i % 5000).collect();
    let secs = e.decode_n(&ids, 4).unwrap();
    assert!(secs > 0.0);
    let err = e.decode_n(&ids, 6).unwrap_err().to_string();
    assert!(err.contains("context"), "{err}");
}
