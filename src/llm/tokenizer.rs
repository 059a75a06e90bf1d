//! The tokenizer, built from the GGUF's `tokenizer.ggml.*` metadata (no tokenizer.json is
//! needed), plus the set of token ids that end an answer and each token's bytes (what a
//! token mask tests).

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use std::sync::{Arc, OnceLock};

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
    /// Shared by clones (a clone is what fills the byte table on another thread at load).
    inner: Arc<Tokenizer>,
    stop_ids: Vec<u32>,
    /// Each token's bytes, built on first need (shared by clones).
    bytes: Arc<OnceLock<Vec<Box<[u8]>>>>,
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
        Ok(Self {
            inner: Arc::new(inner),
            stop_ids,
            bytes: Arc::default(),
        })
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

    /// The bytes token `id` adds to the text (special tokens: their name; an id outside the
    /// vocabulary: none). A token may hold part of a multi-byte character.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        let all = self.bytes.get_or_init(|| {
            let byte_of = byte_level_decoder();
            (0..self.inner.get_vocab_size(true) as u32)
                .map(|id| {
                    let Some(piece) = self.inner.id_to_token(id) else {
                        return Box::default();
                    };
                    // Byte-level BPE (GPT-2, Qwen, Llama 3) spells each byte as one character;
                    // other vocabularies fall back to the decoder's text.
                    let bytes: Option<Vec<u8>> =
                        piece.chars().map(|c| byte_of.get(&c).copied()).collect();
                    bytes
                        .unwrap_or_else(|| self.decode(&[id]).unwrap_or_default().into_bytes())
                        .into_boxed_slice()
                })
                .collect()
        });
        all.get(id as usize).map_or(&[], |b| b)
    }
}

/// GPT-2's byte-level alphabet read backwards: the character that stands for each byte.
fn byte_level_decoder() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut map = std::collections::HashMap::with_capacity(256);
    let mut next = 256u32;
    for b in 0..=255u8 {
        let c = if printable(b) {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        map.insert(char::from_u32(c).expect("a valid code point"), b);
    }
    map
}
