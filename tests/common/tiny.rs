//! A tiny random Qwen2 model as a GGUF, for tests that need a real forward pass in
//! milliseconds.

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device};
use serde_json::Value;
use sqlora::llm::{Model, WeightPlan};

/// Writes the tiny random Qwen2 of `tests/data/peft/base` (a Hugging Face checkpoint made by
/// `scripts/peft-interop.py`) as a GGUF with tensors in `dtype` and GGUF names, and loads it
/// the way sqlora loads any model, with `plan`.
pub fn model(dir: &Path, dtype: GgmlDType, plan: &WeightPlan) -> Model {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/peft/base");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("config.json")).unwrap()).unwrap();
    let hf = candle_core::safetensors::load(base.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (name, t) in &hf {
        let gguf = if let Some(rest) = name.strip_prefix("model.layers.") {
            let (layer, rest) = rest.split_once('.').unwrap();
            let (module, kind) = rest.rsplit_once('.').unwrap();
            let g = match module {
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output",
                "mlp.gate_proj" => "ffn_gate",
                "mlp.up_proj" => "ffn_up",
                "mlp.down_proj" => "ffn_down",
                "input_layernorm" => "attn_norm",
                "post_attention_layernorm" => "ffn_norm",
                other => panic!("unexpected module {other}"),
            };
            format!("blk.{layer}.{g}.{kind}")
        } else {
            match name.as_str() {
                "model.embed_tokens.weight" => "token_embd.weight".into(),
                "model.norm.weight" => "output_norm.weight".into(),
                "lm_head.weight" => "output.weight".into(),
                other => panic!("unexpected tensor {other}"),
            }
        };
        let t = t.to_dtype(DType::F32).unwrap();
        // Norms and biases stay f32, as in real GGUF files.
        let ty = if t.rank() == 2 { dtype } else { GgmlDType::F32 };
        tensors.push((gguf, QTensor::quantize(&t, ty).unwrap()));
    }
    let u = |k: &str| gguf_file::Value::U32(config[k].as_u64().unwrap() as u32);
    let metadata = [
        (
            "general.architecture",
            gguf_file::Value::String("qwen2".into()),
        ),
        ("qwen2.embedding_length", u("hidden_size")),
        ("qwen2.feed_forward_length", u("intermediate_size")),
        ("qwen2.block_count", u("num_hidden_layers")),
        ("qwen2.attention.head_count", u("num_attention_heads")),
        ("qwen2.attention.head_count_kv", u("num_key_value_heads")),
        ("qwen2.context_length", u("max_position_embeddings")),
        (
            "qwen2.rope.freq_base",
            gguf_file::Value::F32(config["rope_parameters"]["rope_theta"].as_f64().unwrap() as f32),
        ),
        (
            "qwen2.attention.layer_norm_rms_epsilon",
            gguf_file::Value::F32(config["rms_norm_eps"].as_f64().unwrap() as f32),
        ),
    ];
    let path = dir.join(format!("tiny-{dtype:?}.gguf"));
    let mut f = std::fs::File::create(&path).unwrap();
    let meta: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tens: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &meta, &tens).unwrap();
    drop(f);
    let mut r = std::fs::File::open(&path).unwrap();
    let ct = gguf_file::Content::read(&mut r).unwrap();
    Model::from_gguf(&ct, &mut r, plan, &Device::Cpu).unwrap()
}
