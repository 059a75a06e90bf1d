//! Architecture facts as data: which GGUF architecture a file holds and the hyper-parameters
//! its metadata gives (layers, heads, sizes, RoPE base, context length).
//!
//! Reads metadata only; never touches tensors or runs anything.

use candle_core::quantized::gguf_file;

use super::LlmError;

/// Which GGUF architecture the file holds; they differ in biases and RoPE layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Qwen2,
    Llama,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Qwen2 => "qwen2",
            Arch::Llama => "llama",
        }
    }
}

/// Hyper-parameters read from GGUF metadata.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: Arch,
    pub name: String,
    pub vocab_size: usize,
    pub hidden: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub rms_eps: f64,
    pub rope_theta: f32,
    pub context_len: usize,
}

impl ModelConfig {
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Self, LlmError> {
        let arch_name = meta_str(ct, "general.architecture")?;
        let arch = match arch_name.as_str() {
            "qwen2" => Arch::Qwen2,
            "llama" => Arch::Llama,
            other => {
                return Err(LlmError::Unsupported(format!(
                    "GGUF architecture `{other}` (sqlora runs qwen2 and llama)"
                )))
            }
        };
        let p = arch.name();
        let get = |k: &str| meta_u32(ct, &format!("{p}.{k}"));
        let hidden = get("embedding_length")? as usize;
        let n_head = get("attention.head_count")? as usize;
        let n_kv_head = get("attention.head_count_kv").unwrap_or(n_head as u32) as usize;
        if n_head == 0
            || !hidden.is_multiple_of(n_head)
            || n_kv_head == 0
            || !n_head.is_multiple_of(n_kv_head)
        {
            return Err(LlmError::Corrupt(format!(
                "inconsistent head counts: hidden {hidden}, heads {n_head}, kv heads {n_kv_head}"
            )));
        }
        let vocab_size = match ct.metadata.get("tokenizer.ggml.tokens") {
            Some(v) => v.to_vec().map(|v| v.len()).unwrap_or(0),
            None => 0,
        };
        let rms_eps = ct
            .metadata
            .get(&format!("{p}.attention.layer_norm_rms_epsilon"))
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(1e-6) as f64;
        let rope_theta = ct
            .metadata
            .get(&format!("{p}.rope.freq_base"))
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(10_000.0);
        Ok(Self {
            arch,
            name: meta_str(ct, "general.name").unwrap_or_else(|_| arch_name.clone()),
            vocab_size,
            hidden,
            n_layer: get("block_count")? as usize,
            n_head,
            n_kv_head,
            head_dim: hidden / n_head,
            rms_eps,
            rope_theta,
            context_len: get("context_length").unwrap_or(4096) as usize,
        })
    }
}

pub(crate) fn meta_u32(ct: &gguf_file::Content, key: &str) -> Result<u32, LlmError> {
    ct.metadata
        .get(key)
        .ok_or_else(|| LlmError::Corrupt(format!("missing metadata `{key}`")))?
        .to_u32()
        .map_err(|e| LlmError::Corrupt(format!("metadata `{key}`: {e}")))
}

pub(crate) fn meta_str(ct: &gguf_file::Content, key: &str) -> Result<String, LlmError> {
    ct.metadata
        .get(key)
        .ok_or_else(|| LlmError::Corrupt(format!("missing metadata `{key}`")))?
        .to_string()
        .map(|s| s.to_string())
        .map_err(|e| LlmError::Corrupt(format!("metadata `{key}`: {e}")))
}
