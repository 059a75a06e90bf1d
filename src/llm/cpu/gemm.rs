//! `y = x·Wᵀ` on the CPU with `W` an [`Int8Matrix`]: the rows of `x` are quantized to signed
//! bytes per block of 32 (scale = max|x|/127, as llama.cpp's Q8_0 activations), then each
//! output is `Σ_b s·sx·Σ(u·xq) + m·sx·Σxq` over the blocks. The byte products run as
//! AVX-512 VNNI `vpdpbusd` (16 output columns × 4 bytes per instruction, the weight layout is
//! made for it) where the CPU has it, else as portable code compiled for AVX2/FMA when the CPU
//! has those, else plain; the kernel is chosen once at run time (`SQLORA_CPU_KERNEL=vnni|avx2|
//! portable` forces one). Columns are split across the rayon pool; rows are taken four at a
//! time so each weight chunk loaded serves four rows.
//!
//! Owns the products and the activation quantization; never builds weights (that is
//! `blocks`), never knows which layer it serves.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::blocks::{Cell, Int8Matrix, BLOCK, GROUP};

/// Rows of `x` quantized per block of 32.
pub struct QuantRows {
    pub rows: usize,
    pub cols: usize,
    pub q: Vec<i8>,
    /// Per block: the scale.
    pub scale: Vec<f32>,
    /// Per block: the scale times the sum of the block's bytes.
    pub sum: Vec<f32>,
}

/// Quantizes `x` (`rows × cols`, `cols` a multiple of 32).
pub fn quantize_rows(x: &[f32], rows: usize, cols: usize) -> QuantRows {
    let nb = cols / BLOCK;
    let mut q = vec![0i8; rows * cols];
    let mut scale = vec![0f32; rows * nb];
    let mut sum = vec![0f32; rows * nb];
    #[cfg(target_arch = "x86_64")]
    let wide = Kernel::best() == Kernel::Vnni;
    let one = |(((xb, qb), s), t): (((&[f32], &mut [i8]), &mut f32), &mut f32)| {
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: the CPU has AVX-512 F/BW (Kernel::best checked); 32 values each.
            unsafe { vnni::quantize_block(xb, qb, s, t) };
            return;
        }
        quantize_block(xb, qb, s, t)
    };
    if rows * cols >= 1 << 16 {
        x.par_chunks_exact(BLOCK)
            .zip(q.par_chunks_exact_mut(BLOCK))
            .zip(scale.par_iter_mut())
            .zip(sum.par_iter_mut())
            .with_min_len(256)
            .for_each(one);
    } else {
        x.chunks_exact(BLOCK)
            .zip(q.chunks_exact_mut(BLOCK))
            .zip(scale.iter_mut())
            .zip(sum.iter_mut())
            .for_each(one);
    }
    QuantRows {
        rows,
        cols,
        q,
        scale,
        sum,
    }
}

/// One block: scale = max|x|/127, bytes = x/scale rounded half to even (as `vcvtps2dq`).
fn quantize_block(xb: &[f32], qb: &mut [i8], s: &mut f32, t: &mut f32) {
    let amax = xb.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut total = 0i32;
    for (o, &v) in qb.iter_mut().zip(xb) {
        let r = (v * inv).round_ties_even() as i32;
        *o = r as i8;
        total += r;
    }
    *s = d;
    *t = d * total as f32;
}

/// Which kernel runs the byte products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 F/BW + VNNI.
    Vnni,
    /// The portable kernel compiled for AVX2 and FMA.
    Avx2,
    /// The portable kernel as is.
    Portable,
}

impl Kernel {
    /// The fastest this CPU runs (or `SQLORA_CPU_KERNEL`'s choice, when the CPU can run it).
    pub fn best() -> Kernel {
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| {
            let wanted = std::env::var("SQLORA_CPU_KERNEL").ok();
            let can = Kernel::available();
            match wanted.as_deref() {
                Some("portable") => Kernel::Portable,
                Some("avx2") if can.contains(&Kernel::Avx2) => Kernel::Avx2,
                _ => can[0],
            }
        })
    }

    /// The kernels this CPU can run, fastest first.
    pub fn available() -> Vec<Kernel> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
            {
                v.push(Kernel::Vnni);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                v.push(Kernel::Avx2);
            }
        }
        v.push(Kernel::Portable);
        v
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Vnni => "AVX-512 VNNI",
            Kernel::Avx2 => "AVX2",
            Kernel::Portable => "portable",
        }
    }
}

/// Raw output pointer shared by the workers; each writes its own columns.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: workers write disjoint column ranges of the output.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    // A method, so that closures capture the whole `Out` (Send + Sync), not its raw field.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// `x·Wᵀ` for `x` `rows × w.cols()`, as `rows × w.rows()` row-major.
pub fn matmul(x: &[f32], rows: usize, w: &Int8Matrix) -> Vec<f32> {
    matmul_with(Kernel::best(), x, rows, w)
}

/// [`matmul`] with a given kernel (tests and benchmarks compare them).
pub fn matmul_with(kernel: Kernel, x: &[f32], rows: usize, w: &Int8Matrix) -> Vec<f32> {
    let (n, k) = (w.rows(), w.cols());
    assert_eq!(x.len(), rows * k, "input is not rows × {k}");
    let xq = quantize_rows(x, rows, k);
    let mut y = vec![0f32; rows * n];
    let out = Out(y.as_mut_ptr());
    let groups = n / GROUP;
    // Tasks of a few groups each: enough of them to balance two to a few dozen threads, big
    // enough that a task's weight panel is read once per four rows of x.
    let per = (groups / (rayon::current_num_threads() * 8)).clamp(1, 64);
    let tasks = groups.div_ceil(per);
    let cells = w.cells();
    let run = |t: usize| {
        let g0 = t * per;
        let g1 = (g0 + per).min(groups);
        // SAFETY: task `t` writes only the columns of groups g0..g1.
        unsafe { panel(kernel, cells, k / BLOCK, g0, g1, &xq, out.ptr(), n) };
    };
    if tasks > 1 && rows * n * k >= 1 << 18 {
        (0..tasks).into_par_iter().for_each(run);
    } else {
        (0..tasks).for_each(run);
    }
    y
}

/// Groups `g0..g1` of the output for every row of `xq`.
///
/// # Safety
/// `y` holds `xq.rows × ldy` floats and no one else writes these columns meanwhile.
unsafe fn panel(
    kernel: Kernel,
    cells: &[Cell],
    nb: usize,
    g0: usize,
    g1: usize,
    xq: &QuantRows,
    y: *mut f32,
    ldy: usize,
) {
    let mut g = g0;
    while g < g1 {
        let two = g + 1 < g1;
        let mut r = 0;
        while r < xq.rows {
            let mr = (xq.rows - r).min(4);
            match (kernel, mr, two) {
                #[cfg(target_arch = "x86_64")]
                (Kernel::Vnni, 4, true) => vnni::tile::<4, 2>(cells, nb, g, xq, r, y, ldy),
                #[cfg(target_arch = "x86_64")]
                (Kernel::Vnni, 4, false) => vnni::tile::<4, 1>(cells, nb, g, xq, r, y, ldy),
                #[cfg(target_arch = "x86_64")]
                (Kernel::Vnni, _, true) => {
                    for i in 0..mr {
                        vnni::tile::<1, 2>(cells, nb, g, xq, r + i, y, ldy);
                    }
                }
                #[cfg(target_arch = "x86_64")]
                (Kernel::Vnni, _, false) => {
                    for i in 0..mr {
                        vnni::tile::<1, 1>(cells, nb, g, xq, r + i, y, ldy);
                    }
                }
                #[cfg(target_arch = "x86_64")]
                (Kernel::Avx2, _, _) => {
                    for i in 0..mr {
                        portable_avx2(cells, nb, g, xq, r + i, y, ldy);
                        if two {
                            portable_avx2(cells, nb, g + 1, xq, r + i, y, ldy);
                        }
                    }
                }
                _ => {
                    for i in 0..mr {
                        portable(cells, nb, g, xq, r + i, y, ldy);
                        if two {
                            portable(cells, nb, g + 1, xq, r + i, y, ldy);
                        }
                    }
                }
            }
            r += mr;
        }
        g += if two { 2 } else { 1 };
    }
}

/// One row of `xq` by one group: the reference the vector kernels are held to.
#[inline(always)]
unsafe fn portable_body(
    cells: &[Cell],
    nb: usize,
    g: usize,
    xq: &QuantRows,
    r: usize,
    y: *mut f32,
    ldy: usize,
) {
    let mut acc = [0f32; GROUP];
    let xrow = &xq.q[r * xq.cols..(r + 1) * xq.cols];
    for b in 0..nb {
        let c = &cells[g * nb + b];
        let xb = &xrow[b * BLOCK..(b + 1) * BLOCK];
        let mut dot = [0i32; GROUP];
        for j in 0..BLOCK / 4 {
            let chunk = &c.q[j * 64..j * 64 + 64];
            for (l, d) in dot.iter_mut().enumerate() {
                for t in 0..4 {
                    *d += chunk[l * 4 + t] as i32 * xb[j * 4 + t] as i32;
                }
            }
        }
        let (sx, sm) = (xq.scale[r * nb + b], xq.sum[r * nb + b]);
        for l in 0..GROUP {
            acc[l] += c.s[l] * sx * dot[l] as f32 + c.m[l] * sm;
        }
    }
    let out = y.add(r * ldy + g * GROUP);
    for (l, a) in acc.iter().enumerate() {
        *out.add(l) = *a;
    }
}

unsafe fn portable(
    cells: &[Cell],
    nb: usize,
    g: usize,
    xq: &QuantRows,
    r: usize,
    y: *mut f32,
    ldy: usize,
) {
    portable_body(cells, nb, g, xq, r, y, ldy)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn portable_avx2(
    cells: &[Cell],
    nb: usize,
    g: usize,
    xq: &QuantRows,
    r: usize,
    y: *mut f32,
    ldy: usize,
) {
    portable_body(cells, nb, g, xq, r, y, ldy)
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{Cell, QuantRows, BLOCK, GROUP};

    /// [`super::quantize_block`] in two registers.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_block(xb: &[f32], qb: &mut [i8], s: &mut f32, t: &mut f32) {
        let a = _mm512_loadu_ps(xb.as_ptr());
        let b = _mm512_loadu_ps(xb.as_ptr().add(16));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        let d = amax / 127.0;
        let inv = _mm512_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        let qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, inv));
        let qbv = _mm512_cvtps_epi32(_mm512_mul_ps(b, inv));
        _mm_storeu_si128(qb.as_mut_ptr() as *mut __m128i, _mm512_cvtsepi32_epi8(qa));
        _mm_storeu_si128(
            qb.as_mut_ptr().add(16) as *mut __m128i,
            _mm512_cvtsepi32_epi8(qbv),
        );
        *s = d;
        *t = d * _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qbv)) as f32;
    }

    /// `MR` rows of `xq` from `r` by `G` groups from `g`: per block, eight `vpdpbusd` per row
    /// and group (each 16 columns × 4 bytes), then the block's scales and offsets in f32.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile<const MR: usize, const G: usize>(
        cells: &[Cell],
        nb: usize,
        g: usize,
        xq: &QuantRows,
        r: usize,
        y: *mut f32,
        ldy: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); G]; MR];
        let xbase = xq.q.as_ptr().add(r * xq.cols);
        let cbase = cells.as_ptr();
        for b in 0..nb {
            let mut dot = [[_mm512_setzero_si512(); G]; MR];
            let cell: [*const Cell; G] = std::array::from_fn(|i| cbase.add((g + i) * nb + b));
            for j in 0..BLOCK / 4 {
                let w: [__m512i; G] = std::array::from_fn(|i| {
                    _mm512_load_si512((*cell[i]).q.as_ptr().add(j * 64) as *const __m512i)
                });
                for (ri, row) in dot.iter_mut().enumerate() {
                    let xp = xbase.add(ri * xq.cols + b * BLOCK + j * 4) as *const i32;
                    let xb = _mm512_set1_epi32(xp.read_unaligned());
                    for (d, wi) in row.iter_mut().zip(&w) {
                        *d = _mm512_dpbusd_epi32(*d, *wi, xb);
                    }
                }
            }
            for (ri, (arow, drow)) in acc.iter_mut().zip(&dot).enumerate() {
                let at = (r + ri) * nb + b;
                let sx = _mm512_set1_ps(*xq.scale.get_unchecked(at));
                let sm = _mm512_set1_ps(*xq.sum.get_unchecked(at));
                for (i, (a, d)) in arow.iter_mut().zip(drow).enumerate() {
                    let s = _mm512_load_ps((*cell[i]).s.as_ptr());
                    let m = _mm512_load_ps((*cell[i]).m.as_ptr());
                    *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(*d), _mm512_mul_ps(s, sx), *a);
                    *a = _mm512_fmadd_ps(m, sm, *a);
                }
            }
        }
        for (ri, arow) in acc.iter().enumerate() {
            for (i, a) in arow.iter().enumerate() {
                _mm512_storeu_ps(y.add((r + ri) * ldy + (g + i) * GROUP), *a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn weights(rows: usize, cols: usize) -> Int8Matrix {
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 2654435761usize % 4093) as f32 / 2046.0 - 1.0) * 0.05)
            .collect();
        Int8Matrix::from_f32(&Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()).unwrap()
    }

    fn input(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                ((i * 40503 % 1021) as f32 / 510.0 - 1.0) * if i % 97 == 0 { 8.0 } else { 1.0 }
            })
            .collect()
    }

    /// Every kernel this CPU runs gives the portable kernel's numbers (to f32 rounding of the
    /// summation order), at every remainder of rows and groups; and all are within the
    /// activations' quantization error of the dense f32 product.
    #[test]
    fn kernels_agree_with_each_other_and_with_f32() {
        for (rows, n, k) in [
            (1, 16, 32),
            (3, 48, 64),
            (5, 80, 896),
            (9, 32, 128),
            (555, 96, 256),
        ] {
            let w = weights(n, k);
            let x = input(rows, k);
            let want = matmul_with(Kernel::Portable, &x, rows, &w);
            for kernel in Kernel::available() {
                let got = matmul_with(kernel, &x, rows, &w);
                for (a, b) in want.iter().zip(&got) {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                        "{kernel:?} {rows}x{n}x{k}: {a} vs {b}"
                    );
                }
            }
            let dense = w.dequantize(&Device::Cpu).unwrap();
            let xt = Tensor::from_vec(x.clone(), (rows, k), &Device::Cpu).unwrap();
            let exact = xt
                .matmul(&dense.t().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap();
            let exact = exact.to_vec1::<f32>().unwrap();
            let scale = exact.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (a, b) in exact.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 0.02 * scale,
                    "{rows}x{n}x{k}: f32 {a} vs int8 {b}"
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_quantization_gives_the_portable_bytes() {
        if !Kernel::available().contains(&Kernel::Vnni) {
            return; // nothing to compare on this CPU
        }
        let x = input(64, 32);
        for xb in x.chunks_exact(32) {
            let (mut q1, mut q2) = ([0i8; 32], [0i8; 32]);
            let (mut s1, mut t1, mut s2, mut t2) = (0f32, 0f32, 0f32, 0f32);
            quantize_block(xb, &mut q1, &mut s1, &mut t1);
            unsafe { vnni::quantize_block(xb, &mut q2, &mut s2, &mut t2) };
            assert_eq!((q1, s1, t1), (q2, s2, t2));
        }
    }

    #[test]
    fn a_zero_row_gives_zero() {
        let w = weights(32, 64);
        let y = matmul(&[0.0; 64], 1, &w);
        assert!(y.iter().all(|v| *v == 0.0));
    }
}
