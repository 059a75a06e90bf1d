//! The model: the weights of a GGUF file (embedding, one [`Layer`] of projections and norms per
//! block, output head) and the forward that runs token ids through them. A single sequence is
//! run as a batch of one: [`Model::forward`] and [`Model::forward_batch`] only prepare their
//! inputs (positions, mask, RoPE rows) and share one body, [`Model::run`], whose layers are
//! [`block::layer`](super::block::layer) — the same layer body training runs.
//!
//! Never tokenizes, never decodes a token, never prints.

use std::sync::Arc;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use super::block::{self, InferOps, Layer};
use super::cache::{BatchCache, KvCache};
use super::config::{Arch, ModelConfig};
use super::cpu::store::Mapped;
use super::cpu::Int8Matrix;
use super::layers::{batch_mask, causal_mask, rope_tables};
use super::linear::{Form, Projection, WeightFormat, WeightPlan};
use super::lora::adapter::{Adapter, Target};
use super::LlmError;

/// A loaded model: weights in the chosen representation, ready for [`Model::forward`].
#[derive(Debug)]
pub struct Model {
    pub config: ModelConfig,
    pub(super) embed: Embedding,
    pub(super) layers: Vec<Layer>,
    pub(super) norm: Tensor,
    pub(super) lm_head: Projection,
    pub(super) cos: Tensor,
    pub(super) sin: Tensor,
    device: Device,
}

/// The token embedding table: f32 (GPU, training), or the CPU's int8 cells with rows
/// dequantized on lookup (a mapped table then costs memory only for the rows read).
#[derive(Debug, Clone)]
pub(super) enum Embedding {
    Dense(Tensor),
    Int8(Arc<Int8Matrix>),
}

impl Embedding {
    /// Rows `ids` (`[n]` u32), `[n, hidden]` f32.
    pub(super) fn lookup(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Embedding::Dense(t) => t.index_select(ids, 0),
            Embedding::Int8(m) => m.gather(&ids.flatten_all()?.to_vec1::<u32>()?),
        }
    }

    /// The whole table in f32 (for kernels that keep their own copy).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(super) fn dense(&self, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Embedding::Dense(t) => t.to_dtype(DType::F32),
            Embedding::Int8(m) => m.dequantize(device),
        }
    }

    fn dims(&self) -> candle_core::Result<(usize, usize)> {
        match self {
            Embedding::Dense(t) => t.dims2(),
            Embedding::Int8(m) => Ok((m.rows(), m.cols())),
        }
    }
}

/// Where the int8 cells of a CPU model come from: converted from the GGUF now, or mapped from
/// the cache file an earlier start wrote.
pub(super) struct Int8Source<'a> {
    pub mapped: Option<&'a Mapped>,
}

impl Model {
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        plan: &WeightPlan,
        device: &Device,
    ) -> Result<Self, LlmError> {
        Self::load(ct, reader, plan, device, &Int8Source { mapped: None })
    }

    pub(super) fn load<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        plan: &WeightPlan,
        device: &Device,
        source: &Int8Source,
    ) -> Result<Self, LlmError> {
        let config = ModelConfig::from_gguf(ct)?;
        let mut tensor = |name: &str| -> Result<QTensor, LlmError> {
            ct.tensor(reader, name, device)
                .map_err(|e| LlmError::Corrupt(format!("tensor `{name}`: {e}")))
        };
        // On CPU with int8 for both phases, a projection is its int8 cells alone: mapped when
        // the cache has them, converted otherwise.
        let int8 = device.is_cpu()
            && plan.prefill == WeightFormat::Int8
            && plan.decode == WeightFormat::Int8;
        // A mapped matrix is used only when the GGUF has that tensor in that shape (a cache
        // file of another model under the same key would otherwise be read as this one).
        let mapped = |name: &str| -> Option<Int8Matrix> {
            let m = source.mapped.filter(|_| int8)?.get(name)?;
            let info = ct.tensor_infos.get(name)?;
            (info.shape.dims() == [m.rows(), m.cols()]).then_some(m)
        };
        let embed = match mapped("token_embd.weight") {
            Some(m) => Embedding::Int8(Arc::new(m)),
            None => {
                let q = tensor("token_embd.weight")?;
                let (rows, cols) = q.shape().dims2()?;
                let dense = matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
                if int8 && !dense && Int8Matrix::fits(rows, cols) {
                    Embedding::Int8(Arc::new(Int8Matrix::from_qtensor(&q)?))
                } else {
                    Embedding::Dense(q.dequantize(device)?)
                }
            }
        };
        let (vocab, hidden) = embed.dims()?;
        if hidden != config.hidden {
            return Err(LlmError::Corrupt(format!(
                "token_embd is {vocab}x{hidden}, metadata says hidden size {}",
                config.hidden
            )));
        }
        let mut config = config;
        if config.vocab_size == 0 {
            config.vocab_size = vocab;
        }
        let norm = tensor("output_norm.weight")?.dequantize(device)?;
        // Only the last position's logits are ever computed: the output head is always "narrow".
        let head_plan = WeightPlan {
            prefill: plan.decode,
            ..*plan
        };
        let lm_head = if let Some(m) = mapped("output.weight") {
            Projection::from_form(Form::Int8(Arc::new(m)), None, &head_plan)
        } else {
            match tensor("output.weight") {
                Ok(q) => Projection::new(q, None, &head_plan, device)?,
                // Tied embeddings: the head is the embedding table.
                Err(_) => match &embed {
                    Embedding::Int8(m) => {
                        Projection::from_form(Form::Int8(m.clone()), None, &head_plan)
                    }
                    Embedding::Dense(_) => {
                        Projection::new(tensor("token_embd.weight")?, None, &head_plan, device)?
                    }
                },
            }
        };
        let mut layers = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let mut proj = |name: &str, with_bias: bool| -> Result<Projection, LlmError> {
                let bias = if with_bias {
                    Some(tensor(&format!("blk.{i}.{name}.bias"))?.dequantize(device)?)
                } else {
                    None
                };
                let weight = format!("blk.{i}.{name}.weight");
                if let Some(m) = mapped(&weight) {
                    return Ok(Projection::from_form(Form::Int8(Arc::new(m)), bias, plan));
                }
                Ok(Projection::new(tensor(&weight)?, bias, plan, device)?)
            };
            let qkv_bias = config.arch == Arch::Qwen2;
            let layer = Layer {
                q: proj("attn_q", qkv_bias)?,
                k: proj("attn_k", qkv_bias)?,
                v: proj("attn_v", qkv_bias)?,
                o: proj("attn_output", false)?,
                gate: proj("ffn_gate", false)?,
                up: proj("ffn_up", false)?,
                down: proj("ffn_down", false)?,
                attn_norm: tensor(&format!("blk.{i}.attn_norm.weight"))?.dequantize(device)?,
                ffn_norm: tensor(&format!("blk.{i}.ffn_norm.weight"))?.dequantize(device)?,
            };
            layers.push(layer);
        }
        let max_pos = config.context_len.min(8192);
        let (cos, sin) = rope_tables(config.head_dim, config.rope_theta, max_pos, device)?;
        Ok(Self {
            config,
            embed,
            layers,
            norm,
            lm_head,
            cos,
            sin,
            device: device.clone(),
        })
    }

    /// Every weight held as int8 cells, by its GGUF tensor name (what the weight cache stores).
    pub(super) fn int8_matrices(&self) -> Vec<(String, &Int8Matrix)> {
        let mut out = Vec::new();
        if let Embedding::Int8(m) = &self.embed {
            out.push(("token_embd.weight".to_string(), m.as_ref()));
        }
        if let Some(m) = self.lm_head.int8() {
            if !matches!(&self.embed, Embedding::Int8(e) if std::ptr::eq(e.as_ref(), m)) {
                out.push(("output.weight".to_string(), m));
            }
        }
        for (i, layer) in self.layers.iter().enumerate() {
            for t in Target::ALL {
                if let Some(m) = layer.projection(t).int8() {
                    out.push((format!("blk.{i}.{}.weight", t.gguf()), m));
                }
            }
        }
        out
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Applies `adapter` to the projections it targets (replacing any adapter before), or
    /// removes adapters with `None`. The base weights are never changed.
    pub fn set_adapter(&mut self, adapter: Option<&Adapter>) -> Result<(), LlmError> {
        if let Some(a) = adapter {
            if let Some(&(layer, _)) = a.weights.keys().find(|(l, _)| *l >= self.layers.len()) {
                return Err(LlmError::Adapter(format!(
                    "the adapter has weights for layer {layer}, but this model has {} layers: it \
                     was made for another base model",
                    self.layers.len()
                )));
            }
        }
        let scale = adapter.map_or(0.0, |a| a.config.scale());
        let device = self.device.clone();
        // Validate everything before changing anything.
        let mut staged = self.layers.clone();
        for (i, layer) in staged.iter_mut().enumerate() {
            for t in Target::ALL {
                let pair = adapter.and_then(|a| a.weights.get(&(i, t)));
                layer.projection_mut(t).set_lora(
                    pair,
                    scale,
                    &device,
                    &format!("blk.{i}.{}", t.gguf()),
                )?;
            }
        }
        self.layers = staged;
        Ok(())
    }

    /// Folds the applied adapter into the weights of every projection (see
    /// [`Projection::merge_lora`]). Afterwards the model behaves as a base model that already
    /// holds the adapter; it cannot be taken off again without reloading.
    pub fn merge_adapter(&mut self) -> Result<(), LlmError> {
        use rayon::prelude::*;
        // Layers in parallel: on the CPU each merge re-quantizes its cells (seconds in all).
        self.layers.par_iter_mut().try_for_each(|layer| {
            Target::ALL
                .iter()
                .try_for_each(|&t| layer.projection_mut(t).merge_lora())
        })?;
        Ok(())
    }

    /// `[out, in]` of layer `layer`'s projection `target` (for building adapters).
    pub fn projection_dims(&self, layer: usize, target: Target) -> Option<(usize, usize)> {
        Some(self.layers.get(layer)?.projection(target).dims)
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Runs one projection of one layer on `x` (`[rows, in]`), adapter included: lets tests
    /// check the LoRA arithmetic against plain matrix products.
    pub fn project(&self, layer: usize, target: Target, x: &Tensor) -> Result<Tensor, LlmError> {
        let l = self
            .layers
            .get(layer)
            .ok_or_else(|| LlmError::Generation(format!("no layer {layer}")))?;
        Ok(l.projection(target).forward(x)?)
    }

    /// The longest sequence (prompt + answer) the model accepts.
    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Runs `ids` (one sequence) after the tokens already in `cache`, appends their keys and
    /// values to it, and returns the logits of the last position as a `[vocab]` f32 tensor.
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache) -> Result<Tensor, LlmError> {
        let pos = cache.len;
        let seq = ids.len();
        if seq == 0 {
            return Err(LlmError::Generation("empty input".into()));
        }
        self.check_positions(pos + seq)?;
        if cache.layers.len() != self.layers.len() {
            cache.layers = vec![None; self.layers.len()];
        }
        let ids_t = Tensor::new(ids, &self.device)?;
        // One sequence: no padding, so a single new token needs no mask at all.
        let mask = if seq > 1 {
            Some(causal_mask(seq, pos, &self.device)?)
        } else {
            None
        };
        let cos = self.cos.narrow(0, pos, seq)?;
        let sin = self.sin.narrow(0, pos, seq)?;
        let logits = self.run(
            &ids_t,
            (1, seq),
            mask.as_ref(),
            &cos,
            &sin,
            &mut cache.layers,
        )?;
        cache.len = pos + seq;
        Ok(logits.flatten_all()?)
    }

    /// Runs one step for a batch: `ids[i]` (at least one token) after the tokens sequence `i`
    /// already has in `cache`, and returns the logits of each sequence's last token as a
    /// `[batch, vocab]` f32 tensor. Shorter inputs are padded on the left, so every sequence's
    /// last token sits in the last column; padding is masked out of every real query and never
    /// advances a sequence's positions, so each sequence gets the logits it would get alone (up
    /// to floating-point summation order).
    pub fn forward_batch(
        &self,
        ids: &[Vec<u32>],
        cache: &mut BatchCache,
    ) -> Result<Tensor, LlmError> {
        let b = ids.len();
        if b == 0 || ids.iter().any(Vec::is_empty) {
            return Err(LlmError::Generation("empty input in a batch".into()));
        }
        if cache.batch_size() != b {
            return Err(LlmError::Generation(format!(
                "a batch of {b} inputs for a cache of {} sequences",
                cache.batch_size()
            )));
        }
        let seq = ids.iter().map(Vec::len).max().unwrap_or(1);
        for (i, t) in ids.iter().enumerate() {
            self.check_positions(cache.next_pos[i] + t.len())?;
        }
        if cache.layers.len() != self.layers.len() {
            cache.layers = vec![None; self.layers.len()];
        }
        let old = cache.columns();
        let mut flat = Vec::with_capacity(b * seq);
        let mut positions = Vec::with_capacity(b * seq);
        for (i, t) in ids.iter().enumerate() {
            let pad = seq - t.len();
            let p0 = cache.next_pos[i];
            flat.extend(std::iter::repeat_n(t[0], pad).chain(t.iter().copied()));
            positions.extend(std::iter::repeat_n(p0 as u32, pad));
            positions.extend((0..t.len()).map(|k| (p0 + k) as u32));
            cache.valid[i].extend((0..seq).map(|c| c >= pad));
            cache.next_pos[i] += t.len();
        }
        let rep = self.config.n_head / self.config.n_kv_head;
        let mask = batch_mask(&cache.valid, old, seq, rep, &self.device)?;
        let pos = Tensor::from_vec(positions, b * seq, &self.device)?;
        let half = self.cos.dim(1)?;
        let cos = self.cos.index_select(&pos, 0)?.reshape((b, seq, half))?;
        let sin = self.sin.index_select(&pos, 0)?.reshape((b, seq, half))?;
        let ids_t = Tensor::from_vec(flat, b * seq, &self.device)?;
        let logits = self.run(&ids_t, (b, seq), Some(&mask), &cos, &sin, &mut cache.layers)?;
        Ok(logits.reshape((b, ()))?)
    }

    /// Refuses a sequence that would need more positions than the RoPE tables hold.
    fn check_positions(&self, need: usize) -> Result<(), LlmError> {
        if need > self.max_positions() {
            return Err(LlmError::Generation(format!(
                "prompt and answer need {need} positions, the model takes {}",
                self.max_positions()
            )));
        }
        Ok(())
    }

    /// The one inference body: embeds `ids` (`b·seq` tokens, row-major), runs every layer with
    /// the given mask and RoPE rows (appending to each layer's cache slot), and returns the f32
    /// logits `[b, 1, vocab]` of each sequence's last column.
    fn run(
        &self,
        ids: &Tensor,
        (b, seq): (usize, usize),
        mask: Option<&Tensor>,
        cos: &Tensor,
        sin: &Tensor,
        slots: &mut [Option<(Tensor, Tensor)>],
    ) -> Result<Tensor, LlmError> {
        let mut x = self
            .embed
            .lookup(ids)?
            .reshape((b, seq, self.config.hidden))?;
        for (layer, slot) in self.layers.iter().zip(slots.iter_mut()) {
            let mut ops = InferOps {
                c: &self.config,
                layer,
                mask,
                cos,
                sin,
                slot,
            };
            x = block::layer(&self.config, layer, &x, &mut ops)?;
        }
        let last = x.narrow(1, seq - 1, 1)?.contiguous()?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, self.config.rms_eps as f32)?;
        let logits = self.lm_head.forward(&last)?;
        Ok(logits.to_dtype(DType::F32)?)
    }
}
