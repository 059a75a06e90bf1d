//! Fused RMSNorm, RoPE and SwiGLU for training on CUDA, each one kernel forward and one
//! backward (`src/llm/cuda/kernels/layers.cu`), where candle's differentiable versions are
//! chains of elementwise ops (and its fused ones have no backward). f32 or bf16 activations, f32
//! arithmetic; the norm's weight is frozen (no gradient), as in LoRA training.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use candle_core::cuda_backend::{CudaDType, CudaStorageSlice};
use candle_core::{
    CpuStorage, CudaDevice, CudaStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Storage,
    Tensor,
};

pub(crate) const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/layers.ptx"));
pub(crate) const MODULE: &str = "sqlora_layers";

fn launch(b: &mut LaunchArgs<'_>, blocks: usize, threads: usize) -> candle_core::Result<()> {
    launch_grid(b, (blocks, 1, 1), threads, 0)
}

/// Launches a kernel of the project's training kernels (`layers.cu`, `attention.cu`,
/// `train.cu`) over `grid` blocks of `block` threads with `shared_mem_bytes` of dynamic shared
/// memory.
pub(crate) fn launch_grid(
    b: &mut LaunchArgs<'_>,
    grid: (usize, usize, usize),
    block: usize,
    shared_mem_bytes: u32,
) -> candle_core::Result<()> {
    let cfg = LaunchConfig {
        grid_dim: (grid.0 as u32, grid.1 as u32, grid.2 as u32),
        block_dim: (block as u32, 1, 1),
        shared_mem_bytes,
    };
    // SAFETY: callers push the arguments of the kernel's signature, on buffers of the sizes the
    // kernel reads and writes (each caller derives both from the same shapes).
    unsafe { b.launch(cfg) }
        .map(|_| ())
        .map_err(|e| candle_core::Error::Cuda(Box::new(e)))
}

/// An f32 tensor's device memory, from its offset.
fn f32_view(t: &Tensor) -> candle_core::Result<(candle_core::StorageRef<'_>, usize)> {
    let (s, l) = t.storage_and_layout();
    if !l.is_contiguous() || t.dtype() != DType::F32 {
        candle_core::bail!("fused layer op: a table is not a contiguous f32 tensor");
    }
    if !matches!(&*s, Storage::Cuda(_)) {
        candle_core::bail!("fused layer op: a table is not on the GPU");
    }
    Ok((s, l.start_offset()))
}

fn as_f32(s: &Storage, offset: usize) -> candle_core::Result<CudaView<'_, f32>> {
    match s {
        Storage::Cuda(c) => Ok(c.as_cuda_slice::<f32>()?.slice(offset..)),
        _ => candle_core::bail!("fused layer op: a table is not on the GPU"),
    }
}

fn contiguous(l: &Layout) -> candle_core::Result<()> {
    if !l.is_contiguous() {
        candle_core::bail!("fused layer op: input is not contiguous");
    }
    Ok(())
}

/// Runs `$run::<T>` on the typed slice of a storage (f32 or bf16), wrapping its output.
macro_rules! typed {
    ($run:ident, $dev:expr, $s:expr, $($rest:expr),*) => {
        match &$s.slice {
            CudaStorageSlice::F32(x) => {
                CudaStorage::wrap_cuda_slice($run::<f32>($dev, "f32", x, $($rest),*)?, $dev.clone())
            }
            CudaStorageSlice::BF16(x) => CudaStorage::wrap_cuda_slice(
                $run::<half::bf16>($dev, "bf16", x, $($rest),*)?,
                $dev.clone(),
            ),
            _ => candle_core::bail!("fused layer op: activations must be f32 or bf16"),
        }
    };
}

/// `x · rsqrt(mean(x²) + eps) · alpha` over the last dimension; `alpha` f32, frozen.
pub struct RmsNorm {
    pub alpha: Tensor,
    pub eps: f32,
}

struct RmsNormBackward {
    alpha: Tensor,
    grad: Tensor,
    eps: f32,
}

fn rms_fwd<T: DeviceRepr + ValidAsZeroBits + CudaDType>(
    dev: &CudaDevice,
    suf: &str,
    x: &CudaSlice<T>,
    xl: &Layout,
    alpha: &Tensor,
    eps: f32,
) -> candle_core::Result<CudaSlice<T>> {
    let n = xl.dims().last().copied().unwrap_or(1);
    let rows = xl.shape().elem_count() / n.max(1);
    let (a, ao) = f32_view(alpha)?;
    let a = as_f32(&a, ao)?;
    let xv = x.slice(xl.start_offset()..);
    let y = dev.alloc_zeros::<T>(rows * n)?;
    let func = dev.get_or_load_custom_func(&format!("rms_fwd_{suf}"), MODULE, PTX)?;
    let ni = n as i32;
    let mut b = func.builder();
    b.arg(&xv).arg(&a).arg(&y).arg(&ni).arg(&eps);
    launch(&mut b, rows, 256)?;
    Ok(y)
}

fn rms_bwd<T: DeviceRepr + ValidAsZeroBits + CudaDType>(
    dev: &CudaDevice,
    suf: &str,
    x: &CudaSlice<T>,
    xl: &Layout,
    op: &RmsNormBackward,
) -> candle_core::Result<CudaSlice<T>> {
    let n = xl.dims().last().copied().unwrap_or(1);
    let rows = xl.shape().elem_count() / n.max(1);
    let (a, ao) = f32_view(&op.alpha)?;
    let a = as_f32(&a, ao)?;
    let (gs, gl) = op.grad.storage_and_layout();
    contiguous(gl)?;
    let g = match &*gs {
        Storage::Cuda(c) => c.as_cuda_slice::<T>()?.slice(gl.start_offset()..),
        _ => candle_core::bail!("fused rms-norm backward: gradient not on the GPU"),
    };
    let xv = x.slice(xl.start_offset()..);
    let dx = dev.alloc_zeros::<T>(rows * n)?;
    let func = dev.get_or_load_custom_func(&format!("rms_bwd_{suf}"), MODULE, PTX)?;
    let ni = n as i32;
    let mut b = func.builder();
    b.arg(&xv).arg(&a).arg(&g).arg(&dx).arg(&ni).arg(&op.eps);
    launch(&mut b, rows, 256)?;
    Ok(dx)
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("fused rms-norm runs on CUDA only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        contiguous(l)?;
        if self.alpha.dims1()? != l.dims().last().copied().unwrap_or(0) {
            candle_core::bail!(
                "fused rms-norm: weight of {:?} for {:?}",
                self.alpha.dims(),
                l.dims()
            );
        }
        let dev = s.device().clone();
        let out = typed!(rms_fwd, &dev, s, l, &self.alpha, self.eps);
        Ok((out, l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let op = RmsNormBackward {
            alpha: self.alpha.clone(),
            grad: grad.contiguous()?,
            eps: self.eps,
        };
        Ok(Some(arg.apply_op1_no_bwd(&op)?))
    }
}

impl CustomOp1 for RmsNormBackward {
    fn name(&self) -> &'static str {
        "fused-rms-norm-backward"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("fused rms-norm runs on CUDA only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        contiguous(l)?;
        if self.grad.shape() != l.shape() || self.grad.dtype() != s.dtype() {
            candle_core::bail!("fused rms-norm backward: gradient of another shape or dtype");
        }
        let dev = s.device().clone();
        let out = typed!(rms_bwd, &dev, s, l, self);
        Ok((out, l.shape().clone()))
    }
}

/// Rotary embedding in the rotate-half layout (Qwen2) of `x` `[b, heads, s, d]`, with `cos`
/// and `sin` `[s, d/2]` f32.
pub struct Rope {
    pub cos: Tensor,
    pub sin: Tensor,
    /// 1 forward; -1 rotates back (the backward).
    pub sign: f32,
}

fn rope_run<T: DeviceRepr + ValidAsZeroBits + CudaDType>(
    dev: &CudaDevice,
    suf: &str,
    x: &CudaSlice<T>,
    xl: &Layout,
    op: &Rope,
) -> candle_core::Result<CudaSlice<T>> {
    let (b, h, s, d) = xl.shape().dims4()?;
    if op.cos.dims2()? != (s, d / 2) || op.sin.dims2()? != (s, d / 2) || d % 2 != 0 {
        candle_core::bail!(
            "fused rope: tables {:?} for input {:?}",
            op.cos.dims(),
            xl.dims()
        );
    }
    let (c, co) = f32_view(&op.cos)?;
    let (sn, so) = f32_view(&op.sin)?;
    let (c, sn) = (as_f32(&c, co)?, as_f32(&sn, so)?);
    let xv = x.slice(xl.start_offset()..);
    let y = dev.alloc_zeros::<T>(b * h * s * d)?;
    let func = dev.get_or_load_custom_func(&format!("rope_{suf}"), MODULE, PTX)?;
    let (rows, si, di) = ((b * h) as i32, s as i32, d as i32);
    let mut bld = func.builder();
    bld.arg(&xv)
        .arg(&c)
        .arg(&sn)
        .arg(&y)
        .arg(&rows)
        .arg(&si)
        .arg(&di)
        .arg(&op.sign);
    launch(&mut bld, (b * h * s * d / 2).div_ceil(256), 256)?;
    Ok(y)
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("fused rope runs on CUDA only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        contiguous(l)?;
        let dev = s.device().clone();
        let out = typed!(rope_run, &dev, s, l, self);
        Ok((out, l.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let back = Rope {
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            sign: -self.sign,
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&back)?))
    }
}

/// [`RmsNorm`] of `x` with the frozen weight `alpha` (any dtype; used as f32).
pub fn rms_norm(x: &Tensor, alpha: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    let alpha = alpha.to_dtype(DType::F32)?.contiguous()?;
    x.contiguous()?.apply_op1(RmsNorm { alpha, eps })
}

/// [`Rope`] of `x` `[b, heads, s, d]` with f32 tables `[s, d/2]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Rope {
        cos: cos.to_dtype(DType::F32)?.contiguous()?,
        sin: sin.to_dtype(DType::F32)?.contiguous()?,
        sign: 1.0,
    })
}

/// `silu(g) · u`, elementwise.
pub struct SwiGlu;

struct SwiGluBackward {
    grad: Tensor,
}

fn swiglu_run<T: DeviceRepr + ValidAsZeroBits + CudaDType>(
    dev: &CudaDevice,
    suf: &str,
    (g, gl): (&CudaSlice<T>, &Layout),
    (u, ul): (&CudaSlice<T>, &Layout),
    grad: Option<&Tensor>,
) -> candle_core::Result<CudaSlice<T>> {
    let n = gl.shape().elem_count();
    let (gv, uv) = (g.slice(gl.start_offset()..), u.slice(ul.start_offset()..));
    let n64 = n as u64;
    match grad {
        None => {
            let y = dev.alloc_zeros::<T>(n)?;
            let func = dev.get_or_load_custom_func(&format!("swiglu_{suf}"), MODULE, PTX)?;
            let mut b = func.builder();
            b.arg(&gv).arg(&uv).arg(&y).arg(&n64);
            launch(&mut b, n.div_ceil(256), 256)?;
            Ok(y)
        }
        Some(grad) => {
            let (ds, dl) = grad.storage_and_layout();
            contiguous(dl)?;
            let dy = match &*ds {
                Storage::Cuda(c) => c.as_cuda_slice::<T>()?.slice(dl.start_offset()..),
                _ => candle_core::bail!("fused swiglu backward: gradient not on the GPU"),
            };
            let out = dev.alloc_zeros::<T>(2 * n)?;
            let func = dev.get_or_load_custom_func(&format!("swiglu_bwd_{suf}"), MODULE, PTX)?;
            let mut b = func.builder();
            b.arg(&gv).arg(&uv).arg(&dy).arg(&out).arg(&n64);
            launch(&mut b, n.div_ceil(256), 256)?;
            Ok(out)
        }
    }
}

fn swiglu_dispatch(
    g: &CudaStorage,
    gl: &Layout,
    u: &CudaStorage,
    ul: &Layout,
    grad: Option<&Tensor>,
) -> candle_core::Result<CudaStorage> {
    contiguous(gl)?;
    contiguous(ul)?;
    if gl.shape() != ul.shape() {
        candle_core::bail!("fused swiglu: gate {:?}, up {:?}", gl.dims(), ul.dims());
    }
    if let Some(d) = grad {
        if d.shape() != gl.shape() || d.dtype() != g.dtype() {
            candle_core::bail!("fused swiglu backward: gradient of another shape or dtype");
        }
    }
    let dev = g.device().clone();
    Ok(match (&g.slice, &u.slice) {
        (CudaStorageSlice::F32(g), CudaStorageSlice::F32(u)) => CudaStorage::wrap_cuda_slice(
            swiglu_run::<f32>(&dev, "f32", (g, gl), (u, ul), grad)?,
            dev,
        ),
        (CudaStorageSlice::BF16(g), CudaStorageSlice::BF16(u)) => CudaStorage::wrap_cuda_slice(
            swiglu_run::<half::bf16>(&dev, "bf16", (g, gl), (u, ul), grad)?,
            dev,
        ),
        _ => candle_core::bail!("fused swiglu: gate and up must both be f32 or both bf16"),
    })
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("fused swiglu runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        g: &CudaStorage,
        gl: &Layout,
        u: &CudaStorage,
        ul: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        Ok((swiglu_dispatch(g, gl, u, ul, None)?, gl.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let op = SwiGluBackward {
            grad: grad.contiguous()?,
        };
        let packed = g.apply_op2_no_bwd(u, &op)?;
        let n = g.elem_count();
        let dg = packed.narrow(0, 0, n)?.reshape(g.shape())?;
        let du = packed.narrow(0, n, n)?.reshape(u.shape())?;
        Ok((Some(dg), Some(du)))
    }
}

impl CustomOp2 for SwiGluBackward {
    fn name(&self) -> &'static str {
        "fused-swiglu-backward"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("fused swiglu runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        g: &CudaStorage,
        gl: &Layout,
        u: &CudaStorage,
        ul: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let n = gl.shape().elem_count();
        Ok((
            swiglu_dispatch(g, gl, u, ul, Some(&self.grad))?,
            Shape::from(2 * n),
        ))
    }
}

/// [`SwiGlu`]: `silu(g) · u`.
pub fn swiglu(g: &Tensor, u: &Tensor) -> candle_core::Result<Tensor> {
    g.contiguous()?.apply_op2(&u.contiguous()?, SwiGlu)
}
