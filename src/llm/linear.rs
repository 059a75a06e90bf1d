//! A linear layer in the forms sqlora runs it: for inference a [`Projection`] holds the weight
//! representation that is fastest for each phase (on CPU sqlora's own int8 cells for both,
//! see [`super::cpu`]; on CUDA dense f32 for prefill and the GGUF's own blocks for decode) with
//! an optional LoRA delta on top; for
//! training a [`FrozenLinear`] keeps only the 4-bit weight and dequantizes it for each product
//! and its backward (QLoRA).
//!
//! Owns weight representations and products; never knows which layer or model a weight is in.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{
    CpuStorage, CustomOp1, DType, Device, Layout, Module, Shape, Storage, Tensor, D,
};

use super::cpu::Int8Matrix;
use super::lora::adapter::LoraPair;
use super::LlmError;

/// How a projection's weight is held in memory for one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// The GGUF's own quantization (Q4_K, Q5_0, ...), run by candle's quantized kernels.
    Native,
    /// Re-quantized to Q8_0 and run by candle's kernels (the CPU's decode format before the
    /// int8 cells).
    Q8_0,
    /// Dequantized to f32 (cuBLAS's prefill path on CUDA).
    F32,
    /// sqlora's own CPU cells ([`Int8Matrix`]): bytes with a scale and an offset per 32
    /// weights, multiplied by integer dot products. CPU only (CUDA gets `Native`).
    Int8,
}

impl std::str::FromStr for WeightFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "native" | "gguf" => Ok(Self::Native),
            "q8_0" | "q8" => Ok(Self::Q8_0),
            "f32" => Ok(Self::F32),
            "int8" => Ok(Self::Int8),
            _ => Err(format!(
                "unknown weight format `{s}` (native, q8_0, f32, int8)"
            )),
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
    /// One int8 copy serves both phases on CPU (see `scripts/bench-cpu` for its speed beside
    /// the f32 / Q8_0 pair it replaced, which held 2.5 GB for a 491 MB model).
    pub fn cpu_default() -> Self {
        Self {
            prefill: WeightFormat::Int8,
            decode: WeightFormat::Int8,
            wide_rows: 4,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) enum Form {
    Quant(Arc<QMatMul>),
    Dense(Tensor),
    Int8(Arc<Int8Matrix>),
}

impl Form {
    pub(super) fn build(
        q: &Arc<QTensor>,
        fmt: WeightFormat,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let native_dense = matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        let (rows, cols) = q.shape().dims2()?;
        Ok(match fmt {
            WeightFormat::F32 => Form::Dense(q.dequantize(device)?),
            // A dense GGUF (f32, f16, bf16) stays dense: int8 cells would round it.
            _ if native_dense => Form::Dense(q.dequantize(device)?),
            WeightFormat::Int8 if device.is_cpu() && Int8Matrix::fits(rows, cols) => {
                Form::Int8(Arc::new(Int8Matrix::from_qtensor(q)?))
            }
            WeightFormat::Int8 => Form::Quant(Arc::new(QMatMul::from_arc(q.clone())?)),
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
    pub(super) fn merged(&self, delta: &Tensor) -> candle_core::Result<Self> {
        Ok(match self {
            Form::Dense(w) => Form::Dense((w + delta.to_dtype(w.dtype())?)?),
            Form::Int8(m) => {
                let dense = (m.dequantize(delta.device())? + delta)?;
                Form::Int8(Arc::new(Int8Matrix::from_f32(&dense)?))
            }
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

    /// The weight `[out, in]` dequantized to f32 on `device`.
    pub(super) fn dense_f32(&self, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Form::Dense(w) => w.to_dtype(DType::F32),
            Form::Int8(m) => m.dequantize(device),
            Form::Quant(m) => match m.as_ref() {
                QMatMul::QTensor(q) => q.dequantize(device),
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.to_dtype(DType::F32),
            },
        }
    }

    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Form::Quant(m) => m.forward(x),
            Form::Int8(m) => int8_forward(m, x, |_, _, _| {}),
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

/// `x·Wᵀ` through the CPU's int8 product, with `more(x, rows, y)` adding to the output before
/// it becomes a tensor (the few-row LoRA delta).
fn int8_forward(
    m: &Int8Matrix,
    x: &Tensor,
    more: impl FnOnce(&[f32], usize, &mut [f32]),
) -> candle_core::Result<Tensor> {
    let mut out = x.dims().to_vec();
    let last = out.len() - 1;
    let rows = x.elem_count() / out[last].max(1);
    let flat = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let mut y = super::cpu::matmul(&flat, rows, m);
    more(&flat, rows, &mut y);
    out[last] = m.rows();
    Tensor::from_vec(y, out, x.device())
}

/// A LoRA delta on a projection: `scale · (x·Aᵀ)·Bᵀ`.
#[derive(Debug, Clone)]
struct Lora {
    a: Tensor,
    b: Tensor,
    scale: f64,
    /// `a` and `b` as f32 on the host, for the CPU's few-row path (`cpu::add_lora`).
    host: Option<Arc<(Vec<f32>, Vec<f32>)>>,
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
    pub(super) fn new(
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

    /// A projection whose weight is already in its one form for both phases (int8 cells
    /// mapped from the weight cache).
    pub(super) fn from_form(form: Form, bias: Option<Tensor>, plan: &WeightPlan) -> Self {
        let dims = match &form {
            Form::Int8(m) => (m.rows(), m.cols()),
            Form::Dense(w) => w.dims2().unwrap_or((0, 0)),
            Form::Quant(m) => match m.as_ref() {
                QMatMul::QTensor(q) => q.shape().dims2().unwrap_or((0, 0)),
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dims2().unwrap_or((0, 0)),
            },
        };
        Self {
            narrow: form.clone(),
            wide: form,
            wide_rows: plan.wide_rows,
            bias,
            dims,
            lora: None,
            narrow_is_wide: true,
        }
    }

    /// The int8 cells this projection holds, when it is in that form (for the weight cache).
    pub(super) fn int8(&self) -> Option<&Int8Matrix> {
        match &self.wide {
            Form::Int8(m) => Some(m),
            _ => None,
        }
    }

    /// Puts a LoRA delta on this projection (or takes it off with `None`), checking shapes.
    pub(super) fn set_lora(
        &mut self,
        pair: Option<&LoraPair>,
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
        let host = match (&self.wide, device.is_cpu()) {
            (Form::Int8(_), true) => {
                let flat = |t: &Tensor| -> candle_core::Result<Vec<f32>> {
                    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
                };
                Some(Arc::new((flat(&pair.a)?, flat(&pair.b)?)))
            }
            _ => None,
        };
        self.lora = Some(Lora {
            a: pair.a.to_device(device)?,
            b: pair.b.to_device(device)?,
            scale,
            host,
        });
        Ok(())
    }

    /// Folds the LoRA delta into the weights (`W + scale·B·A`) and drops the adapter, so that
    /// the forward costs what the base costs. The 4-bit GGUF weight itself is not kept.
    pub(super) fn merge_lora(&mut self) -> candle_core::Result<()> {
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
        let device = match &self.bias {
            Some(b) => b.device().clone(),
            None => self
                .lora
                .as_ref()
                .map_or(Device::Cpu, |l| l.a.device().clone()),
        };
        let w = match &self.wide {
            Form::Quant(m) => match m.as_ref() {
                QMatMul::QTensor(q) => q.dequantize(&q.device())?,
                _ => self.wide.dense_f32(&device)?,
            },
            Form::Dense(w) => w.to_dtype(DType::F32)?,
            Form::Int8(_) => self.wide.dense_f32(&device)?,
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
        let y = match (form, &self.lora) {
            // Int8 cells with an adapter, few rows (decode): the delta is added on the host, in
            // the product's own output, without candle's two small products.
            (Form::Int8(m), Some(l @ Lora { host: Some(h), .. })) if rows <= 8 => {
                let rank = h.0.len() / self.dims.1.max(1);
                int8_forward(m, x, |flat, rows, y| {
                    super::cpu::add_lora(flat, rows, &h.0, &h.1, rank, l.scale as f32, y)
                })?
            }
            (_, lora) => {
                let mut y = form.forward(x)?;
                if let Some(l) = lora {
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
                y
            }
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// `y = x·Wᵀ` with `W` frozen and quantized, as QLoRA runs it: the 4-bit weight is all that is
/// kept; the forward dequantizes it into the input's dtype for one dense product (cuBLAS on a
/// GPU) and drops it, and the backward dequantizes it again to give `dx = g·W`. No gradient for
/// `W` (candle's own quantized matmul has no backward at all).
pub struct FrozenLinear(pub Arc<QTensor>);

impl FrozenLinear {
    /// The weight `[out, in]` on `dev` in `dtype`, for one product.
    fn weight(&self, dev: &Device, dtype: DType) -> candle_core::Result<Tensor> {
        let w = self.0.dequantize(dev)?;
        if w.dtype() == dtype {
            Ok(w)
        } else {
            w.to_dtype(dtype)
        }
    }
}

/// `x·wᵀ` on storages: `x` contiguous with `k` columns, `w` `[n, k]`.
fn dense_product<S: BackendStorage>(
    x: &S,
    xl: &Layout,
    w: &S,
    wl: &Layout,
) -> candle_core::Result<(S, Shape)> {
    if !xl.is_contiguous() {
        candle_core::bail!("frozen-quantized-linear needs a contiguous input");
    }
    let dims = xl.dims();
    let k = dims[dims.len() - 1];
    let m = xl.shape().elem_count() / k.max(1);
    let (n, kw) = wl.shape().dims2()?;
    if kw != k {
        candle_core::bail!("frozen-quantized-linear: input has {k} columns, the weight {kw}");
    }
    let x2 = Layout::contiguous_with_offset((m, k), xl.start_offset());
    let y = x.matmul(w, (1, m, n, k), &x2, &wl.transpose(0, 1)?)?;
    let mut out = dims.to_vec();
    out[dims.len() - 1] = n;
    Ok((y, Shape::from(out)))
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-quantized-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = self.weight(&Device::Cpu, s.dtype())?;
        let (ws, wl) = w.storage_and_layout();
        match &*ws {
            Storage::Cpu(ws) => dense_product(s, l, ws, wl),
            _ => candle_core::bail!("frozen-quantized-linear: weight is not on the CPU"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let dev = Device::Cuda(s.device().clone());
        let w = self.weight(&dev, s.dtype())?;
        let (ws, wl) = w.storage_and_layout();
        match &*ws {
            Storage::Cuda(ws) => dense_product(s, l, ws, wl),
            _ => candle_core::bail!("frozen-quantized-linear: weight is not on the GPU"),
        }
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let w = self.weight(grad.device(), grad.dtype())?; // [out, in]
        let dims = grad.dims().to_vec();
        let out = dims[dims.len() - 1];
        let rows = grad.elem_count() / out;
        let dx = grad.reshape((rows, out))?.matmul(&w)?;
        let mut shape = dims;
        let last = shape.len() - 1;
        shape[last] = w.dim(1)?;
        Ok(Some(dx.reshape(shape)?))
    }
}

/// The frozen product of `p` on `x` in training (no bias, no adapter): the 4-bit weight through
/// [`FrozenLinear`], a dense one as one matmul in `x`'s dtype.
pub(super) fn frozen(p: &Projection, x: &Tensor) -> candle_core::Result<Tensor> {
    let dense = |w: &Tensor| -> candle_core::Result<Tensor> {
        let dims = x.dims();
        let k = dims[dims.len() - 1];
        let y = x
            .reshape((x.elem_count() / k, k))?
            .matmul(&w.to_dtype(x.dtype())?.t()?)?;
        let mut out = dims.to_vec();
        out[dims.len() - 1] = w.dim(0)?;
        y.reshape(out)
    };
    match &p.wide {
        Form::Quant(m) => match m.as_ref() {
            QMatMul::QTensor(q) => x.contiguous()?.apply_op1(FrozenLinear(q.clone())),
            QMatMul::Tensor(w) | QMatMul::TensorF16(w) => dense(w),
        },
        Form::Dense(w) => dense(w),
        Form::Int8(m) => dense(&m.dequantize(x.device())?),
    }
}
