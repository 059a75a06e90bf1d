//! The tokenizer, built from the GGUF's `tokenizer.ggml.*` metadata (no tokenizer.json is
//! needed), plus the set of token ids that end an answer.

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use tokenizers::Tokenizer;

use super::LlmError;

/// Token names that end a chat turn in the model families sqlora runs.
const STOP_TOKENS: &[&str] = &[
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
];

#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    stop_ids: Vec<u32>,
}

impl TextTokenizer {
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Self, LlmError> {
        let inner = Tokenizer::from_gguf(ct).map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        let mut stop_ids: Vec<u32> = STOP_TOKENS
            .iter()
            .filter_map(|t| inner.token_to_id(t))
            .collect();
        if let Some(eos) = ct
            .metadata
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.to_u32().ok())
        {
            stop_ids.push(eos);
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Ok(Self { inner, stop_ids })
    }

    /// Token ids of `text`; special-token text such as `<|im_start|>` maps to its single id.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, with special tokens dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, LlmError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))
    }

    pub fn is_stop(&self, id: u32) -> bool {
        self.stop_ids.binary_search(&id).is_ok()
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
