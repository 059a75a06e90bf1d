//! Batched generation: several sequences of different lengths in one forward pass give each
//! sequence the logits it gets alone (tiny random model, exact arithmetic checks), and
//! `Engine::generate_batch` answers each question as `Engine::generate` does (real model).

mod common;

use candle_core::quantized::GgmlDType;
use candle_core::Tensor;
use sqlora::cancel::Cancel;
use sqlora::llm::{
    prompt, BatchCache, Engine, GenOptions, KvCache, LoadOptions, WeightFormat, WeightPlan,
};

fn f32_plan() -> WeightPlan {
    WeightPlan {
        prefill: WeightFormat::F32,
        decode: WeightFormat::F32,
        wide_rows: 4,
    }
}

#[test]
fn a_ragged_batch_gives_each_sequence_its_own_logits() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny::model(dir.path(), GgmlDType::F32, &f32_plan());
    let prefix: Vec<u32> = vec![3, 17, 42, 5, 99, 7];
    // Suffixes of different lengths (so the batch is padded), then decode steps in which the
    // second sequence finishes after its first token and leaves the batch.
    let suffixes: Vec<Vec<u32>> = vec![vec![11, 12, 13, 14, 15], vec![21], vec![31, 32, 33]];
    let decoded: [&[u32]; 3] = [&[50, 51, 52], &[60], &[70, 71, 72]];

    // Alone: prefix, suffix, then its decode tokens, one sequence at a time.
    let alone: Vec<Vec<Tensor>> = suffixes
        .iter()
        .zip(decoded)
        .map(|(suffix, tokens)| {
            let mut cache = KvCache::default();
            model.forward(&prefix, &mut cache).unwrap();
            let mut logits = vec![model.forward(suffix, &mut cache).unwrap()];
            for &t in tokens {
                logits.push(model.forward(&[t], &mut cache).unwrap());
            }
            logits
        })
        .collect();

    // Together: the prefix computed once and broadcast.
    let mut prefix_cache = KvCache::default();
    model.forward(&prefix, &mut prefix_cache).unwrap();
    let mut cache = BatchCache::broadcast(&prefix_cache, 3).unwrap();
    let first = model.forward_batch(&suffixes, &mut cache).unwrap();
    assert_eq!(first.dims(), &[3, alone[0][0].dim(0).unwrap()]);
    for (s, logits) in alone.iter().enumerate() {
        let d = common::max_abs_diff(&first.get(s).unwrap(), &logits[0]);
        assert!(d < 1e-4, "sequence {s}, suffix: logits differ by {d}");
    }
    assert_eq!(cache.seq_len(0), prefix.len() + 5);
    assert_eq!(cache.seq_len(1), prefix.len() + 1);
    let out = model
        .forward_batch(&[vec![50], vec![60], vec![70]], &mut cache)
        .unwrap();
    for (s, logits) in alone.iter().enumerate() {
        let d = common::max_abs_diff(&out.get(s).unwrap(), &logits[1]);
        assert!(d < 1e-4, "sequence {s}, step 1: logits differ by {d}");
    }
    // Sequence 1 finishes; 0 and 2 go on.
    cache.retain(&[0, 2]).unwrap();
    assert_eq!(cache.batch_size(), 2);
    for k in 1..3 {
        let feed = vec![vec![decoded[0][k]], vec![decoded[2][k]]];
        let out = model.forward_batch(&feed, &mut cache).unwrap();
        for (row, s) in [0usize, 2].into_iter().enumerate() {
            let d = common::max_abs_diff(&out.get(row).unwrap(), &alone[s][k + 1]);
            assert!(
                d < 1e-4,
                "sequence {s}, step {}: logits differ by {d}",
                k + 1
            );
        }
    }

    // Without a shared prefix, a batch starting from nothing is padded from its first column.
    let mut cache = BatchCache::new(2);
    let out = model
        .forward_batch(&[vec![1, 2, 3, 4], vec![9]], &mut cache)
        .unwrap();
    let a = model
        .forward(&[1, 2, 3, 4], &mut KvCache::default())
        .unwrap();
    let b = model.forward(&[9], &mut KvCache::default()).unwrap();
    assert!(common::max_abs_diff(&out.get(0).unwrap(), &a) < 1e-4);
    assert!(common::max_abs_diff(&out.get(1).unwrap(), &b) < 1e-4);

    // A batch the cache was not made for, or an empty input, is refused.
    let err = model
        .forward_batch(&[vec![1]], &mut BatchCache::new(2))
        .unwrap_err();
    assert!(err.to_string().contains("batch of 1"), "{err}");
    assert!(model
        .forward_batch(&[vec![1], vec![]], &mut BatchCache::new(2))
        .is_err());
}

#[test]
fn batched_answers_equal_one_at_a_time_answers() {
    let load = || {
        Engine::load(
            &common::model_path(),
            &LoadOptions {
                // One weight representation for both, so that only the batching differs.
                plan: f32_plan(),
                ..LoadOptions::default()
            },
        )
        .unwrap()
    };
    let mut e = load();
    let questions = [
        "How many customers are there?",
        "List the names of products that cost more than 50, most expensive first.",
        "Which country has the most customers?",
        "What is the total value of all orders?",
        "Show each category with its number of products.",
    ];
    let prompts = demo_prompts(&e, &questions);
    let opts = GenOptions::default();
    let cancel = Cancel::new();
    let batched = e.generate_batch(&prompts, &opts, &cancel).unwrap();
    assert_eq!(batched.len(), questions.len());
    let mut alone = load();
    for ((q, p), b) in questions.iter().zip(&prompts).zip(&batched) {
        let one = alone.generate(p, &opts, &cancel).unwrap();
        assert_eq!(b.text, one.text, "{q}");
        assert_eq!(b.new_tokens, one.new_tokens, "{q}");
        assert!(b.text.contains("SELECT"), "{q}: {}", b.text);
    }
    // The prefix is computed once for the whole batch.
    assert!(batched[0].cached_tokens == 0 && batched[0].prefill_tokens > 500);
    assert!(batched[1..].iter().all(
        |g| g.cached_tokens == batched[0].prefill_tokens - prompts_suffix_len(&e, &prompts[0])
    ));
    assert_eq!(
        e.tokens_generated(),
        batched.iter().map(|g| g.new_tokens).sum::<usize>()
    );
}

/// Prompts for `questions` over the demo database's whole schema.
fn demo_prompts(e: &Engine, questions: &[&str]) -> Vec<prompt::Prompt> {
    let (_d, db_path) = common::demo_db();
    let mut db = sqlora::db::open(&db_path.to_string_lossy()).unwrap();
    let context = sqlora::schema::render_context(&db.introspect().unwrap(), db.dialect());
    questions
        .iter()
        .map(|q| prompt::build_prompt(e.template(), q, &context, db.dialect(), &[]))
        .collect()
}

fn prompts_suffix_len(e: &Engine, p: &prompt::Prompt) -> usize {
    e.tokenizer().encode(&p.suffix).unwrap().len()
}

/// The per-step token mask of the one decoding loop holds on the single-sequence path and on
/// the batched path alike: a mask that allows only continuations of a fixed text makes every
/// answer that text, and a mask that forbids the greedy first token changes the first token.
#[test]
fn a_token_mask_steers_single_and_batched_decoding() {
    use sqlora::llm::{Constraint, TokenMask, TokenTest};
    use std::sync::Arc;

    /// Allows a token only while the answer stays a prefix of `0`.
    struct Follow(String);
    impl Constraint for Follow {
        fn next<'a>(&'a self, text: &str) -> Option<TokenTest<'a>> {
            let rest = self
                .0
                .strip_prefix(text)
                .expect("the answer is a prefix")
                .to_owned();
            Some(Box::new(move |b: &[u8]| {
                !b.is_empty() && rest.as_bytes().starts_with(b)
            }))
        }
    }
    /// Forbids one token's bytes right after the answer start.
    struct Not(String, Vec<u8>);
    impl Constraint for Not {
        fn next<'a>(&'a self, text: &str) -> Option<TokenTest<'a>> {
            (text == self.0).then(|| Box::new(move |b: &[u8]| b != self.1) as TokenTest)
        }
    }

    let mut e = Engine::load(&common::model_path(), &LoadOptions::default()).unwrap();
    let questions = [
        "How many customers are there?",
        "Which country has the most customers?",
    ];
    let prompts = demo_prompts(&e, &questions);
    let cancel = Cancel::new();
    let start = prompts[0].answer_start().to_string();
    let want = format!("{start}SELECT 42 AS answer;\n```");
    let opts = GenOptions {
        mask: Some(TokenMask(Arc::new(Follow(want.clone())))),
        stop_at_fence_close: false,
        ..GenOptions::default()
    };
    let one = e.generate(&prompts[0], &opts, &cancel).unwrap();
    assert_eq!(one.text, want);
    assert!(one.mask_secs > 0.0);
    for g in e.generate_batch(&prompts, &opts, &cancel).unwrap() {
        assert_eq!(g.text, want);
    }

    // Forbid the greedy first token: the first token becomes another one.
    let plain = GenOptions::default();
    let greedy = e.generate(&prompts[0], &plain, &cancel).unwrap();
    let first = e.tokenizer().encode(&greedy.text[start.len()..]).unwrap()[0];
    let opts = GenOptions {
        mask: Some(TokenMask(Arc::new(Not(
            start.clone(),
            e.tokenizer().token_bytes(first).to_vec(),
        )))),
        max_new_tokens: 1,
        ..GenOptions::default()
    };
    let other = e.generate(&prompts[0], &opts, &cancel).unwrap();
    assert_eq!(other.new_tokens, 1);
    assert_ne!(
        e.tokenizer().encode(&other.text[start.len()..]).unwrap()[0],
        first
    );
}
