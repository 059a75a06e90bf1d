//! Single-sequence decode on CUDA with the project's own fused kernels
//! (`src/llm/cuda/kernels/decode.cu`, compiled to PTX by `build.rs`): a speed-up of the model's
//! one layer body (`llm::block`) for one token at a time, held to it by
//! `tests/cuda.rs::fused_decode_chooses_the_tokens_candles_kernels_choose`.
//!
//! candle's stock path spends a decode step on ~35 small kernel launches per layer (norms,
//! biases, RoPE, cache concatenation, softmax, the input quantization of every quantized matmul)
//! and is bound by launch overhead, not by memory. Here a step is 5 fused kernels per layer:
//! RMSNorm + QKV + bias + RoPE + cache write; split-K attention over the cache; the chunks'
//! combine + o-projection + residual; RMSNorm + gate/up + SwiGLU; down-projection + residual.
//! Then one kernel for the final norm, the output head and a per-block argmax, and one for the
//! final argmax. Weights are held as f16 copies of the effective weights (adapter included),
//! the fastest form for one row at a time and much closer to the 4-bit values than bf16; the KV
//! cache never reallocates (`[kv_heads, max_pos, head_dim]` per layer); the token and its
//! position live in device memory, so a step has static launch shapes and is captured once as
//! a CUDA graph and replayed. Only the chosen token and its logit come back to the host.

use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::{
    result, sys, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, LaunchArgs,
    LaunchConfig, PushKernelArg,
};
use candle_core::{DType, Storage, Tensor};

use crate::llm::cache::KvCache;
use crate::llm::config::Arch;
use crate::llm::model::Model;
use crate::llm::LlmError;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/decode.ptx"));
const MODULE: &str = "sqlora_decode";
/// Keys per attention block (`CHUNK` in the kernels).
const CHUNK: usize = 256;
/// Rows of the output head per warp (`HEAD_ROWS` in the kernels).
const HEAD_ROWS: usize = 8;
/// Threads per block of the row kernels: 8 warps, one row each.
const BLOCK: u32 = 256;
const WARPS: usize = 8;
/// Largest vector the row kernels stage in shared memory (48 KiB of f32).
const MAX_SMEM_FLOATS: usize = 12 * 1024;

fn err(what: &str, e: impl std::fmt::Display) -> LlmError {
    LlmError::Generation(format!("CUDA decode: {what}: {e}"))
}

/// Why a model cannot use this path (it then decodes with candle's kernels), or `None`.
pub fn unsupported(model: &Model) -> Option<String> {
    let c = &model.config;
    let inter = model.layers.first().map_or(0, |l| l.gate.dims.0);
    if !model.device().is_cuda() {
        return Some("not a CUDA model".into());
    }
    if !c.hidden.is_multiple_of(8)
        || !inter.is_multiple_of(8)
        || !(c.n_head * c.head_dim).is_multiple_of(8)
    {
        return Some(format!(
            "hidden {} / ffn {inter} not multiples of 8",
            c.hidden
        ));
    }
    if c.hidden > MAX_SMEM_FLOATS || inter > MAX_SMEM_FLOATS {
        return Some(format!("hidden {} / ffn {inter} too large", c.hidden));
    }
    if c.head_dim != 64 && c.head_dim != 128 {
        return Some(format!(
            "head size {} (the kernels take 64 and 128)",
            c.head_dim
        ));
    }
    None
}

struct Kernels {
    embed: CudaFunction,
    qkv: CudaFunction,
    attn: CudaFunction,
    attn_out: CudaFunction,
    matvec_add: CudaFunction,
    gate_up: CudaFunction,
    head: CudaFunction,
    argmax: CudaFunction,
}

/// One layer's weights as the kernels read them (kept alive here; raw pointers in `ptrs`).
struct LayerWeights {
    attn_norm: Tensor,
    /// `[q rows; k rows; v rows]` of the layer, f16.
    qkv: Tensor,
    qkv_bias: Tensor,
    o: Tensor,
    ffn_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

struct LayerPtrs {
    attn_norm: u64,
    qkv: u64,
    qkv_bias: u64,
    o: u64,
    ffn_norm: u64,
    gate: u64,
    up: u64,
    down: u64,
    k: u64,
    v: u64,
}

/// A captured decode step. The graph holds raw pointers into this decoder's buffers only.
struct Graph(CudaGraph);
// SAFETY: the graph is only launched through `&mut Decoder`, never from two threads at once;
// CUDA graph execs may be used from any thread as long as calls are serialised.
unsafe impl Send for Graph {}

/// Buffers, weights and the captured graph for decoding one sequence at a time.
pub struct Decoder {
    stream: Arc<CudaStream>,
    k: Kernels,
    _weights: Vec<LayerWeights>,
    _head: Tensor,
    _keep: Vec<Tensor>,
    layers: Vec<LayerPtrs>,
    _kv: Vec<CudaSlice<f32>>,
    bufs: Vec<CudaSlice<f32>>,
    ints: Vec<CudaSlice<u32>>,
    p: Ptrs,
    hidden: i32,
    inter: i32,
    n_head: i32,
    n_kv: i32,
    head_dim: i32,
    neox: i32,
    max_pos: usize,
    eps: f32,
    vocab: usize,
    head_blocks: u32,
    n_chunks: u32,
    graph: Option<Graph>,
    /// Capture the step as a CUDA graph (`SQLORA_CUDA_GRAPH=0` launches kernels one by one).
    use_graph: bool,
    /// Tokens in the cache (the position of the next token).
    len: usize,
}

/// Raw device pointers of the shared buffers.
struct Ptrs {
    embed: u64,
    cos: u64,
    sin: u64,
    out_norm: u64,
    head: u64,
    x: u64,
    q: u64,
    h: u64,
    part_o: u64,
    part_ms: u64,
    logits: u64,
    cand_v: u64,
    cand_i: u64,
    res: u64,
    token: u64,
    pos: u64,
}

fn tensor_ptr(t: &Tensor, stream: &Arc<CudaStream>) -> Result<u64, LlmError> {
    let (storage, layout) = t.storage_and_layout();
    if !layout.is_contiguous() {
        return Err(err("layout", "a weight is not contiguous"));
    }
    let Storage::Cuda(cs) = &*storage else {
        return Err(err("device", "a weight is not on the GPU"));
    };
    let elem = t.dtype().size_in_bytes() as u64;
    let base = match t.dtype() {
        DType::F32 => cs.as_cuda_slice::<f32>()?.device_ptr(stream).0,
        DType::F16 => cs.as_cuda_slice::<half::f16>()?.device_ptr(stream).0,
        other => return Err(err("dtype", format!("{other:?}"))),
    };
    Ok(base + layout.start_offset() as u64 * elem)
}

/// Launches a kernel whose arguments are all pushed.
fn go(b: &mut LaunchArgs<'_>, c: LaunchConfig) -> Result<(), LlmError> {
    // SAFETY: every pointer argument addresses a live buffer of the size the kernel reads (see
    // `Decoder::new`), and each argument list matches its kernel's signature in decode.cu.
    unsafe { b.launch(c) }
        .map(|_| ())
        .map_err(|e| err("launch", e))
}

fn slice_ptr<T>(s: &CudaSlice<T>, stream: &Arc<CudaStream>) -> u64 {
    s.device_ptr(stream).0
}

impl Decoder {
    /// Builds the decoder for `model`'s current weights (adapter included). Takes about a
    /// second and ~1 GB of GPU memory for the 0.5B model (f16 weights and a full-length cache).
    pub fn new(model: &Model) -> Result<Self, LlmError> {
        if let Some(why) = unsupported(model) {
            return Err(err("unsupported model", why));
        }
        let dev = model.device().as_cuda_device()?;
        let stream = dev.cuda_stream();
        let load = |name: &str| -> Result<CudaFunction, LlmError> {
            let f = dev
                .get_or_load_custom_func(name, MODULE, PTX)
                .map_err(|e| err("loading kernels", e))?;
            Ok(CudaFunction::clone(&f))
        };
        let k = Kernels {
            embed: load("embed_row")?,
            qkv: load("qkv_rope")?,
            attn: load(if model.config.head_dim == 64 {
                "attn_chunk_64"
            } else {
                "attn_chunk_128"
            })?,
            attn_out: load("attn_out")?,
            matvec_add: load("matvec_add")?,
            gate_up: load("gate_up")?,
            head: load("head_argmax")?,
            argmax: load("argmax_final")?,
        };
        let c = &model.config;
        let max_pos = model.max_positions();
        let f16 =
            |t: Tensor| -> Result<Tensor, LlmError> { Ok(t.to_dtype(DType::F16)?.contiguous()?) };
        let mut weights = Vec::with_capacity(model.layers.len());
        for l in &model.layers {
            let qkv = Tensor::cat(
                &[
                    l.q.effective_weight()?,
                    l.k.effective_weight()?,
                    l.v.effective_weight()?,
                ],
                0,
            )?;
            let bias = |p: &crate::llm::linear::Projection| -> Result<Tensor, LlmError> {
                Ok(match &p.bias {
                    Some(b) => b.to_dtype(DType::F32)?,
                    None => Tensor::zeros(p.dims.0, DType::F32, model.device())?,
                })
            };
            let qkv_bias =
                Tensor::cat(&[bias(&l.q)?, bias(&l.k)?, bias(&l.v)?], 0)?.contiguous()?;
            weights.push(LayerWeights {
                attn_norm: l.attn_norm.to_dtype(DType::F32)?.contiguous()?,
                qkv: f16(qkv)?,
                qkv_bias,
                o: f16(l.o.effective_weight()?)?,
                ffn_norm: l.ffn_norm.to_dtype(DType::F32)?.contiguous()?,
                gate: f16(l.gate.effective_weight()?)?,
                up: f16(l.up.effective_weight()?)?,
                down: f16(l.down.effective_weight()?)?,
            });
        }
        let head = f16(model.lm_head.effective_weight()?)?;
        let vocab = head.dim(0)?;
        let embed = model.embed.dense(model.device())?.contiguous()?;
        let cos = model.cos.contiguous()?;
        let sin = model.sin.contiguous()?;
        let out_norm = model.norm.to_dtype(DType::F32)?.contiguous()?;

        let hd = c.head_dim;
        let inter = model.layers[0].gate.dims.0;
        let n_chunks = max_pos.div_ceil(CHUNK);
        let head_blocks = vocab.div_ceil(WARPS * HEAD_ROWS);
        let alloc = |n: usize| {
            stream
                .alloc_zeros::<f32>(n.max(1))
                .map_err(|e| err("allocating", e))
        };
        let mut kv = Vec::with_capacity(2 * c.n_layer);
        for _ in 0..2 * c.n_layer {
            kv.push(alloc(c.n_kv_head * max_pos * hd)?);
        }
        let bufs = vec![
            alloc(c.hidden)?,                 // x
            alloc(c.n_head * hd)?,            // q
            alloc(inter)?,                    // h
            alloc(c.n_head * n_chunks * hd)?, // part_o
            alloc(c.n_head * n_chunks * 2)?,  // part_ms
            alloc(vocab)?,                    // logits
            alloc(head_blocks)?,              // cand_v
        ];
        let ialloc = |n: usize| {
            stream
                .alloc_zeros::<u32>(n)
                .map_err(|e| err("allocating", e))
        };
        let ints = vec![ialloc(head_blocks)?, ialloc(2)?, ialloc(1)?, ialloc(1)?];
        let p = Ptrs {
            embed: tensor_ptr(&embed, &stream)?,
            cos: tensor_ptr(&cos, &stream)?,
            sin: tensor_ptr(&sin, &stream)?,
            out_norm: tensor_ptr(&out_norm, &stream)?,
            head: tensor_ptr(&head, &stream)?,
            x: slice_ptr(&bufs[0], &stream),
            q: slice_ptr(&bufs[1], &stream),
            h: slice_ptr(&bufs[2], &stream),
            part_o: slice_ptr(&bufs[3], &stream),
            part_ms: slice_ptr(&bufs[4], &stream),
            logits: slice_ptr(&bufs[5], &stream),
            cand_v: slice_ptr(&bufs[6], &stream),
            cand_i: slice_ptr(&ints[0], &stream),
            res: slice_ptr(&ints[1], &stream),
            token: slice_ptr(&ints[2], &stream),
            pos: slice_ptr(&ints[3], &stream),
        };
        let mut layers = Vec::with_capacity(weights.len());
        for (i, w) in weights.iter().enumerate() {
            layers.push(LayerPtrs {
                attn_norm: tensor_ptr(&w.attn_norm, &stream)?,
                qkv: tensor_ptr(&w.qkv, &stream)?,
                qkv_bias: tensor_ptr(&w.qkv_bias, &stream)?,
                o: tensor_ptr(&w.o, &stream)?,
                ffn_norm: tensor_ptr(&w.ffn_norm, &stream)?,
                gate: tensor_ptr(&w.gate, &stream)?,
                up: tensor_ptr(&w.up, &stream)?,
                down: tensor_ptr(&w.down, &stream)?,
                k: slice_ptr(&kv[2 * i], &stream),
                v: slice_ptr(&kv[2 * i + 1], &stream),
            });
        }
        Ok(Self {
            stream,
            k,
            _weights: weights,
            _head: head,
            _keep: vec![embed, cos, sin, out_norm],
            layers,
            _kv: kv,
            bufs,
            ints,
            p,
            hidden: c.hidden as i32,
            inter: inter as i32,
            n_head: c.n_head as i32,
            n_kv: c.n_kv_head as i32,
            head_dim: hd as i32,
            neox: i32::from(c.arch == Arch::Qwen2),
            max_pos,
            eps: c.rms_eps as f32,
            vocab,
            head_blocks: head_blocks as u32,
            n_chunks: n_chunks as u32,
            graph: None,
            use_graph: std::env::var("SQLORA_CUDA_GRAPH").map_or(true, |v| v != "0"),
            len: 0,
        })
    }

    /// Loads `cache` (a prefilled prompt) into the decoder's own cache; the next [`step`]
    /// decodes the token at position `cache.len()`.
    ///
    /// [`step`]: Decoder::step
    pub fn start(&mut self, cache: &KvCache) -> Result<(), LlmError> {
        let len = cache.len();
        if len >= self.max_pos {
            return Err(err("start", "the prompt fills the model's context"));
        }
        let hd = self.head_dim as usize;
        let n_kv = self.n_kv as usize;
        let bytes = len * hd * 4;
        // Kept until the copies are done (a non-contiguous layer would be a temporary).
        let mut sources = Vec::with_capacity(2 * self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            let Some((k, v)) = cache.layer(i) else {
                return Err(err("start", format!("no cached keys for layer {i}")));
            };
            for (src, dst) in [(k, l.k), (v, l.v)] {
                if src.dims() != [1, n_kv, len, hd] {
                    return Err(err("start", format!("cache layer {i} is {:?}", src.dims())));
                }
                let src = src.contiguous()?;
                let base = tensor_ptr(&src, &self.stream)?;
                for h in 0..n_kv {
                    // SAFETY: both ranges lie inside live allocations of at least these sizes
                    // (`src` is [1, n_kv, len, hd], `dst` is [n_kv, max_pos, hd], len < max_pos).
                    unsafe {
                        result::memcpy_dtod_async(
                            dst + (h * self.max_pos * hd * 4) as u64,
                            base + (h * len * hd * 4) as u64,
                            bytes,
                            self.stream.cu_stream(),
                        )
                    }
                    .map_err(|e| err("copying the cache", e))?;
                }
                sources.push(src);
            }
        }
        self.stream.synchronize().map_err(|e| err("sync", e))?;
        drop(sources);
        self.stream
            .memcpy_htod(&[len as u32], &mut self.ints[3])
            .map_err(|e| err("position", e))?;
        self.len = len;
        Ok(())
    }

    /// Runs `token` at the next position and returns the greedy next token and its logit.
    pub fn step(&mut self, token: u32) -> Result<(u32, f32), LlmError> {
        if self.len >= self.max_pos {
            return Err(err("step", "the model's context is full"));
        }
        if token as usize >= self.vocab {
            return Err(err("step", format!("token {token} outside the vocabulary")));
        }
        self.stream
            .memcpy_htod(&[token], &mut self.ints[2])
            .map_err(|e| err("token", e))?;
        if self.use_graph && self.graph.is_none() {
            self.capture();
        }
        match &self.graph {
            Some(g) => g.0.launch().map_err(|e| err("graph launch", e))?,
            None => self.launch_step()?,
        }
        let res = self
            .stream
            .clone_dtoh(&self.ints[1])
            .map_err(|e| err("reading the token", e))?;
        self.len += 1;
        Ok((res[0], f32::from_bits(res[1])))
    }

    /// The logits of the last [`step`] (`[vocab]`), for checks against the reference path.
    ///
    /// [`step`]: Decoder::step
    pub fn logits(&self) -> Result<Vec<f32>, LlmError> {
        self.stream
            .clone_dtoh(&self.bufs[5])
            .map_err(|e| err("reading logits", e))
    }

    /// Whether steps replay a captured CUDA graph.
    pub fn uses_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// Records one step as a CUDA graph; on any failure, steps are launched kernel by kernel.
    fn capture(&mut self) {
        let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        if self.stream.begin_capture(mode).is_err() {
            self.use_graph = false;
            return;
        }
        let launched = self.launch_step();
        let graph = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
        match (launched, graph) {
            (Ok(()), Ok(Some(g))) => self.graph = Some(Graph(g)),
            _ => self.use_graph = false,
        }
    }

    /// Enqueues the kernels of one decode step.
    fn launch_step(&self) -> Result<(), LlmError> {
        let p = &self.p;
        let s = &self.stream;
        let cfg = |grid: (u32, u32), block: u32, smem: usize| LaunchConfig {
            grid_dim: (grid.0, grid.1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        let (h, inter, nh, nkv, hd) = (
            self.hidden,
            self.inter,
            self.n_head,
            self.n_kv,
            self.head_dim,
        );
        let hu = h as usize;
        let max_pos = self.max_pos as i32;
        let eps = self.eps;
        let scale = 1.0 / (hd as f32).sqrt();
        let q_dim = nh * hd;
        let units = ((nh + 2 * nkv) * hd / 2) as usize;
        let nc = self.n_chunks as i32;
        let vocab = self.vocab as i32;
        let cands = self.head_blocks as i32;

        let mut b = s.launch_builder(&self.k.embed);
        b.arg(&p.embed).arg(&p.token).arg(&h).arg(&p.x);
        go(&mut b, cfg((hu.div_ceil(256) as u32, 1), 256, 0))?;
        for l in &self.layers {
            let mut b = s.launch_builder(&self.k.qkv);
            b.arg(&p.x).arg(&l.attn_norm).arg(&eps).arg(&h);
            b.arg(&l.qkv)
                .arg(&l.qkv_bias)
                .arg(&nh)
                .arg(&nkv)
                .arg(&hd)
                .arg(&self.neox);
            b.arg(&p.cos).arg(&p.sin).arg(&p.pos).arg(&max_pos);
            b.arg(&p.q).arg(&l.k).arg(&l.v);
            go(
                &mut b,
                cfg((units.div_ceil(WARPS) as u32, 1), BLOCK, hu * 4),
            )?;

            let mut b = s.launch_builder(&self.k.attn);
            b.arg(&p.q).arg(&l.k).arg(&l.v).arg(&p.pos);
            b.arg(&nh).arg(&nkv).arg(&max_pos).arg(&scale);
            b.arg(&p.part_o).arg(&p.part_ms);
            go(&mut b, cfg((nh as u32, self.n_chunks), CHUNK as u32, 0))?;

            let mut b = s.launch_builder(&self.k.attn_out);
            b.arg(&p.part_o)
                .arg(&p.part_ms)
                .arg(&p.pos)
                .arg(&nh)
                .arg(&hd)
                .arg(&nc);
            b.arg(&l.o).arg(&h).arg(&p.x);
            go(
                &mut b,
                cfg((hu.div_ceil(WARPS) as u32, 1), BLOCK, q_dim as usize * 4),
            )?;

            let mut b = s.launch_builder(&self.k.gate_up);
            b.arg(&p.x).arg(&l.ffn_norm).arg(&eps).arg(&h);
            b.arg(&l.gate).arg(&l.up).arg(&inter).arg(&p.h);
            go(
                &mut b,
                cfg(((inter as usize).div_ceil(WARPS) as u32, 1), BLOCK, hu * 4),
            )?;

            let mut b = s.launch_builder(&self.k.matvec_add);
            b.arg(&l.down).arg(&p.h).arg(&inter).arg(&h).arg(&p.x);
            go(
                &mut b,
                cfg((hu.div_ceil(WARPS) as u32, 1), BLOCK, inter as usize * 4),
            )?;
        }
        let mut b = s.launch_builder(&self.k.head);
        b.arg(&p.x).arg(&p.out_norm).arg(&eps).arg(&h);
        b.arg(&p.head)
            .arg(&vocab)
            .arg(&p.logits)
            .arg(&p.cand_v)
            .arg(&p.cand_i);
        go(&mut b, cfg((self.head_blocks, 1), BLOCK, hu * 4))?;

        let mut b = s.launch_builder(&self.k.argmax);
        b.arg(&p.cand_v).arg(&p.cand_i).arg(&cands);
        b.arg(&p.res).arg(&p.token).arg(&p.pos);
        go(&mut b, cfg((1, 1), 1024, 0))?;
        Ok(())
    }
}
