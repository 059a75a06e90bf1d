//! The project's own CUDA kernels against candle's ops: the fused decoder on the real model, and
//! the fused training attention and its gradients on random inputs. CUDA builds only, and only
//! on a machine with an NVIDIA GPU (CI has none; `scripts/bench-gpu` runs this file there):
//! `cargo test --release --features cuda --test cuda`.
#![cfg(feature = "cuda")]

mod common;

use sqlora::cancel::Cancel;
use sqlora::hub::device::{plan_for, select, DeviceChoice};
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
        weights_dir: None,
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

/// Largest |a − b| over the largest |b|.
fn rel_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    use candle_core::DType;
    let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let diff = (a - &b).unwrap().abs().unwrap().max(0).unwrap();
    let scale = b.abs().unwrap().max(0).unwrap();
    diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap().max(1e-12)
}

#[test]
fn fused_training_attention_and_its_gradients_match_candles_ops() {
    use candle_core::{DType, Device, Tensor, Var, D};
    let dev = Device::new_cuda(0).unwrap_or_else(|e| panic!("this test needs an NVIDIA GPU: {e}"));
    // Grouped-query heads as in Qwen2.5-0.5B, a length that is no multiple of any tile.
    let (b, nh, nkv, s, d) = (2, 14, 2, 77, 64);
    let rep = nh / nkv;
    let scale = 1.0 / (d as f64).sqrt();
    for (dtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 1e-2)] {
        let draw = |heads: usize| {
            Var::from_tensor(
                &Tensor::randn(0f32, 1.0, (b, heads, s, d), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap()
        };
        let (q, k, v) = (draw(nh), draw(nkv), draw(nkv));
        let w = Tensor::randn(0f32, 1.0, (b, nh, s, d), &dev).unwrap();

        let out = sqlora::llm::cuda::attention::attention(&q, &k, &v, scale as f32).unwrap();
        let grads = (&out * &w).unwrap().sum_all().unwrap().backward().unwrap();

        // Reference: candle's ops in f32 on the same values.
        let f32_var = |t: &Var| Var::from_tensor(&t.to_dtype(DType::F32).unwrap()).unwrap();
        let (qf, kf, vf) = (f32_var(&q), f32_var(&k), f32_var(&v));
        let expand = |t: &Tensor| {
            t.unsqueeze(2)
                .unwrap()
                .expand((b, nkv, rep, s, d))
                .unwrap()
                .reshape((b, nh, s, d))
                .unwrap()
        };
        let mask: Vec<f32> = (0..s)
            .flat_map(|i| (0..s).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (s, s), &dev).unwrap();
        let att = (qf.matmul(&expand(&kf).t().unwrap()).unwrap() * scale)
            .unwrap()
            .broadcast_add(&mask)
            .unwrap();
        let att = candle_nn::ops::softmax(&att, D::Minus1).unwrap();
        let reference = att.matmul(&expand(&vf)).unwrap();
        let ref_grads = (&reference * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();

        let o = rel_diff(&out, &reference);
        assert!(o < tol, "{dtype:?}: output differs by {o}");
        for (name, var, var_f) in [("q", &q, &qf), ("k", &k, &kf), ("v", &v, &vf)] {
            let got = grads
                .get(var)
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let want = ref_grads.get(var_f).unwrap();
            let e = rel_diff(got, want);
            assert!(e < tol, "{dtype:?}: gradient of {name} differs by {e}");
        }
    }
}

#[test]
fn fused_norm_rope_and_swiglu_and_their_gradients_match_candles_ops() {
    use candle_core::{DType, Device, Tensor, Var};
    use sqlora::llm::cuda::layers as cuda_layers;
    let dev = Device::new_cuda(0).unwrap_or_else(|e| panic!("this test needs an NVIDIA GPU: {e}"));
    let (s, d) = (33, 64);
    let inv: Vec<f32> = (0..d / 2)
        .map(|i| 1e6f32.powf(-((2 * i) as f32) / d as f32))
        .collect();
    let angles: Vec<f32> = (0..s)
        .flat_map(|t| inv.iter().map(move |f| t as f32 * f))
        .collect();
    let angles = Tensor::from_vec(angles, (s, d / 2), &dev).unwrap();
    let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
    let alpha = (Tensor::randn(0f32, 0.1, 896, &dev).unwrap() + 1.0).unwrap();
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 1e-2)] {
        let check = |shape: &[usize],
                     fused: &dyn Fn(&Tensor) -> Tensor,
                     reference: &dyn Fn(&Tensor) -> Tensor,
                     what: &str| {
            let x = Var::from_tensor(
                &Tensor::randn(0f32, 1.0, shape, &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let w = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let out = fused(&x).to_dtype(DType::F32).unwrap();
            let g = (&out * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let xf = Var::from_tensor(&x.to_dtype(DType::F32).unwrap()).unwrap();
            let want = reference(&xf);
            let gf = (&want * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let e = rel_diff(&out, &want);
            assert!(e < tol, "{what} {dtype:?}: output differs by {e}");
            let e = rel_diff(g.get(&x).unwrap(), gf.get(&xf).unwrap());
            assert!(e < tol, "{what} {dtype:?}: gradient differs by {e}");
        };
        check(
            &[3, 5, 896],
            &|x| cuda_layers::rms_norm(x, &alpha, 1e-6).unwrap(),
            &|x| candle_nn::ops::rms_norm_slow(x, &alpha, 1e-6).unwrap(),
            "rms-norm",
        );
        let up = Tensor::randn(0f32, 1.0, (3, 5, 96), &dev).unwrap();
        check(
            &[3, 5, 96],
            &|x| cuda_layers::swiglu(x, &up.to_dtype(dtype).unwrap()).unwrap(),
            &|x| {
                (x * candle_nn::ops::sigmoid(x).unwrap())
                    .unwrap()
                    .mul(&up.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap())
                    .unwrap()
            },
            "swiglu (gate)",
        );
        check(
            &[2, 14, s, d],
            &|x| cuda_layers::rope(x, &cos, &sin).unwrap(),
            &|x| candle_nn::rotary_emb::rope_slow(x, &cos, &sin).unwrap(),
            "rope",
        );
    }
}

/// ‖a − b‖ / ‖b‖.
fn rel_l2(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    use candle_core::DType;
    let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let norm = |t: &candle_core::Tensor| {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt()
    };
    norm(&(a - &b).unwrap()) / norm(&b).max(1e-12)
}

#[test]
fn hand_written_training_layer_matches_candles_autograd() {
    use candle_core::{DType, Tensor};
    use rand::{Rng, SeedableRng};
    use sqlora::llm::lora::adapter::{AdapterConfig, Target};
    use sqlora::llm::lora::{dropout::Dropout, params::LoraParams};
    use sqlora::train::{batch_loss, Example, Pass};
    let e = engine(false);
    let model = e.model();
    // Two sequences of different lengths (padding, a length no multiple of any tile), the loss
    // on their second halves.
    let texts = [
        "How many singers do we have? SELECT count(*) FROM singer",
        "Show the name and the release year of the song by the youngest singer. \
         SELECT song_name, song_release_year FROM singer ORDER BY age LIMIT 1",
    ];
    let examples: Vec<Example> = texts
        .iter()
        .map(|t| {
            let ids = e.tokenizer().encode(t).unwrap();
            let answer_start = ids.len() / 2;
            Example { ids, answer_start }
        })
        .collect();
    let batch: Vec<&Example> = examples.iter().collect();
    // LoRA on every projection with B drawn non-zero, so that gradients reach both matrices.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let cfg = AdapterConfig::new(8, 16.0, &Target::ALL);
    let lora = LoraParams::init(model, cfg, &Target::ALL, &mut rng).unwrap();
    for (_, b) in lora.pairs.values() {
        let (o, r) = b.as_tensor().dims2().unwrap();
        let w: Vec<f32> = (0..o * r).map(|_| rng.random_range(-0.05..0.05)).collect();
        b.set(&Tensor::from_vec(w, (o, r), model.device()).unwrap())
            .unwrap();
    }
    // Dropout on: both paths draw the same hashed masks.
    let run = |hand: bool, dtype: DType| {
        let pass = Pass {
            chunk: 64,
            grads: true,
            recompute: true,
            dtype,
            hand,
        };
        let r = batch_loss(model, &lora, &batch, &mut Dropout::new(0.1, 5), pass).unwrap();
        let grads = r.grads.unwrap();
        let flat: Vec<Tensor> = lora
            .vars()
            .iter()
            .map(|v| {
                grads
                    .get(v.as_tensor())
                    .expect("a gradient for every LoRA matrix")
                    .to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
            })
            .collect();
        (r.loss, Tensor::cat(&flat, 0).unwrap())
    };
    let (loss_ref, g_ref) = run(false, DType::F32);
    let (loss_hand, g_hand) = run(true, DType::BF16);
    // Bit for bit the same when run again (no atomics, fixed masks): a seed fixes a run.
    let (loss_again, g_again) = run(true, DType::BF16);
    assert_eq!(loss_hand, loss_again);
    assert_eq!(
        g_hand.to_vec1::<f32>().unwrap(),
        g_again.to_vec1::<f32>().unwrap(),
        "the hand-written layer's gradients differ between two identical runs"
    );
    let (loss_bf16, g_bf16) = run(false, DType::BF16);
    let (e_hand, e_bf16) = (rel_diff(&g_hand, &g_ref), rel_diff(&g_bf16, &g_ref));
    let (l2_hand, l2_bf16) = (rel_l2(&g_hand, &g_ref), rel_l2(&g_bf16, &g_ref));
    eprintln!(
        "loss: f32 autograd {loss_ref:.5}, hand-written bf16 {loss_hand:.5}, autograd bf16 \
         {loss_bf16:.5}; gradients vs f32 autograd (largest difference / largest value; \
         L2): hand-written {e_hand:.2e} / {l2_hand:.2e}, autograd bf16 {e_bf16:.2e} / \
         {l2_bf16:.2e}"
    );
    assert!(
        (loss_hand - loss_ref).abs() < 0.02 * loss_ref.abs().max(1.0),
        "{loss_hand} vs {loss_ref}"
    );
    // As close to the f32 gradients as candle's own bf16 autograd is (both round to bf16).
    assert!(e_hand < 2.0 * e_bf16 + 5e-3, "{e_hand} vs {e_bf16}");
    assert!(l2_hand < 2.0 * l2_bf16 + 5e-3, "{l2_hand} vs {l2_bf16}");
    // A gross error (a missing term, a wrong mask) is off by the gradient's own size.
    assert!(l2_hand < 0.15, "{l2_hand}");
    // Another dropout seed changes the gradients: the masks are really applied.
    let pass = Pass {
        chunk: 64,
        grads: true,
        recompute: true,
        dtype: DType::BF16,
        hand: true,
    };
    let other = batch_loss(model, &lora, &batch, &mut Dropout::new(0.1, 6), pass).unwrap();
    assert_ne!(other.loss, loss_hand);
}

#[test]
fn tensor_core_attention_matches_the_f32_kernel() {
    use candle_core::{DType, Device, Tensor};
    use sqlora::llm::cuda::train_ops::{attention_backward, attention_forward};
    let dev = Device::new_cuda(0).unwrap_or_else(|e| panic!("this test needs an NVIDIA GPU: {e}"));
    // Lengths below, at and across the 64-row tiles.
    for s in [1, 17, 64, 77, 200] {
        let draw = |heads: usize| {
            Tensor::randn(0f32, 1.0, (2, heads, s, 64), &dev)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap()
        };
        let (q, k, v) = (draw(14), draw(2), draw(2));
        let tc = attention_forward(&q, &k, &v, 0.125, true).unwrap();
        let f32k = attention_forward(&q, &k, &v, 0.125, false).unwrap();
        let out = rel_diff(
            &tc.narrow(3, 0, 64).unwrap(),
            &f32k.narrow(3, 0, 64).unwrap(),
        );
        let lse = rel_diff(
            &tc.narrow(3, 64, 1).unwrap(),
            &f32k.narrow(3, 64, 1).unwrap(),
        );
        // The tensor-core kernel rounds the probabilities to bf16 before P·V.
        assert!(out < 1e-2, "s = {s}: outputs differ by {out}");
        assert!(lse < 1e-3, "s = {s}: log-sum-exps differ by {lse}");
        // The backward, from the same forward output and a random output gradient.
        let dout = Tensor::randn(0f32, 1.0, (2, 14, s, 65), &dev).unwrap();
        let tc = attention_backward(&q, &k, &v, &f32k, &dout, 0.125, true).unwrap();
        let reference = attention_backward(&q, &k, &v, &f32k, &dout, 0.125, false).unwrap();
        let again = attention_backward(&q, &k, &v, &f32k, &dout, 0.125, true).unwrap();
        for (a, b) in [(&tc.0, &again.0), (&tc.1, &again.1), (&tc.2, &again.2)] {
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(
                flat(a),
                flat(b),
                "s = {s}: two identical backward runs differ"
            );
        }
        for (name, a, b) in [
            ("dq", &tc.0, &reference.0),
            ("dk", &tc.1, &reference.1),
            ("dv", &tc.2, &reference.2),
        ] {
            if s == 1 && name != "dv" {
                // One key: the softmax is 1 whatever q·k is, so dq and dk are exactly zero
                // (up to rounding), and a relative difference means nothing.
                let largest = a.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                let largest = largest.to_scalar::<f32>().unwrap();
                assert!(largest < 1e-2, "s = 1: {name} is {largest}, not zero");
                continue;
            }
            let e = rel_diff(a, b);
            // The tensor-core kernel rounds P, dS and the output gradient to bf16.
            assert!(e < 2e-2, "s = {s}: {name} differs by {e}");
        }
    }
}
