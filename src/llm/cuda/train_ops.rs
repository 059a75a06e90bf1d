//! The building blocks of the hand-written CUDA training layer (`train_layer`): raw device
//! buffers and cuBLAS products in bf16 with f32 accumulation, elementwise launches of
//! `train.cu`, the hash-based dropout shared with the autograd path, the tensor-core attention
//! forward and backward, and the fused AdamW step.
//!
//! Knows tensors and kernels only; never knows layers, adapters or models.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cublas::{result as cublas, sys};
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, LaunchArgs, PushKernelArg};
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, DType, Device, Shape, Storage, Tensor, Var};
use half::bf16;

pub(super) type Result<T> = candle_core::Result<T>;

pub(super) const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/train.ptx"));
pub(super) const MODULE: &str = "sqlora_train";
pub(super) const HEAD_DIM: usize = 64;

pub(super) fn cuda(dev: &Device) -> Result<&CudaDevice> {
    match dev {
        Device::Cuda(d) => Ok(d),
        _ => candle_core::bail!("hand-written training layer: not on a CUDA device"),
    }
}

/// The device address of a contiguous f32 or bf16 CUDA tensor's first element. The tensor must
/// outlive every launch that uses the address (all run on the device's one stream).
pub(super) fn addr(t: &Tensor) -> Result<u64> {
    let (s, l) = t.storage_and_layout();
    if !l.is_contiguous() {
        candle_core::bail!("hand-written training layer: a tensor is not contiguous");
    }
    let Storage::Cuda(c) = &*s else {
        candle_core::bail!("hand-written training layer: a tensor is not on the GPU");
    };
    storage_addr(c, l.start_offset())
}

/// The device address of element `offset` of an f32 or bf16 storage.
pub(super) fn storage_addr(c: &CudaStorage, offset: usize) -> Result<u64> {
    let stream = c.device().cuda_stream();
    let (base, size) = match c.dtype() {
        DType::BF16 => (c.as_cuda_slice::<bf16>()?.device_ptr(&stream).0, 2),
        DType::F32 => (c.as_cuda_slice::<f32>()?.device_ptr(&stream).0, 4),
        d => candle_core::bail!("hand-written training layer: a tensor of {d:?}"),
    };
    Ok(base + (offset * size) as u64)
}

/// A fresh tensor whose contents the next launch writes in full.
pub(super) fn empty(dev: &CudaDevice, shape: impl Into<Shape>, dtype: DType) -> Result<Tensor> {
    let shape = shape.into();
    let n = shape.elem_count();
    // SAFETY: every caller's next launch writes all `n` elements before any read.
    let storage = match dtype {
        DType::BF16 => CudaStorage::wrap_cuda_slice(unsafe { dev.alloc::<bf16>(n) }?, dev.clone()),
        DType::F32 => CudaStorage::wrap_cuda_slice(unsafe { dev.alloc::<f32>(n) }?, dev.clone()),
        d => candle_core::bail!("hand-written training layer: no buffers of {d:?}"),
    };
    Ok(Tensor::from_storage(
        Storage::Cuda(storage),
        shape,
        BackpropOp::none(),
        false,
    ))
}

/// A row-major matrix operand of [`gemm`]: its address, row stride, element type, and whether
/// it is used transposed.
#[derive(Clone, Copy)]
pub(super) struct Mat {
    at: u64,
    ld: usize,
    f32: bool,
    t: bool,
}

pub(super) fn mat(t: &Tensor) -> Result<Mat> {
    Ok(Mat {
        at: addr(t)?,
        ld: t.dims().last().copied().unwrap_or(1),
        f32: t.dtype() == DType::F32,
        t: false,
    })
}

impl Mat {
    pub(super) fn t(self) -> Self {
        Self { t: !self.t, ..self }
    }
    /// Columns `from..` of the same rows.
    pub(super) fn cols(self, from: usize) -> Self {
        Self {
            at: self.at + (from * if self.f32 { 4 } else { 2 }) as u64,
            ..self
        }
    }
}

/// `C[m, n] = α·op(A)[m, k]·op(B)[k, n] + β·C`, all row-major; A and B bf16, C bf16 or f32,
/// f32 accumulation. (cuBLAS is column-major: it computes `Cᵀ = op(B)ᵀ·op(A)ᵀ`.)
pub(super) fn gemm(
    dev: &CudaDevice,
    (m, n, k): (usize, usize, usize),
    (a, b, c): (Mat, Mat, Mat),
    alpha: f32,
    beta: f32,
) -> Result<()> {
    if a.f32 || b.f32 {
        candle_core::bail!("hand-written training layer: products take bf16 operands");
    }
    let blas = dev.cublas_handle();
    let op = |t: bool| {
        if t {
            sys::cublasOperation_t::CUBLAS_OP_T
        } else {
            sys::cublasOperation_t::CUBLAS_OP_N
        }
    };
    let bf = sys::cudaDataType_t::CUDA_R_16BF;
    let c_type = if c.f32 {
        sys::cudaDataType_t::CUDA_R_32F
    } else {
        bf
    };
    // SAFETY: the addresses are of live buffers at least as large as the shapes and strides
    // say (the callers derive both from the same tensors); α and β are f32 as COMPUTE_32F wants.
    unsafe {
        cublas::gemm_ex(
            *blas.handle(),
            op(b.t),
            op(a.t),
            n as i32,
            m as i32,
            k as i32,
            (&alpha) as *const f32 as *const _,
            b.at as *const _,
            bf,
            b.ld as i32,
            a.at as *const _,
            bf,
            a.ld as i32,
            (&beta) as *const f32 as *const _,
            c.at as *mut _,
            c_type,
            c.ld as i32,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| candle_core::Error::Cuda(Box::new(e)))
}

pub(super) fn run(b: &mut LaunchArgs<'_>, grid: (usize, usize, usize), block: usize) -> Result<()> {
    super::layers::launch_grid(b, grid, block, 0)
}

pub(super) fn elementwise(n: usize) -> (usize, usize, usize) {
    (n.div_ceil(256), 1, 1)
}

/// `drop(x)` with the mask of `seed` (a copy-free pass-through without dropout).
pub(super) fn dropout(dev: &CudaDevice, x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let y = empty(dev, x.shape(), x.dtype())?;
    let n = x.elem_count();
    let name = match x.dtype() {
        DType::BF16 => "dropout_bf16",
        _ => "dropout_f32",
    };
    let f = dev.get_or_load_custom_func(name, MODULE, PTX)?;
    let (xa, ya, n64) = (addr(x)?, addr(&y)?, n as u64);
    let mut b = f.builder();
    b.arg(&xa).arg(&ya).arg(&n64).arg(&seed).arg(&p);
    run(&mut b, elementwise(n), 256)?;
    Ok(y)
}

/// Dropout with a mask that is a function of `(seed, element index)`: the same in the forward
/// and the backward, and between the hand-written layer and candle's autograd of the layer.
pub struct HashDropout {
    pub p: f32,
    pub seed: u64,
}

impl candle_core::CustomOp1 for HashDropout {
    fn name(&self) -> &'static str {
        "hash-dropout"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("hash-dropout runs on CUDA only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &candle_core::Layout) -> Result<(CudaStorage, Shape)> {
        if !l.is_contiguous() {
            candle_core::bail!("hash-dropout needs a contiguous input");
        }
        let dev = s.device().clone();
        let n = l.shape().elem_count();
        let xa = storage_addr(s, l.start_offset())?;
        // SAFETY: the launch below writes all `n` elements.
        let y = match s.dtype() {
            DType::BF16 => {
                CudaStorage::wrap_cuda_slice(unsafe { dev.alloc::<bf16>(n) }?, dev.clone())
            }
            DType::F32 => {
                CudaStorage::wrap_cuda_slice(unsafe { dev.alloc::<f32>(n) }?, dev.clone())
            }
            d => candle_core::bail!("hash-dropout: activations of {d:?}"),
        };
        let name = match s.dtype() {
            DType::BF16 => "dropout_bf16",
            _ => "dropout_f32",
        };
        let f = dev.get_or_load_custom_func(name, MODULE, PTX)?;
        let (ya, n64) = (storage_addr(&y, 0)?, n as u64);
        let mut b = f.builder();
        b.arg(&xa).arg(&ya).arg(&n64).arg(&self.seed).arg(&self.p);
        run(&mut b, elementwise(n), 256)?;
        Ok((y, l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // The mask times 1/(1 − p) is diagonal: its own transpose.
        Ok(Some(grad.contiguous()?.apply_op1(HashDropout {
            p: self.p,
            seed: self.seed,
        })?))
    }
}

/// Whether attention's forward runs on tensor cores (`SQLORA_TC_ATTENTION=0` turns it off).
pub(super) fn tensor_cores() -> bool {
    std::env::var("SQLORA_TC_ATTENTION").map_or(true, |v| v != "0")
}

/// Causal attention's forward over bf16 `q` `[b, nh, s, 64]`, `k` and `v` `[b, nkv, s, 64]`:
/// `[b, nh, s, 65]` f32, the output and each row's log-sum-exp (what the backward kernels read).
/// With `tensor_cores`, the wmma kernel; else the f32 one the autograd path uses.
pub fn attention_forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f32,
    tensor_cores: bool,
) -> Result<Tensor> {
    let dev = cuda(q.device())?;
    let (b, nh, s, hd) = q.dims4()?;
    let (bk, nkv, sk, hdk) = k.dims4()?;
    if hd != HEAD_DIM || hdk != hd || bk != b || sk != s || k.shape() != v.shape() {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if nkv == 0 || nh % nkv != 0 || q.dtype() != DType::BF16 || k.dtype() != DType::BF16 {
        candle_core::bail!("attention: bf16 q, k and v with query heads a multiple of kv heads");
    }
    let (qa, ka, va) = (addr(q)?, addr(k)?, addr(v)?);
    // The tensor-core kernel reads 16-byte vectors.
    if !(tensor_cores && [qa, ka, va].iter().all(|a| a % 16 == 0)) {
        return super::attention::forward_packed(q, k, v, scale);
    }
    let out = empty(dev, (b, nh, s, hd + 1), DType::F32)?;
    let oa = addr(&out)?;
    let f = dev.get_or_load_custom_func(
        "attn_fwd_tc_bf16",
        super::attention::MODULE,
        super::attention::PTX,
    )?;
    let (nhi, nkvi, si) = (nh as i32, nkv as i32, s as i32);
    let mut bl = f.builder();
    bl.arg(&qa).arg(&ka).arg(&va).arg(&oa);
    bl.arg(&nhi).arg(&nkvi).arg(&si).arg(&scale);
    run(&mut bl, (s.div_ceil(64), nh, b), 128)?;
    Ok(out)
}

/// The backward of [`attention_forward`] given `fwd` (its output) and `dout` (the gradient of
/// that output, `[b, nh, s, 65]` f32, last column unused): `dq`, `dk`, `dv` in f32.
pub fn attention_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    fwd: &Tensor,
    dout: &Tensor,
    scale: f32,
    tensor_cores: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let dev = cuda(q.device())?;
    let (b, nh, s, hd) = q.dims4()?;
    let nkv = k.dim(1)?;
    let want = (b, nh, s, hd + 1);
    if fwd.dims4()? != want || dout.dims4()? != want || k.shape() != v.shape() {
        candle_core::bail!("attention backward: shapes disagree");
    }
    let (qa, ka, va) = (addr(q)?, addr(k)?, addr(v)?);
    if !(tensor_cores && [qa, ka, va].iter().all(|a| a % 16 == 0)) {
        return super::attention::backward_f32(q, k, v, fwd, dout, scale);
    }
    // Every row of each is written: dq by the dQ kernel, dk and dv by the dK/dV kernel.
    let (dq, dk, dv) = (
        empty(dev, (b, nh, s, hd), DType::F32)?,
        empty(dev, (b, nkv, s, hd), DType::F32)?,
        empty(dev, (b, nkv, s, hd), DType::F32)?,
    );
    let delta = empty(dev, (b, nh, s), DType::F32)?;
    let (fa, ga, dla) = (addr(fwd)?, addr(dout)?, addr(&delta)?);
    let (dqa, dka, dva) = (addr(&dq)?, addr(&dk)?, addr(&dv)?);
    let (nhi, nkvi, si) = (nh as i32, nkv as i32, s as i32);
    let load = |name: &str| {
        dev.get_or_load_custom_func(name, super::attention::MODULE, super::attention::PTX)
    };
    let rows = b * nh * s;
    let f = load("attn_delta")?;
    let rows64 = rows as u64;
    let mut bl = f.builder();
    bl.arg(&fa).arg(&ga).arg(&dla).arg(&rows64);
    run(&mut bl, (rows.div_ceil(4), 1, 1), 128)?;
    // Four 64 × 72 bf16 tiles, four warps' 16 × 68 f32 tiles, two rows of 64 f32.
    let smem = (4 * 64 * 72 * 2 + 4 * 16 * 68 * 4 + 2 * 64 * 4) as u32;
    let f = load("attn_bwd_tc_bf16")?;
    f.set_attribute(
        candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        smem as i32,
    )
    .map_err(|e| candle_core::Error::Cuda(Box::new(e)))?;
    let mut bl = f.builder();
    bl.arg(&qa).arg(&ka).arg(&va).arg(&fa).arg(&ga).arg(&dla);
    bl.arg(&dka)
        .arg(&dva)
        .arg(&nhi)
        .arg(&nkvi)
        .arg(&si)
        .arg(&scale);
    super::layers::launch_grid(&mut bl, (s.div_ceil(64), nkv, b), 128, smem)?;
    let f = load("attn_bwd_dq_tc_bf16")?;
    let mut bl = f.builder();
    bl.arg(&qa).arg(&ka).arg(&va).arg(&fa).arg(&ga).arg(&dla);
    bl.arg(&dqa).arg(&nhi).arg(&nkvi).arg(&si).arg(&scale);
    run(&mut bl, (s.div_ceil(64), nh, b), 128)?;
    Ok((dq, dk, dv))
}

/// AdamW's update of one f32 parameter in place, one kernel (candle's ops take a dozen).
#[allow(clippy::too_many_arguments)]
pub fn adamw(
    var: &Var,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    lr: f32,
    (b1, b2, eps, wd): (f32, f32, f32, f32),
    (c1, c2): (f32, f32),
) -> Result<()> {
    let dev = cuda(var.device())?;
    let p = var.as_tensor();
    let n = p.elem_count();
    if grad.elem_count() != n || m.elem_count() != n || v.elem_count() != n {
        candle_core::bail!("adamw: parameter, gradient and moments differ in size");
    }
    let grad = grad.to_dtype(DType::F32)?.contiguous()?;
    let f = dev.get_or_load_custom_func("adamw_f32", MODULE, PTX)?;
    let (pa, ga, ma, va, n64) = (addr(p)?, addr(&grad)?, addr(m)?, addr(v)?, n as u64);
    let mut b = f.builder();
    b.arg(&pa).arg(&ga).arg(&ma).arg(&va).arg(&n64);
    b.arg(&lr)
        .arg(&b1)
        .arg(&b2)
        .arg(&eps)
        .arg(&wd)
        .arg(&c1)
        .arg(&c2);
    run(&mut b, elementwise(n), 256)
}
