//! Fused causal attention for training on CUDA, with its backward
//! (`src/llm/cuda/kernels/attention.cu`): the `[batch, heads, seq, seq]` scores, their mask,
//! softmax and the gradients of all three never exist in memory, and grouped-query heads read
//! their shared keys and values without copies. Head size 64; f32 or bf16 inputs, f32
//! arithmetic.
//!
//! [`FlashAttention`] returns `[batch, heads, seq, head_dim + 1]` in f32: the attention output,
//! and in the last column each row's log-sum-exp, which the backward needs. Callers take
//! `narrow(3, 0, head_dim)`.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchArgs, PushKernelArg,
};
use candle_core::cuda_backend::CudaStorageSlice;
use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp3, Layout, Shape, Storage, Tensor};

pub(crate) const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/attention.ptx"));
pub(crate) const MODULE: &str = "sqlora_attention";
/// The only head size the kernels are built for.
pub const HEAD_DIM: usize = 64;
const BQ: usize = 64;
const BKV: usize = 64;

/// Causal attention of `q` `[b, n_head, s, 64]` over `k`, `v` `[b, n_kv, s, 64]`.
pub struct FlashAttention {
    pub scale: f32,
}

/// The backward's inputs besides q, k, v: the forward's output and its gradient.
struct Backward {
    fwd: Tensor,
    grad: Tensor,
    scale: f32,
}

struct Dims {
    b: usize,
    nh: usize,
    nkv: usize,
    s: usize,
}

fn dims(q: &Layout, k: &Layout, v: &Layout) -> candle_core::Result<Dims> {
    for l in [q, k, v] {
        if !l.is_contiguous() {
            candle_core::bail!("flash-attention needs contiguous q, k and v");
        }
    }
    let (b, nh, s, d) = q.shape().dims4()?;
    let (bk, nkv, sk, dk) = k.shape().dims4()?;
    if d != HEAD_DIM || dk != d || bk != b || sk != s || k.shape() != v.shape() {
        candle_core::bail!(
            "flash-attention: q {:?}, k {:?}, v {:?} (head size must be {HEAD_DIM})",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if nkv == 0 || nh % nkv != 0 || s == 0 {
        candle_core::bail!("flash-attention: {nh} query heads over {nkv} key/value heads");
    }
    Ok(Dims { b, nh, nkv, s })
}

type Slice<T> = CudaSlice<T>;

fn launch(
    b: &mut LaunchArgs<'_>,
    grid: (usize, usize, usize),
    block: usize,
) -> candle_core::Result<()> {
    super::layers::launch_grid(b, grid, block, 0)
}

/// The forward kernel on typed inputs.
#[allow(clippy::too_many_arguments)]
fn run_fwd<T: DeviceRepr>(
    dev: &CudaDevice,
    suf: &str,
    (q, ql): (&Slice<T>, &Layout),
    (k, kl): (&Slice<T>, &Layout),
    (v, vl): (&Slice<T>, &Layout),
    d: &Dims,
    scale: f32,
) -> candle_core::Result<Slice<f32>> {
    let (qv, kv, vv) = (
        q.slice(ql.start_offset()..),
        k.slice(kl.start_offset()..),
        v.slice(vl.start_offset()..),
    );
    let out = dev.alloc_zeros::<f32>(d.b * d.nh * d.s * (HEAD_DIM + 1))?;
    let func = dev.get_or_load_custom_func(&format!("attn_fwd_{suf}"), MODULE, PTX)?;
    let (nh, nkv, s) = (d.nh as i32, d.nkv as i32, d.s as i32);
    let mut b = func.builder();
    b.arg(&qv).arg(&kv).arg(&vv).arg(&out);
    b.arg(&nh).arg(&nkv).arg(&s).arg(&scale);
    launch(&mut b, (d.s.div_ceil(BQ), d.nh, d.b), BQ)?;
    Ok(out)
}

/// The two backward kernels on typed inputs: `[dq | dk | dv]` flattened, f32.
#[allow(clippy::too_many_arguments)]
fn run_bwd<T: DeviceRepr>(
    dev: &CudaDevice,
    suf: &str,
    (q, ql): (&Slice<T>, &Layout),
    (k, kl): (&Slice<T>, &Layout),
    (v, vl): (&Slice<T>, &Layout),
    fwd: &CudaView<'_, f32>,
    dout: &CudaView<'_, f32>,
    d: &Dims,
    scale: f32,
) -> candle_core::Result<Slice<f32>> {
    let (qv, kv, vv) = (
        q.slice(ql.start_offset()..),
        k.slice(kl.start_offset()..),
        v.slice(vl.start_offset()..),
    );
    let nq = d.b * d.nh * d.s * HEAD_DIM;
    let nk = d.b * d.nkv * d.s * HEAD_DIM;
    let mut out = dev.alloc_zeros::<f32>(nq + 2 * nk)?;
    let mut delta = dev.alloc_zeros::<f32>(d.b * d.nh * d.s)?;
    let (nh, nkv, s) = (d.nh as i32, d.nkv as i32, d.s as i32);
    {
        let (mut dq, mut rest) = out.split_at_mut(nq);
        let func = dev.get_or_load_custom_func(&format!("attn_bwd_dq_{suf}"), MODULE, PTX)?;
        let mut b = func.builder();
        b.arg(&qv)
            .arg(&kv)
            .arg(&vv)
            .arg(fwd)
            .arg(dout)
            .arg(&mut dq)
            .arg(&mut delta);
        b.arg(&nh).arg(&nkv).arg(&s).arg(&scale);
        launch(&mut b, (d.s.div_ceil(BQ), d.nh, d.b), BQ)?;

        let (mut dk, mut dv) = rest.split_at_mut(nk);
        let func = dev.get_or_load_custom_func(&format!("attn_bwd_dkv_{suf}"), MODULE, PTX)?;
        let mut b = func.builder();
        b.arg(&qv).arg(&kv).arg(&vv).arg(fwd).arg(dout).arg(&delta);
        b.arg(&mut dk).arg(&mut dv);
        b.arg(&nh).arg(&nkv).arg(&s).arg(&scale);
        launch(&mut b, (d.s.div_ceil(BKV), d.nkv, d.b), BKV)?;
    }
    Ok(out)
}

/// Runs `$run` with the typed slices of three storages of one dtype (f32 or bf16).
macro_rules! typed {
    ($run:ident, $dev:expr, $q:expr, $ql:expr, $k:expr, $kl:expr, $v:expr, $vl:expr,
     $($rest:expr),*) => {
        match (&$q.slice, &$k.slice, &$v.slice) {
            (CudaStorageSlice::F32(q), CudaStorageSlice::F32(k), CudaStorageSlice::F32(v)) => {
                $run($dev, "f32", (q, $ql), (k, $kl), (v, $vl), $($rest),*)
            }
            (CudaStorageSlice::BF16(q), CudaStorageSlice::BF16(k), CudaStorageSlice::BF16(v)) => {
                $run($dev, "bf16", (q, $ql), (k, $kl), (v, $vl), $($rest),*)
            }
            _ => candle_core::bail!("flash-attention: q, k and v must all be f32 or all bf16"),
        }
    };
}

fn f32_slice(t: &Storage) -> candle_core::Result<&Slice<f32>> {
    match t {
        Storage::Cuda(c) => c.as_cuda_slice::<f32>(),
        _ => candle_core::bail!("flash-attention: a tensor is not on the GPU"),
    }
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "flash-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("flash-attention runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        ql: &Layout,
        k: &CudaStorage,
        kl: &Layout,
        v: &CudaStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let d = dims(ql, kl, vl)?;
        let dev = q.device().clone();
        let out = typed!(run_fwd, &dev, q, ql, k, kl, v, vl, &d, self.scale)?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from((d.b, d.nh, d.s, HEAD_DIM + 1)),
        ))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dq, dk, dv) = backward_f32(q, k, v, res, grad, self.scale)?;
        Ok((
            Some(dq.to_dtype(q.dtype())?),
            Some(dk.to_dtype(k.dtype())?),
            Some(dv.to_dtype(v.dtype())?),
        ))
    }
}

impl CustomOp3 for Backward {
    fn name(&self) -> &'static str {
        "flash-attention-backward"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("flash-attention runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        ql: &Layout,
        k: &CudaStorage,
        kl: &Layout,
        v: &CudaStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let d = dims(ql, kl, vl)?;
        let want = (d.b, d.nh, d.s, HEAD_DIM + 1);
        if self.fwd.dims4()? != want || self.grad.dims4()? != want {
            candle_core::bail!("flash-attention backward: forward output of another shape");
        }
        let dev = q.device().clone();
        let (fs, fl) = self.fwd.storage_and_layout();
        let (gs, gl) = self.grad.storage_and_layout();
        if !fl.is_contiguous() || !gl.is_contiguous() {
            candle_core::bail!("flash-attention backward: non-contiguous forward output");
        }
        let fwd = f32_slice(&fs)?.slice(fl.start_offset()..);
        let dout = f32_slice(&gs)?.slice(gl.start_offset()..);
        let out = typed!(run_bwd, &dev, q, ql, k, kl, v, vl, &fwd, &dout, &d, self.scale)?;
        let n = out.len();
        Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(n)))
    }
}

/// The forward's whole output `[b, nh, s, 65]` f32 (each row's log-sum-exp last), outside
/// autograd (the hand-written training layer keeps it for its backward).
pub(crate) fn forward_packed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f32,
) -> candle_core::Result<Tensor> {
    q.apply_op3_no_bwd(k, v, &FlashAttention { scale })
}

/// `dq`, `dk`, `dv` in f32 given the forward's output `fwd` and its gradient `grad` (both
/// `[b, nh, s, 65]` f32), outside autograd.
pub(crate) fn backward_f32(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    fwd: &Tensor,
    grad: &Tensor,
    scale: f32,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let op = Backward {
        fwd: fwd.clone(),
        grad: grad.contiguous()?,
        scale,
    };
    let packed = q.apply_op3_no_bwd(k, v, &op)?;
    let (nq, nk) = (q.elem_count(), k.elem_count());
    Ok((
        packed.narrow(0, 0, nq)?.reshape(q.shape())?,
        packed.narrow(0, nq, nk)?.reshape(k.shape())?,
        packed.narrow(0, nq + nk, nk)?.reshape(v.shape())?,
    ))
}

/// Causal attention of `q` over `k`, `v` (see the module doc), as `[b, n_head, s, 64]` in f32.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> candle_core::Result<Tensor> {
    let out =
        q.contiguous()?
            .apply_op3(&k.contiguous()?, &v.contiguous()?, FlashAttention { scale })?;
    out.narrow(3, 0, HEAD_DIM)
}
