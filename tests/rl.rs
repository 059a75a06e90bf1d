//! Reinforcement learning on execution results (`train --rl`): the weighted objective is the
//! supervised one when every weight is 1, one step raises the answers better than their group
//! and lowers the worse ones, the KL term holds still an adapter that sits at its reference
//! with nothing to learn (tiny random Qwen2); and sampled answers from the real model are run
//! and judged against the gold result, the same with the same seed.

mod common;

use candle_core::quantized::GgmlDType;
use candle_core::DType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlora::cancel::Cancel;
use sqlora::llm::lora::adapter::{AdapterConfig, Target};
use sqlora::llm::lora::{dropout::Dropout, params::LoraParams};
use sqlora::llm::{Model, WeightFormat, WeightPlan};
use sqlora::train::rl::TokenWeights;
use sqlora::train::{self, Compute, Example, Objective, Options, Schedule};

fn native() -> WeightPlan {
    WeightPlan {
        prefill: WeightFormat::Native,
        decode: WeightFormat::Native,
        wide_rows: 1,
    }
}

fn pass(grads: bool) -> train::Pass {
    train::Pass {
        chunk: 5,
        grads,
        recompute: false,
        dtype: DType::F32,
        hand: true,
    }
}

fn options() -> Options {
    Options {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: Target::ALL.to_vec(),
        lr: 5e-3,
        weight_decay: 0.0,
        steps: 100,
        batch: 2,
        grad_accum: 1,
        warmup: 0,
        schedule: Schedule::Constant,
        clip: 0.0,
        seed: 7,
        loss_chunk: 5,
        recompute: false,
        compute: Compute::F32,
    }
}

/// LoRA matrices with `B` drawn too (PEFT starts it at zero), so gradients reach both.
fn lora(model: &Model, seed: u64) -> LoraParams {
    let mut rng = StdRng::seed_from_u64(seed);
    let lora = LoraParams::init(
        model,
        AdapterConfig::new(4, 8.0, &Target::ALL),
        &Target::ALL,
        &mut rng,
    )
    .unwrap();
    for (_, b) in lora.pairs.values() {
        let (o, r) = b.as_tensor().dims2().unwrap();
        let w: Vec<f32> = (0..o * r).map(|_| rng.random_range(-0.1..0.1)).collect();
        b.set(&candle_core::Tensor::from_vec(w, (o, r), b.as_tensor().device()).unwrap())
            .unwrap();
    }
    lora
}

/// One prompt, and two answers to it.
fn answers() -> Vec<Example> {
    let mut rng = StdRng::seed_from_u64(3);
    let prompt: Vec<u32> = (0..8).map(|_| rng.random_range(0..128u32)).collect();
    (0..3)
        .map(|_| {
            let mut ids = prompt.clone();
            ids.extend((0..5).map(|_| rng.random_range(0..128u32)));
            Example {
                ids,
                answer_start: prompt.len(),
            }
        })
        .collect()
}

/// Mean log-probability of each example's answer tokens under `lora`.
fn answer_logp(model: &Model, lora: &LoraParams, data: &[Example]) -> Vec<f64> {
    data.iter()
        .map(|e| {
            let r = train::batch_loss_of(
                model,
                lora,
                &[e],
                &mut Dropout::off(),
                pass(false),
                Objective::LogProbs,
            )
            .unwrap();
            r.logp.iter().map(|&p| p as f64).sum::<f64>() / r.logp.len() as f64
        })
        .collect()
}

fn flat(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn unit_weights_over_the_batchs_tokens_give_the_supervised_gradient() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny::model(dir.path(), GgmlDType::Q8_0, &native());
    let lora = lora(&model, 1);
    let data = answers();
    let batch: Vec<&Example> = data.iter().collect();
    let mean = train::batch_loss(&model, &lora, &batch, &mut Dropout::off(), pass(true)).unwrap();
    let ones = vec![1.0f32; batch.len()];
    let w = TokenWeights {
        advantage: &ones,
        reference: None,
        beta: 0.0,
        tokens: mean.targets,
    };
    let weighted = train::batch_loss_of(
        &model,
        &lora,
        &batch,
        &mut Dropout::off(),
        pass(true),
        Objective::Weighted(&w),
    )
    .unwrap();
    assert_eq!(weighted.loss, mean.loss);
    assert_eq!(weighted.logp.len(), mean.targets);
    let nll = -weighted.logp.iter().map(|&p| p as f64).sum::<f64>() / mean.targets as f64;
    assert!((nll - mean.loss).abs() < 1e-4, "{nll} vs {}", mean.loss);
    let (a, b) = (mean.grads.unwrap(), weighted.grads.unwrap());
    let mut worst = 0f32;
    for v in lora.vars() {
        for (x, y) in flat(a.get(v.as_tensor()).unwrap())
            .iter()
            .zip(&flat(b.get(v.as_tensor()).unwrap()))
        {
            worst = worst.max((x - y).abs() / x.abs().max(1e-3));
        }
    }
    assert!(worst < 1e-5, "{worst}");
}

#[test]
fn a_step_raises_the_better_answer_and_lowers_the_worse() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny::model(dir.path(), GgmlDType::Q8_0, &native());
    let start = lora(&model, 2);
    let data = answers();
    let before = answer_logp(&model, &start, &data);
    let mut t = train::Trainer::from_start(
        &model,
        &options(),
        Some(&start.to_adapter("start").unwrap()),
    )
    .unwrap();
    // Answer 0 was better than its group, answer 1 worse, answer 2 average.
    let adv = [1.0f32, -1.0, 0.0];
    for _ in 0..3 {
        let r = t.reinforce(&data, &adv, None).unwrap();
        assert!(r.grad_norm > 0.0 && r.kl == 0.0);
        assert_eq!(r.target_tokens, 3 * 5);
    }
    let after = answer_logp(&model, &t.lora, &data);
    eprintln!("answer log-probabilities before {before:?}, after {after:?}");
    assert!(after[0] > before[0] + 1e-3, "{before:?} -> {after:?}");
    assert!(after[1] < before[1] - 1e-3, "{before:?} -> {after:?}");
    assert_eq!(t.step, 3);
}

#[test]
fn at_its_reference_with_nothing_to_learn_the_adapter_stays() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny::model(dir.path(), GgmlDType::Q8_0, &native());
    let start = lora(&model, 4);
    let adapter = start.to_adapter("start").unwrap();
    let reference = LoraParams::from_adapter(&adapter, model.device()).unwrap();
    let mut t = train::Trainer::from_start(&model, &options(), Some(&adapter)).unwrap();
    let data = answers();
    let r = t
        .reinforce(&data, &[0.0; 3], Some((&reference, 0.5)))
        .unwrap();
    assert!(r.kl.abs() < 1e-6, "{}", r.kl);
    assert!(r.grad_norm < 1e-6, "{}", r.grad_norm);
    // Away from the reference, the KL term pulls back: a positive estimate and a gradient.
    let moved = t.reinforce(&data, &[1.0, -1.0, 0.0], None).unwrap();
    assert!(moved.grad_norm > 0.0);
    let back = t
        .reinforce(&data, &[0.0; 3], Some((&reference, 0.5)))
        .unwrap();
    assert!(back.kl > 0.0 && back.grad_norm > 0.0, "{back:?}");
}

#[test]
fn sampled_answers_are_run_and_judged_and_repeat_with_the_seed() {
    let data = common::shared_data();
    let items: Vec<sqlora::eval::Item> = sqlora::eval::load_spider_train(&data)
        .unwrap()
        .into_iter()
        .filter(|i| i.db.ends_with("/department_management.sqlite"))
        .take(2)
        .collect();
    assert_eq!(
        items.len(),
        2,
        "Spider train has department_management questions"
    );
    let engine =
        sqlora::llm::Engine::load(&common::model_path(), &sqlora::llm::LoadOptions::default())
            .unwrap();
    let mut ev = sqlora::eval::Evaluator::new(Box::new(engine), Default::default(), 2);
    ev.levers.temperature = 1.0;
    ev.levers.seed = 5;
    let cancel = Cancel::new();
    let first = ev.sample_batch(&items, 3, &cancel).unwrap();
    let again = ev.sample_batch(&items, 3, &cancel).unwrap();
    assert_eq!(first.len(), 2);
    use sqlora::eval::sample::Judged;
    for (q, item) in first.iter().zip(&items) {
        assert_eq!(q.answers.len(), 3);
        assert!(
            q.prompt.contains(&item.question),
            "the prompt asks the question"
        );
        for a in &q.answers {
            eprintln!("{}: {:?} {:?}", item.question, a.judged, a.written);
            if let Judged::Wrong { overlap } = a.judged {
                assert!((0.0..=1.0).contains(&overlap));
            }
        }
    }
    let sqls = |r: &[sqlora::eval::sample::JudgedQuestion]| {
        r.iter()
            .flat_map(|q| q.answers.iter().map(|a| (a.written.clone(), a.judged)))
            .collect::<Vec<_>>()
    };
    assert_eq!(sqls(&first), sqls(&again), "same seed, same answers");
    // Easy questions ("How many heads of the departments are older than 56?"): at least one
    // sample is right.
    assert!(
        first
            .iter()
            .flat_map(|q| &q.answers)
            .any(|a| a.judged == Judged::Correct),
        "no sampled answer was right"
    );
    ev.levers.seed = 6;
    let other = ev.sample_batch(&items, 3, &cancel).unwrap();
    assert_ne!(sqls(&first), sqls(&other), "another seed, other samples");
    let rewards: Vec<f32> = first
        .iter()
        .flat_map(|q| &q.answers)
        .map(|a| a.judged.reward())
        .collect();
    assert!(rewards.iter().all(|r| (0.0..=1.0).contains(r)));
}
