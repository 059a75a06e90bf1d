//! One transformer forward for the GGUF architectures sqlora runs (`qwen2`, `llama`).
//!
//! Owns the weights, the rotary tables and the KV cache layout. Each projection is a
//! [`Projection`] that holds the representation that is fastest for each phase (dense f32 for
//! prefill, Q8_0 for single-token decode on CPU); the GGUF on disk stays 4-bit. Never tokenizes,
//! never prints.

use std::sync::Arc;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor, D};

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

/// How a projection's weight is held in memory for one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// The GGUF's own quantization (Q4_K, Q5_0, ...), run by candle's quantized kernels.
    Native,
    /// Re-quantized to Q8_0: the fastest single-row kernel on CPU.
    Q8_0,
    /// Dequantized to f32: the fastest many-row (prefill) path on CPU.
    F32,
}

impl std::str::FromStr for WeightFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "native" | "gguf" => Ok(Self::Native),
            "q8_0" | "q8" => Ok(Self::Q8_0),
            "f32" => Ok(Self::F32),
            _ => Err(format!("unknown weight format `{s}` (native, q8_0, f32)")),
        }
    }
}

/// The representation chosen per phase. Calls with at least `wide_rows` rows (prefill) use
/// `prefill`; fewer rows (decode) use `decode`.
#[derive(Debug, Clone, Copy)]
pub struct WeightPlan {
    pub prefill: WeightFormat,
    pub decode: WeightFormat,
    pub wide_rows: usize,
}

impl WeightPlan {
    /// Measured on 2 CPU cores (see `scripts/bench-cpu`): f32 prefills ~15x faster than
    /// Q4_K, and Q8_0 decodes ~3x faster than Q4_K and ~2.5x faster than f32.
    pub fn cpu_default() -> Self {
        Self {
            prefill: WeightFormat::F32,
            decode: WeightFormat::Q8_0,
            wide_rows: 4,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) enum Form {
    Quant(Arc<QMatMul>),
    Dense(Tensor),
}

impl Form {
    fn build(q: &Arc<QTensor>, fmt: WeightFormat, device: &Device) -> candle_core::Result<Self> {
        let native_dense = matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        Ok(match fmt {
            WeightFormat::F32 => Form::Dense(q.dequantize(device)?),
            _ if native_dense => Form::Dense(q.dequantize(device)?),
            WeightFormat::Native => Form::Quant(Arc::new(QMatMul::from_arc(q.clone())?)),
            // See `merged`: no Q8_0 re-quantization on CUDA; its native kernels are used.
            WeightFormat::Q8_0 if device.is_cuda() => {
                Form::Quant(Arc::new(QMatMul::from_arc(q.clone())?))
            }
            WeightFormat::Q8_0 => {
                let cols = q.shape().dims().last().copied().unwrap_or(0);
                if q.dtype() == GgmlDType::Q8_0 || cols % GgmlDType::Q8_0.block_size() != 0 {
                    Form::Quant(Arc::new(QMatMul::from_arc(q.clone())?))
                } else {
                    let dense = q.dequantize(device)?;
                    let q8 = QTensor::quantize(&dense, GgmlDType::Q8_0)?;
                    Form::Quant(Arc::new(QMatMul::from_qtensor(q8)?))
                }
            }
        })
    }

    /// This form with `delta` (`[out, in]`, f32) added to its weight: dense stays dense; a
    /// quantized form is dequantized, summed and requantized to Q8_0 (re-quantizing to a
    /// 4-bit type would round most of a small delta away).
    fn merged(&self, delta: &Tensor) -> candle_core::Result<Self> {
        Ok(match self {
            Form::Dense(w) => Form::Dense((w + delta.to_dtype(w.dtype())?)?),
            Form::Quant(m) => {
                let dense = match m.as_ref() {
                    QMatMul::QTensor(q) => q.dequantize(delta.device())?,
                    QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.to_dtype(DType::F32)?,
                };
                let dense = (dense + delta)?;
                // candle's Q8_0 quantization of CUDA tensors gives non-finite values (measured
                // on the H200): merged weights stay dense there.
                if !dense.device().is_cuda() && dense.dim(1)? % GgmlDType::Q8_0.block_size() == 0 {
                    let q8 = QTensor::quantize(&dense, GgmlDType::Q8_0)?;
                    Form::Quant(Arc::new(QMatMul::from_qtensor(q8)?))
                } else {
                    Form::Dense(dense)
                }
            }
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Form::Quant(m) => m.forward(x),
            Form::Dense(w) => {
                let dims = x.dims().to_vec();
                let k = dims[dims.len() - 1];
                let rows: usize = dims[..dims.len() - 1].iter().product();
                let y = x.reshape((rows, k))?.matmul(&w.t()?)?;
                let mut out = dims;
                let last = out.len() - 1;
                out[last] = w.dim(0)?;
                y.reshape(out)
            }
        }
    }
}

/// A LoRA delta on a projection: `scale · (x·Aᵀ)·Bᵀ`.
#[derive(Debug, Clone)]
struct Lora {
    a: Tensor,
    b: Tensor,
    scale: f64,
}

/// A linear layer `y = x·Wᵀ (+ b)` that carries one weight representation per phase, and
/// optionally a LoRA adapter on top of the untouched base weight.
#[derive(Debug, Clone)]
pub struct Projection {
    pub(super) wide: Form,
    narrow: Form,
    wide_rows: usize,
    pub(super) bias: Option<Tensor>,
    /// `[out, in]` of the base weight.
    pub(super) dims: (usize, usize),
    lora: Option<Lora>,
    /// `narrow` is a clone of `wide` (same weights, shared storage).
    narrow_is_wide: bool,
}

impl Projection {
    fn new(
        q: QTensor,
        bias: Option<Tensor>,
        plan: &WeightPlan,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let q = Arc::new(q);
        let dims = q.shape().dims2()?;
        let wide = Form::build(&q, plan.prefill, device)?;
        let narrow = if plan.decode == plan.prefill {
            wide.clone()
        } else {
            Form::build(&q, plan.decode, device)?
        };
        Ok(Self {
            wide,
            narrow,
            wide_rows: plan.wide_rows,
            bias,
            dims,
            lora: None,
            narrow_is_wide: plan.decode == plan.prefill,
        })
    }

    /// Puts a LoRA delta on this projection (or takes it off with `None`), checking shapes.
    fn set_lora(
        &mut self,
        pair: Option<&super::lora::LoraPair>,
        scale: f64,
        device: &Device,
        what: &str,
    ) -> Result<(), LlmError> {
        let Some(pair) = pair else {
            self.lora = None;
            return Ok(());
        };
        let (out, inp) = self.dims;
        let (ra, ka) = pair.a.dims2()?;
        let (nb, rb) = pair.b.dims2()?;
        if ka != inp || nb != out || ra != rb {
            return Err(LlmError::Adapter(format!(
                "{what}: lora_A is {ra}x{ka} and lora_B {nb}x{rb}, but this model's projection is \
                 {out}x{inp}: the adapter was made for another base model"
            )));
        }
        self.lora = Some(Lora {
            a: pair.a.to_device(device)?,
            b: pair.b.to_device(device)?,
            scale,
        });
        Ok(())
    }

    /// Folds the LoRA delta into the weights (`W + scale·B·A`) and drops the adapter, so that
    /// the forward costs what the base costs. The 4-bit GGUF weight itself is not kept.
    fn merge_lora(&mut self) -> candle_core::Result<()> {
        let Some(l) = self.lora.take() else {
            return Ok(());
        };
        let delta = (l.b.matmul(&l.a)? * l.scale)?;
        self.wide = self.wide.merged(&delta)?;
        self.narrow = if self.narrow_is_wide {
            self.wide.clone()
        } else {
            self.narrow.merged(&delta)?
        };
        Ok(())
    }

    /// The weight this projection applies, `[out, in]` in f32 on its device, adapter included
    /// (for kernels that keep their own copy of the weights).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(super) fn effective_weight(&self) -> candle_core::Result<Tensor> {
        let w = match &self.wide {
            Form::Dense(w) => w.to_dtype(DType::F32)?,
            Form::Quant(m) => match m.as_ref() {
                QMatMul::QTensor(q) => q.dequantize(&q.device())?,
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.to_dtype(DType::F32)?,
            },
        };
        match &self.lora {
            Some(l) => w + (l.b.matmul(&l.a)? * l.scale)?.to_dtype(DType::F32)?,
            None => Ok(w),
        }
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let rows = x.elem_count() / x.dim(D::Minus1)?;
        let form = if rows >= self.wide_rows {
            &self.wide
        } else {
            &self.narrow
        };
        let mut y = form.forward(x)?;
        if let Some(l) = &self.lora {
            let dims = x.dims().to_vec();
            let k = dims[dims.len() - 1];
            let flat = x.reshape((rows, k))?;
            let delta = flat
                .matmul(&l.a.t()?)?
                .matmul(&l.b.t()?)?
                .affine(l.scale, 0.0)?;
            let delta = delta.reshape(y.shape())?;
            y = (y + delta)?;
        }
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

impl Layer {
    pub(super) fn projection(&self, t: super::lora::Target) -> &Projection {
        use super::lora::Target;
        match t {
            Target::Q => &self.q,
            Target::K => &self.k,
            Target::V => &self.v,
            Target::O => &self.o,
            Target::Gate => &self.gate,
            Target::Up => &self.up,
            Target::Down => &self.down,
        }
    }

    fn projection_mut(&mut self, t: super::lora::Target) -> &mut Projection {
        use super::lora::Target;
        match t {
            Target::Q => &mut self.q,
            Target::K => &mut self.k,
            Target::V => &mut self.v,
            Target::O => &mut self.o,
            Target::Gate => &mut self.gate,
            Target::Up => &mut self.up,
            Target::Down => &mut self.down,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub(super) attn_norm: Tensor,
    pub(super) q: Projection,
    pub(super) k: Projection,
    pub(super) v: Projection,
    pub(super) o: Projection,
    pub(super) ffn_norm: Tensor,
    pub(super) gate: Projection,
    pub(super) up: Projection,
    pub(super) down: Projection,
}

/// Per-layer keys and values of the tokens seen so far. Cloning is cheap (tensors are shared),
/// which is how a cached prompt prefix is reused across questions.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Layer `i`'s keys and values, `[1, kv_heads, len, head_dim]` each.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(super) fn layer(&self, i: usize) -> Option<&(Tensor, Tensor)> {
        self.layers.get(i)?.as_ref()
    }

    /// The cache as named tensors (`k.{layer}`, `v.{layer}`), for saving.
    pub fn to_named(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, slot) in self.layers.iter().enumerate() {
            if let Some((k, v)) = slot {
                out.push((format!("k.{i}"), k.clone()));
                out.push((format!("v.{i}"), v.clone()));
            }
        }
        out
    }

    /// Rebuilds a cache of `n_layer` layers from [`KvCache::to_named`] tensors; `None` when any
    /// layer is missing or the lengths disagree.
    pub fn from_named(
        mut named: std::collections::HashMap<String, Tensor>,
        n_layer: usize,
    ) -> Option<Self> {
        let mut layers = Vec::with_capacity(n_layer);
        let mut len = None;
        for i in 0..n_layer {
            let k = named.remove(&format!("k.{i}"))?;
            let v = named.remove(&format!("v.{i}"))?;
            let l = k.dim(2).ok()?;
            if v.dim(2).ok()? != l || len.is_some_and(|x| x != l) {
                return None;
            }
            len = Some(l);
            layers.push(Some((k, v)));
        }
        Some(Self { layers, len: len? })
    }
}

/// Keys and values of several sequences generated together, in one padded layout: each layer
/// holds `[batch, kv_heads, columns, head_dim]`, and column `j` holds, for each sequence, either
/// one of its tokens or padding that its queries never see. Sequences of different lengths (a
/// shared prompt prefix followed by questions of different lengths, answers that stop at
/// different steps) share one tensor per layer, so a forward step costs one set of kernels for
/// the whole batch.
#[derive(Debug, Clone, Default)]
pub struct BatchCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Per sequence, per column: whether the column holds a real token of that sequence.
    valid: Vec<Vec<bool>>,
    /// Per sequence: the position (for RoPE) its next token takes.
    next_pos: Vec<usize>,
}

impl BatchCache {
    /// An empty cache for `batch` sequences.
    pub fn new(batch: usize) -> Self {
        Self {
            layers: Vec::new(),
            valid: vec![Vec::new(); batch],
            next_pos: vec![0; batch],
        }
    }

    /// `batch` copies of one sequence's cache (a prompt prefix the batch shares).
    pub fn broadcast(prefix: &KvCache, batch: usize) -> candle_core::Result<Self> {
        let layers = prefix
            .layers
            .iter()
            .map(|slot| {
                slot.as_ref()
                    .map(|(k, v)| -> candle_core::Result<(Tensor, Tensor)> {
                        Ok((
                            k.repeat((batch, 1, 1, 1))?.contiguous()?,
                            v.repeat((batch, 1, 1, 1))?.contiguous()?,
                        ))
                    })
                    .transpose()
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            valid: vec![vec![true; prefix.len]; batch],
            next_pos: vec![prefix.len; batch],
        })
    }

    pub fn batch_size(&self) -> usize {
        self.valid.len()
    }

    /// Columns held (the longest sequence's length plus padding).
    pub fn columns(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }

    /// Tokens of sequence `i` so far (its next position).
    pub fn seq_len(&self, i: usize) -> usize {
        self.next_pos[i]
    }

    /// Keeps only the sequences at `keep` (indices into the batch, in the new order): finished
    /// answers leave the batch so that later steps do not compute them.
    pub fn retain(&mut self, keep: &[usize]) -> candle_core::Result<()> {
        if keep.len() == self.batch_size() && keep.iter().enumerate().all(|(i, &k)| i == k) {
            return Ok(());
        }
        if let Some(device) = self
            .layers
            .iter()
            .flatten()
            .next()
            .map(|(k, _)| k.device().clone())
        {
            let idx: Vec<u32> = keep.iter().map(|&i| i as u32).collect();
            let idx = Tensor::new(idx.as_slice(), &device)?;
            for (k, v) in self.layers.iter_mut().flatten() {
                *k = k.index_select(&idx, 0)?;
                *v = v.index_select(&idx, 0)?;
            }
        }
        self.valid = keep.iter().map(|&i| self.valid[i].clone()).collect();
        self.next_pos = keep.iter().map(|&i| self.next_pos[i]).collect();
        Ok(())
    }
}

/// A loaded model: weights in the chosen representation, ready for [`Model::forward`].
#[derive(Debug)]
pub struct Model {
    pub config: ModelConfig,
    pub(super) embed: Tensor,
    pub(super) layers: Vec<Layer>,
    pub(super) norm: Tensor,
    pub(super) lm_head: Projection,
    pub(super) cos: Tensor,
    pub(super) sin: Tensor,
    device: Device,
}

impl Model {
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        plan: &WeightPlan,
        device: &Device,
    ) -> Result<Self, LlmError> {
        let config = ModelConfig::from_gguf(ct)?;
        let mut tensor = |name: &str| -> Result<QTensor, LlmError> {
            ct.tensor(reader, name, device)
                .map_err(|e| LlmError::Corrupt(format!("tensor `{name}`: {e}")))
        };
        let embed_q = tensor("token_embd.weight")?;
        let embed = embed_q.dequantize(device)?;
        let (vocab, hidden) = embed.dims2()?;
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
        let lm_head = match tensor("output.weight") {
            Ok(q) => Projection::new(q, None, &head_plan, device)?,
            Err(_) => Projection::new(embed_q, None, &head_plan, device)?,
        };
        let mut layers = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let mut proj = |name: &str, with_bias: bool| -> Result<Projection, LlmError> {
                let w = tensor(&format!("blk.{i}.{name}.weight"))?;
                let bias = if with_bias {
                    Some(tensor(&format!("blk.{i}.{name}.bias"))?.dequantize(device)?)
                } else {
                    None
                };
                Ok(Projection::new(w, bias, plan, device)?)
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

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Applies `adapter` to the projections it targets (replacing any adapter before), or
    /// removes adapters with `None`. The base weights are never changed.
    pub fn set_adapter(&mut self, adapter: Option<&super::lora::Adapter>) -> Result<(), LlmError> {
        use super::lora::Target;
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
        for layer in &mut self.layers {
            for t in super::lora::Target::ALL {
                layer.projection_mut(t).merge_lora()?;
            }
        }
        Ok(())
    }

    /// `[out, in]` of layer `layer`'s projection `target` (for building adapters).
    pub fn projection_dims(
        &self,
        layer: usize,
        target: super::lora::Target,
    ) -> Option<(usize, usize)> {
        Some(self.layers.get(layer)?.projection(target).dims)
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Runs one projection of one layer on `x` (`[rows, in]`), adapter included: lets tests
    /// check the LoRA arithmetic against plain matrix products.
    pub fn project(
        &self,
        layer: usize,
        target: super::lora::Target,
        x: &Tensor,
    ) -> Result<Tensor, LlmError> {
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
        if pos + seq > self.max_positions() {
            return Err(LlmError::Generation(format!(
                "prompt and answer need {} positions, the model takes {}",
                pos + seq,
                self.max_positions()
            )));
        }
        if cache.layers.len() != self.layers.len() {
            cache.layers = vec![None; self.layers.len()];
        }
        let ids_t = Tensor::new(ids, &self.device)?;
        let mut x = self.embed.index_select(&ids_t, 0)?.unsqueeze(0)?;
        let mask = if seq > 1 {
            Some(causal_mask(seq, pos, &self.device)?)
        } else {
            None
        };
        let cos = self.cos.narrow(0, pos, seq)?;
        let sin = self.sin.narrow(0, pos, seq)?;
        let eps = self.config.rms_eps as f32;
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let a = self.attention(layer, &h, mask.as_ref(), &cos, &sin, slot)?;
            x = (x + a)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            let gate = candle_nn::ops::silu(&layer.gate.forward(&h)?)?;
            let m = layer.down.forward(&(gate * layer.up.forward(&h)?)?)?;
            x = (x + m)?;
        }
        cache.len = pos + seq;
        let last = x.narrow(1, seq - 1, 1)?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, eps)?;
        let logits = self.lm_head.forward(&last)?;
        Ok(logits.flatten_all()?.to_dtype(DType::F32)?)
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
            let need = cache.next_pos[i] + t.len();
            if need > self.max_positions() {
                return Err(LlmError::Generation(format!(
                    "prompt and answer need {need} positions, the model takes {}",
                    self.max_positions()
                )));
            }
        }
        if cache.layers.len() != self.layers.len() {
            cache.layers = vec![None; self.layers.len()];
        }
        let old = cache.columns();
        let cols = old + seq;
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
        // Query column `c` sees key `j` when `j` is a real token of its sequence at or before
        // it; a padding query also sees itself, so that its (discarded) output stays finite and
        // never poisons a real query through 0·NaN.
        let mut mask = Vec::with_capacity(b * seq * cols);
        for valid in &cache.valid {
            for c in old..cols {
                mask.extend((0..cols).map(|j| {
                    if j == c || (j < c && valid[j]) {
                        0f32
                    } else {
                        f32::NEG_INFINITY
                    }
                }));
            }
        }
        let rep = self.config.n_head / self.config.n_kv_head;
        let mask = Tensor::from_vec(mask, (b, 1, seq, cols), &self.device)?
            .repeat((1, 1, rep, 1))?
            .contiguous()?;
        let pos = Tensor::from_vec(positions, b * seq, &self.device)?;
        let half = self.cos.dim(1)?;
        let cos = self.cos.index_select(&pos, 0)?.reshape((b, seq, half))?;
        let sin = self.sin.index_select(&pos, 0)?.reshape((b, seq, half))?;
        let ids_t = Tensor::from_vec(flat, b * seq, &self.device)?;
        let mut x = self
            .embed
            .index_select(&ids_t, 0)?
            .reshape((b, seq, self.config.hidden))?;
        let eps = self.config.rms_eps as f32;
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let a = self.attention(layer, &h, Some(&mask), &cos, &sin, slot)?;
            x = (x + a)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            let gate = candle_nn::ops::silu(&layer.gate.forward(&h)?)?;
            let m = layer.down.forward(&(gate * layer.up.forward(&h)?)?)?;
            x = (x + m)?;
        }
        let last = x.narrow(1, seq - 1, 1)?.contiguous()?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, eps)?;
        let logits = self.lm_head.forward(&last)?;
        Ok(logits.reshape((b, ()))?.to_dtype(DType::F32)?)
    }

    fn attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        mask: Option<&Tensor>,
        cos: &Tensor,
        sin: &Tensor,
        slot: &mut Option<(Tensor, Tensor)>,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (b, seq, _) = x.dims3()?;
        let heads = |t: Tensor, n: usize| -> candle_core::Result<Tensor> {
            t.reshape((b, seq, n, c.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(layer.q.forward(x)?, c.n_head)?;
        let k = heads(layer.k.forward(x)?, c.n_kv_head)?;
        let v = heads(layer.v.forward(x)?, c.n_kv_head)?;
        let (q, k) = match c.arch {
            Arch::Qwen2 => (
                candle_nn::rotary_emb::rope(&q, cos, sin)?,
                candle_nn::rotary_emb::rope(&k, cos, sin)?,
            ),
            Arch::Llama => (
                candle_nn::rotary_emb::rope_i(&q, cos, sin)?,
                candle_nn::rotary_emb::rope_i(&k, cos, sin)?,
            ),
        };
        let (k, v) = match slot.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        *slot = Some((k.clone(), v.clone()));
        // Grouped-query attention without copying K/V for every query head: the `rep` query
        // heads that share a KV head are stacked on the row axis, [b, kv_heads, rep·seq, dim].
        let rep = c.n_head / c.n_kv_head;
        let q = q.reshape((b, c.n_kv_head, rep * seq, c.head_dim))?;
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        let mut att = (q.matmul(&k.t()?)? * scale)?;
        match mask {
            // Batched: `[b, 1, rep·seq, keys]`, already laid out like the query rows.
            Some(mask) if mask.rank() == 4 => att = att.broadcast_add(mask)?,
            Some(mask) => att = att.broadcast_add(&mask.repeat((rep, 1))?)?,
            None => {}
        }
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v)?.reshape((b, c.n_head, seq, c.head_dim))?;
        let y = y
            .transpose(1, 2)?
            .reshape((b, seq, c.n_head * c.head_dim))?;
        layer.o.forward(&y)
    }
}

/// Additive causal mask `[seq, pos + seq]`: query `i` sees keys `0..=pos + i`.
fn causal_mask(seq: usize, pos: usize, device: &Device) -> candle_core::Result<Tensor> {
    let kv = pos + seq;
    let data: Vec<f32> = (0..seq)
        .flat_map(|i| (0..kv).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(data, (seq, kv), device)
}

fn rope_tables(
    head_dim: usize,
    theta: f32,
    max_pos: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / theta.powf(i as f32 / head_dim as f32))
        .collect();
    let n = inv.len();
    let inv = Tensor::from_vec(inv, (1, n), device)?;
    let t = Tensor::arange(0u32, max_pos as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((max_pos, 1))?;
    let freqs = t.matmul(&inv)?;
    Ok((freqs.cos()?, freqs.sin()?))
}
