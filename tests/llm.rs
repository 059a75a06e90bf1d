//! The model layer with the real default model: tokenizer ids built from GGUF metadata, and
//! the prompt-prefix KV cache (in memory and on disk) giving the same answer as a cold run.

mod common;

use sqlora::cancel::Cancel;
use sqlora::llm::{prompt, Engine, GenOptions, LoadOptions};

fn engine(kv_dir: Option<std::path::PathBuf>) -> Engine {
    Engine::load(
        &common::model_path(),
        &LoadOptions {
            kv_dir,
            ..LoadOptions::default()
        },
    )
    .unwrap()
}

/// Ids of the Qwen2.5 tokenizer built from the GGUF, pinned so a change in the conversion (or in
/// candle/tokenizers) shows up. candle's GGUF conversion was checked against Qwen's reference
/// tokenizer on 8,549 texts; the special ids are Qwen2's published ones (151643–151645).
const PINNED: &[(&str, &[u32])] = &[
    (
        "How many customers are from Germany?",
        &[4340, 1657, 6310, 525, 504, 9856, 30],
    ),
    (
        "SELECT name FROM \"Order Lines\" WHERE note = 'it''s' AND x <> 3;",
        &[
            4858, 829, 4295, 330, 4431, 38233, 1, 5288, 5185, 284, 364, 275, 4605, 82, 6, 3567,
            856, 14392, 220, 18, 26,
        ],
    ),
    (
        "每个国家有多少客户？",
        &[103991, 99599, 106759, 100017, 11319],
    ),
    (
        "Сколько заказов в 2024 году?",
        &[
            19311, 4793, 53470, 86905, 6715, 5805, 220, 17, 15, 17, 19, 129257, 30,
        ],
    ),
    (
        "Top sellers 🚀🔥 café naïve",
        &[5366, 36149, 11162, 248, 222, 144670, 51950, 94880, 586],
    ),
    (
        "  leading spaces\n\n\ttabs",
        &[220, 6388, 12621, 271, 3244, 3435],
    ),
];

#[test]
fn tokenizer_ids_are_pinned_and_round_trip() {
    let e = engine(None);
    let tok = e.tokenizer();
    for (text, ids) in PINNED {
        assert_eq!(tok.encode(text).unwrap(), *ids, "{text:?}");
        assert_eq!(tok.decode(ids).unwrap(), *text, "{text:?}");
    }
    // Special tokens are single ids, are dropped by decode, and end generation.
    let chat = tok.encode("<|im_start|>user\nhi<|im_end|>\n").unwrap();
    assert_eq!(chat, [151644, 872, 198, 6023, 151645, 198]);
    assert_eq!(tok.decode(&chat).unwrap(), "user\nhi\n");
    assert!(tok.is_stop(151645));
    assert_eq!(tok.token_id("<|endoftext|>"), Some(151643));
    assert!(tok.is_stop(tok.token_id("<|endoftext|>").unwrap()));
    assert!(!tok.is_stop(tok.encode("SELECT").unwrap()[0]));
}

#[test]
fn cached_prefix_gives_the_same_answer_as_a_cold_run() {
    let (_d, db_path) = common::demo_db();
    let mut db = sqlora::db::open(&db_path.to_string_lossy()).unwrap();
    let context = sqlora::schema::render_context(&db.introspect().unwrap(), db.dialect());
    let kv = tempfile::tempdir().unwrap();
    let cancel = Cancel::new();
    let opts = GenOptions::default();
    let mut e = engine(Some(kv.path().to_path_buf()));
    let p =
        |e: &Engine, q: &str| prompt::build_prompt(e.template(), q, &context, db.dialect(), &[]);
    let q1 = p(&e, "How many products are there?");
    let cold = e.generate(&q1, &opts, &cancel).unwrap();
    assert_eq!(cold.cached_tokens, 0);
    let files = std::fs::read_dir(kv.path()).unwrap().count();
    assert_eq!(files, 1, "the prefix KV state was not saved");
    // Same process: the second question reuses the prefix.
    let q2 = p(&e, "How many suppliers are there?");
    let warm = e.generate(&q2, &opts, &cancel).unwrap();
    assert!(warm.cached_tokens > 500, "{warm:?}");
    assert!(warm.prefill_tokens < 40, "{warm:?}");
    // A new process (a fresh engine) loads the prefix from disk and answers identically.
    let mut fresh = engine(Some(kv.path().to_path_buf()));
    let again = fresh.generate(&q1, &opts, &cancel).unwrap();
    assert_eq!(
        again.cached_tokens,
        cold.prefill_tokens - again.prefill_tokens
    );
    assert_eq!(again.text, cold.text);
    // And without any cache at all, the answer is the same too.
    let mut nocache = engine(None);
    assert_eq!(
        nocache.generate(&q2, &opts, &cancel).unwrap().text,
        warm.text
    );
}

/// The CPU's int8 cells: mapped from the weight cache they give exactly the logits of the
/// cells converted at load, and both stay close to the dense f32 weights' (same next token, the
/// logits nearly parallel; the difference is the activations' 8-bit rounding).
#[test]
fn cached_int8_weights_match_converted_ones_and_stay_close_to_f32() {
    use sqlora::llm::{KvCache, WeightFormat, WeightPlan};
    let dir = tempfile::tempdir().unwrap();
    let load = |plan: WeightPlan, weights: bool| {
        Engine::load(
            &common::model_path(),
            &LoadOptions {
                plan,
                weights_dir: weights.then(|| dir.path().to_path_buf()),
                ..LoadOptions::default()
            },
        )
        .unwrap()
    };
    let int8 = WeightPlan::cpu_default();
    assert_eq!(
        (int8.prefill, int8.decode),
        (WeightFormat::Int8, WeightFormat::Int8)
    );
    let converted = load(int8, true);
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "the converted weights were not cached");
    let mapped = load(int8, true);
    let dense = load(
        WeightPlan {
            prefill: WeightFormat::F32,
            decode: WeightFormat::F32,
            wide_rows: 4,
        },
        false,
    );
    let ids = converted
        .tokenizer()
        .encode("SELECT name, country FROM customers WHERE country = 'Germany' ORDER BY")
        .unwrap();
    let logits = |e: &Engine| -> Vec<Vec<f32>> {
        let mut cache = KvCache::default();
        // The prompt as one prefill (many rows), then two single-token steps (decode).
        let mut out = vec![e.model().forward(&ids, &mut cache).unwrap()];
        for &t in &[11u32, 3728] {
            out.push(e.model().forward(&[t], &mut cache).unwrap());
        }
        out.into_iter()
            .map(|l| l.to_vec1::<f32>().unwrap())
            .collect()
    };
    let (a, b, f) = (logits(&converted), logits(&mapped), logits(&dense));
    assert_eq!(a, b, "mapped cells give other logits than converted ones");
    for (step, (x, y)) in a.iter().zip(&f).enumerate() {
        let argmax = |v: &[f32]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap();
        assert_eq!(
            argmax(x),
            argmax(y),
            "step {step}: another next token than f32"
        );
        let dot: f64 = x.iter().zip(y).map(|(p, q)| (p * q) as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|p| (p * p) as f64).sum::<f64>().sqrt();
        let cos = dot / (norm(x) * norm(y));
        assert!(cos > 0.995, "step {step}: cosine {cos} to the f32 logits");
    }
}
