//! `y = x·Wᵀ` on the CPU with `W` an [`Int8Matrix`]: the rows of `x` are quantized to signed
//! bytes per block of 32 (scale = max|x|/127, as llama.cpp's Q8_0 activations), then each
//! output is `Σ_b s·sx·Σ(u·xq) + m·sx·Σxq` over the blocks. The byte products run as
//! AVX-512 VNNI `vpdpbusd` (16 output columns × 4 bytes per instruction, the weight layout is
//! made for it) where the CPU has it, else as AVX2 `vpmaddubsw` + `vpmaddwd` (eight columns a
//! register) where it has that, else plain; the kernel is chosen once at run time (`SQLORA_CPU_KERNEL=avx2|portable`
//! picks a slower one for comparison; a kernel the CPU cannot run is never run). Columns are split across the rayon pool; rows are taken four at a
//! time so each weight chunk loaded serves four rows.
//!
//! Owns the products and the activation quantization; never builds weights (that is
//! `blocks`), never knows which layer it serves.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::blocks::{Int8Matrix, Kind, BLOCK, GROUP};

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
    type Block<'a> = (((&'a [f32], &'a mut [i8]), &'a mut f32), &'a mut f32);
    let one = |(((xb, qb), s), t): Block| {
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

/// Adds a LoRA delta `scale · (x·Aᵀ)·Bᵀ` to `y` (`rows × n`) for a few rows of `x` (`rows × k`),
/// with `A` `rank × k` and `B` `n × rank` in f32: the decode path, where candle's two small
/// matrix products per projection cost more in dispatch than in arithmetic.
pub fn add_lora(
    x: &[f32],
    rows: usize,
    a: &[f32],
    b: &[f32],
    rank: usize,
    scale: f32,
    y: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if Kernel::available().contains(&Kernel::Avx2) {
        // SAFETY: the CPU has AVX2 and FMA (that is what Kernel::Avx2 being available means).
        unsafe { add_lora_avx2(x, rows, a, b, rank, scale, y) };
        return;
    }
    add_lora_body(x, rows, a, b, rank, scale, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn add_lora_avx2(
    x: &[f32],
    rows: usize,
    a: &[f32],
    b: &[f32],
    rank: usize,
    scale: f32,
    y: &mut [f32],
) {
    add_lora_body(x, rows, a, b, rank, scale, y)
}

#[inline(always)]
fn add_lora_body(
    x: &[f32],
    rows: usize,
    a: &[f32],
    b: &[f32],
    rank: usize,
    scale: f32,
    y: &mut [f32],
) {
    let k = x.len() / rows.max(1);
    let n = y.len() / rows.max(1);
    let mut t = vec![0f32; rank];
    for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
        for (ti, ar) in t.iter_mut().zip(a.chunks_exact(k)) {
            // Eight partial sums, so the compiler can keep them in one vector register.
            let mut acc = [0f32; 8];
            for (xc, ac) in xr.chunks_exact(8).zip(ar.chunks_exact(8)) {
                for i in 0..8 {
                    acc[i] += xc[i] * ac[i];
                }
            }
            let tail: f32 = xr
                .chunks_exact(8)
                .remainder()
                .iter()
                .zip(ar.chunks_exact(8).remainder())
                .map(|(p, q)| p * q)
                .sum();
            *ti = (acc.iter().sum::<f32>() + tail) * scale;
        }
        for (yo, br) in yr.iter_mut().zip(b.chunks_exact(rank)) {
            *yo += br.iter().zip(&t).map(|(p, q)| p * q).sum::<f32>();
        }
    }
}

/// Which kernel runs the byte products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 F/BW + VNNI.
    Vnni,
    /// AVX2 (with FMA and F16C): `vpmaddubsw` byte products, eight rows a register.
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
    pub fn available() -> &'static [Kernel] {
        static AVAILABLE: OnceLock<Vec<Kernel>> = OnceLock::new();
        AVAILABLE.get_or_init(Kernel::detect)
    }

    fn detect() -> Vec<Kernel> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
            {
                v.push(Kernel::Vnni);
            }
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
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
    // The kernels index the cells by the shape: hold the matrix to it (its constructors do).
    assert_eq!(Some(w.bytes().len()), Int8Matrix::size(w.kind(), n, k));
    // A kernel this CPU cannot run is never run (its instructions would be undefined).
    let kernel = if Kernel::available().contains(&kernel) {
        kernel
    } else {
        Kernel::Portable
    };
    let xq = quantize_rows(x, rows, k);
    let mut y = vec![0f32; rows * n];
    let out = Out(y.as_mut_ptr());
    let groups = n / GROUP;
    // Tasks of a few groups each: enough of them to balance two to a few dozen threads, big
    // enough that a task's weight panel is read once per four rows of x.
    // Whole passes of the kernel: four groups for few rows, two for many.
    let pass = if rows < 4 { 4 } else { 2 };
    let per = (groups / (rayon::current_num_threads() * 8))
        .clamp(1, 64)
        .next_multiple_of(pass);
    let tasks = groups.div_ceil(per);
    let m = Mat {
        cells: w.bytes(),
        kind: w.kind(),
        nb: k / BLOCK,
    };
    let run = |t: usize| {
        let g0 = t * per;
        let g1 = (g0 + per).min(groups);
        // SAFETY: task `t` writes only the columns of groups g0..g1.
        unsafe { panel(kernel, &m, g0, g1, &xq, out.ptr(), n) };
    };
    if tasks > 1 && rows * n * k >= 1 << 18 {
        (0..tasks).into_par_iter().for_each(run);
    } else {
        (0..tasks).for_each(run);
    }
    y
}

/// A weight's cells as the kernels read them.
struct Mat<'a> {
    cells: &'a [u8],
    kind: Kind,
    /// Blocks per row.
    nb: usize,
}

/// Groups `g0..g1` of the output for every row of `xq`.
///
/// # Safety
/// `y` holds `xq.rows × ldy` floats and no one else writes these columns meanwhile.
unsafe fn panel(
    kernel: Kernel,
    m: &Mat,
    g0: usize,
    g1: usize,
    xq: &QuantRows,
    y: *mut f32,
    ldy: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Vnni {
        match m.kind {
            Kind::U8 => vnni::panel::<{ vnni::U8 }>(m, g0, g1, xq, y, ldy),
            Kind::Q8 => vnni::panel::<{ vnni::Q8 }>(m, g0, g1, xq, y, ldy),
            Kind::Q5 => vnni::panel::<{ vnni::Q5 }>(m, g0, g1, xq, y, ldy),
            Kind::Q4 => vnni::panel::<{ vnni::Q4 }>(m, g0, g1, xq, y, ldy),
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx2 {
        match m.kind {
            Kind::U8 => avx2::panel::<{ vnni::U8 }>(m, g0, g1, xq, y, ldy),
            Kind::Q8 => avx2::panel::<{ vnni::Q8 }>(m, g0, g1, xq, y, ldy),
            Kind::Q5 => avx2::panel::<{ vnni::Q5 }>(m, g0, g1, xq, y, ldy),
            Kind::Q4 => avx2::panel::<{ vnni::Q4 }>(m, g0, g1, xq, y, ldy),
        }
        return;
    }
    for g in g0..g1 {
        for r in 0..xq.rows {
            portable(m, g, xq, r, y, ldy);
        }
    }
}

/// One row of `xq` by one group: the reference the vector kernels are held to.
unsafe fn portable(m: &Mat, g: usize, xq: &QuantRows, r: usize, y: *mut f32, ldy: usize) {
    let (nb, cb) = (m.nb, m.kind.cell_bytes());
    let mut acc = [0f32; GROUP];
    let xrow = &xq.q[r * xq.cols..(r + 1) * xq.cols];
    for b in 0..nb {
        let cell = &m.cells[(g * nb + b) * cb..][..cb];
        let xb = &xrow[b * BLOCK..(b + 1) * BLOCK];
        let mut u = [0u8; GROUP * BLOCK];
        for (pos, v) in u.iter_mut().enumerate() {
            *v = m.kind.byte(cell, pos);
        }
        let mut dot = [0i32; GROUP];
        for j in 0..BLOCK / 4 {
            let chunk = &u[j * 64..j * 64 + 64];
            for (l, d) in dot.iter_mut().enumerate() {
                for t in 0..4 {
                    *d += chunk[l * 4 + t] as i32 * xb[j * 4 + t] as i32;
                }
            }
        }
        let (sx, sm) = (xq.scale[r * nb + b], xq.sum[r * nb + b]);
        for (l, (a, d)) in acc.iter_mut().zip(dot).enumerate() {
            let (s, mm) = m.kind.scale(cell, l);
            *a += s * sx * d as f32 + mm * sm;
        }
    }
    let out = y.add(r * ldy + g * GROUP);
    for (l, a) in acc.iter().enumerate() {
        *out.add(l) = *a;
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{Kind, Mat, QuantRows, BLOCK, GROUP};

    pub const U8: u8 = 0;
    pub const Q8: u8 = 1;
    pub const Q5: u8 = 2;
    pub const Q4: u8 = 3;

    const fn kind(k: u8) -> Kind {
        match k {
            U8 => Kind::U8,
            Q8 => Kind::Q8,
            Q5 => Kind::Q5,
            _ => Kind::Q4,
        }
    }

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

    /// Groups `g0..g1` for every row: two groups and four rows at a time.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn panel<const K: u8>(
        m: &Mat,
        g0: usize,
        g1: usize,
        xq: &QuantRows,
        y: *mut f32,
        ldy: usize,
    ) {
        let mut g = g0;
        while g < g1 {
            // Few rows (decode): four groups per pass, so that enough independent sums are in
            // flight to hide vpdpbusd's latency.
            if xq.rows < 4 && g + 4 <= g1 {
                (0..xq.rows).for_each(|r| tile::<K, 1, 4>(m, g, xq, r, y, ldy));
                g += 4;
                continue;
            }
            let two = g + 1 < g1;
            let mut r = 0;
            while r < xq.rows {
                let mr = (xq.rows - r).min(4);
                match (mr, two) {
                    (4, true) => tile::<K, 4, 2>(m, g, xq, r, y, ldy),
                    (4, false) => tile::<K, 4, 1>(m, g, xq, r, y, ldy),
                    (_, true) => (r..r + mr).for_each(|r| tile::<K, 1, 2>(m, g, xq, r, y, ldy)),
                    (_, false) => (r..r + mr).for_each(|r| tile::<K, 1, 1>(m, g, xq, r, y, ldy)),
                }
                r += mr;
            }
            g += if two { 2 } else { 1 };
        }
    }

    /// Chunk `j` of a cell as 64 unsigned bytes (16 rows × 4).
    #[inline(always)]
    unsafe fn chunk<const K: u8>(cell: *const u8, j: usize) -> __m512i {
        match K {
            U8 => _mm512_loadu_si512(cell.add(Kind::U8_Q + j * 64) as *const __m512i),
            Q8 => _mm512_xor_si512(
                _mm512_loadu_si512(cell.add(j * 64) as *const __m512i),
                _mm512_set1_epi8(-128),
            ),
            _ => {
                let v = _mm512_loadu_si512(cell.add((j / 2) * 64) as *const __m512i);
                let v = if j % 2 == 1 {
                    _mm512_srli_epi16::<4>(v)
                } else {
                    v
                };
                let v = _mm512_and_si512(v, _mm512_set1_epi8(0x0f));
                if K == Q5 {
                    let high = (cell.add(Kind::Q5_QH + j * 8) as *const u64).read_unaligned();
                    _mm512_mask_add_epi8(v, high, v, _mm512_set1_epi8(0x10))
                } else {
                    v
                }
            }
        }
    }

    /// The cell's 16 scales and offsets.
    #[inline(always)]
    unsafe fn scales<const K: u8>(cell: *const u8) -> (__m512, __m512) {
        let half = |o: usize| _mm512_cvtph_ps(_mm256_loadu_si256(cell.add(o) as *const __m256i));
        let f = |o: usize| _mm512_loadu_ps(cell.add(o) as *const f32);
        match K {
            U8 => (f(Kind::U8_S), f(Kind::U8_M)),
            Q4 => (f(Kind::Q4_S), f(Kind::Q4_M)),
            _ => {
                let s = half(if K == Q8 { Kind::Q8_D } else { Kind::Q5_D });
                let factor = kind(K).offset_factor().unwrap_or(0.0);
                (s, _mm512_mul_ps(s, _mm512_set1_ps(factor)))
            }
        }
    }

    /// `MR` rows of `xq` from `r` by `G` groups from `g`: per block, eight `vpdpbusd` per row
    /// and group (each 16 columns × 4 bytes), then the block's scales and offsets in f32.
    #[inline(always)]
    unsafe fn tile<const K: u8, const MR: usize, const G: usize>(
        m: &Mat,
        g: usize,
        xq: &QuantRows,
        r: usize,
        y: *mut f32,
        ldy: usize,
    ) {
        let (nb, cb) = (m.nb, kind(K).cell_bytes());
        let mut acc = [[_mm512_setzero_ps(); G]; MR];
        let xbase = xq.q.as_ptr().add(r * xq.cols);
        let base = m.cells.as_ptr();
        // One row: even and odd chunks in separate sums (more independent chains).
        let split = if MR == 1 { 2 } else { 1 };
        for b in 0..nb {
            let mut dot = [[[_mm512_setzero_si512(); G]; MR]; 2];
            let cell: [*const u8; G] = std::array::from_fn(|i| base.add(((g + i) * nb + b) * cb));
            for j in 0..BLOCK / 4 {
                let w: [__m512i; G] = std::array::from_fn(|i| chunk::<K>(cell[i], j));
                for (ri, row) in dot[j % split].iter_mut().enumerate() {
                    let xp = xbase.add(ri * xq.cols + b * BLOCK + j * 4) as *const i32;
                    let xb = _mm512_set1_epi32(xp.read_unaligned());
                    for (d, wi) in row.iter_mut().zip(&w) {
                        *d = _mm512_dpbusd_epi32(*d, *wi, xb);
                    }
                }
            }
            let [mut dot, odd] = dot;
            if split == 2 {
                for (row, orow) in dot.iter_mut().zip(&odd) {
                    for (d, o) in row.iter_mut().zip(orow) {
                        *d = _mm512_add_epi32(*d, *o);
                    }
                }
            }
            let sm: [(__m512, __m512); G] = std::array::from_fn(|i| scales::<K>(cell[i]));
            for (ri, (arow, drow)) in acc.iter_mut().zip(&dot).enumerate() {
                let at = (r + ri) * nb + b;
                let sx = _mm512_set1_ps(*xq.scale.get_unchecked(at));
                let sum = _mm512_set1_ps(*xq.sum.get_unchecked(at));
                for ((a, d), (s, mm)) in arow.iter_mut().zip(drow).zip(&sm) {
                    *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(*d), _mm512_mul_ps(*s, sx), *a);
                    *a = _mm512_fmadd_ps(*mm, sum, *a);
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

/// The kernel for CPUs with AVX2 but not AVX-512 VNNI (most AMD Zen 2/3 and desktop Intel):
/// the byte products as `vpmaddubsw` (unsigned weight byte × signed activation byte, pairs
/// summed to i16) then `vpmaddwd` by ones (to i32), eight output rows per 256-bit register.
/// A pair of products can only overflow i16 where a weight byte exceeds 127 (the 8-bit kinds):
/// there each byte is split into its two nibbles, multiplied apart, and the high one's sum
/// shifted left by four. Exact: the same integer sums as the portable kernel.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::vnni::{Q4, Q5, Q8, U8};
    use super::{Kind, Mat, QuantRows, BLOCK, GROUP};

    const fn kind(k: u8) -> Kind {
        match k {
            U8 => Kind::U8,
            Q8 => Kind::Q8,
            Q5 => Kind::Q5,
            _ => Kind::Q4,
        }
    }

    /// Groups `g0..g1` for every row: one group and up to four rows at a time (one row by two
    /// groups while decoding).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn panel<const K: u8>(
        m: &Mat,
        g0: usize,
        g1: usize,
        xq: &QuantRows,
        y: *mut f32,
        ldy: usize,
    ) {
        let mut g = g0;
        while g < g1 {
            if xq.rows < 4 && g + 2 <= g1 {
                (0..xq.rows).for_each(|r| tile::<K, 1, 2>(m, g, xq, r, y, ldy));
                g += 2;
                continue;
            }
            let mut r = 0;
            while r < xq.rows {
                match xq.rows - r {
                    1 => tile::<K, 1, 1>(m, g, xq, r, y, ldy),
                    2 => tile::<K, 2, 1>(m, g, xq, r, y, ldy),
                    3 => tile::<K, 3, 1>(m, g, xq, r, y, ldy),
                    _ => tile::<K, 4, 1>(m, g, xq, r, y, ldy),
                }
                r += (xq.rows - r).min(4);
            }
            g += 1;
        }
    }

    /// 0xff in each byte of 32 whose bit of `bits` is set (byte `i` ↔ bit `i`).
    #[inline(always)]
    unsafe fn bit_bytes(bits: u32) -> __m256i {
        // Byte i takes byte i/8 of `bits`, then keeps bit i%8 of it.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_setr_epi8(
                0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3,
                3, 3, 3, 3,
            ),
        );
        let pick = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        _mm256_cmpeq_epi8(_mm256_and_si256(spread, pick), pick)
    }

    /// Half `h` (rows 8h..8h+8) of chunk `j` of a cell as 32 unsigned bytes.
    #[inline(always)]
    unsafe fn half<const K: u8>(cell: *const u8, j: usize, h: usize) -> __m256i {
        match K {
            U8 => _mm256_loadu_si256(cell.add(Kind::U8_Q + j * 64 + h * 32) as *const __m256i),
            Q8 => _mm256_xor_si256(
                _mm256_loadu_si256(cell.add(j * 64 + h * 32) as *const __m256i),
                _mm256_set1_epi8(-128),
            ),
            _ => {
                let v = _mm256_loadu_si256(cell.add((j / 2) * 64 + h * 32) as *const __m256i);
                let v = if j % 2 == 1 {
                    _mm256_srli_epi16::<4>(v)
                } else {
                    v
                };
                let v = _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
                if K == Q5 {
                    let high =
                        (cell.add(Kind::Q5_QH + j * 8 + h * 4) as *const u32).read_unaligned();
                    _mm256_add_epi8(v, _mm256_and_si256(bit_bytes(high), _mm256_set1_epi8(0x10)))
                } else {
                    v
                }
            }
        }
    }

    /// Per i32 lane (row), the sum of its four byte products `w·x`.
    #[inline(always)]
    unsafe fn dot4<const K: u8>(w: __m256i, x: __m256i) -> __m256i {
        let ones = _mm256_set1_epi16(1);
        if K == Q5 || K == Q4 {
            return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones);
        }
        let low = _mm256_and_si256(w, _mm256_set1_epi8(0x0f));
        let high = _mm256_and_si256(_mm256_srli_epi16::<4>(w), _mm256_set1_epi8(0x0f));
        let lo = _mm256_madd_epi16(_mm256_maddubs_epi16(low, x), ones);
        let hi = _mm256_madd_epi16(_mm256_maddubs_epi16(high, x), ones);
        _mm256_add_epi32(lo, _mm256_slli_epi32::<4>(hi))
    }

    /// Half `h`'s eight scales and offsets.
    #[inline(always)]
    unsafe fn scales<const K: u8>(cell: *const u8, h: usize) -> (__m256, __m256) {
        let f = |o: usize| _mm256_loadu_ps(cell.add(o + h * 32) as *const f32);
        match K {
            U8 => (f(Kind::U8_S), f(Kind::U8_M)),
            Q4 => (f(Kind::Q4_S), f(Kind::Q4_M)),
            _ => {
                let o = if K == Q8 { Kind::Q8_D } else { Kind::Q5_D };
                let s = _mm256_cvtph_ps(_mm_loadu_si128(cell.add(o + h * 16) as *const __m128i));
                let factor = kind(K).offset_factor().unwrap_or(0.0);
                (s, _mm256_mul_ps(s, _mm256_set1_ps(factor)))
            }
        }
    }

    /// `MR` rows of `xq` from `r` by `G` groups from `g`, as `vnni::tile` but eight lanes a
    /// register (two per group).
    #[inline(always)]
    unsafe fn tile<const K: u8, const MR: usize, const G: usize>(
        m: &Mat,
        g: usize,
        xq: &QuantRows,
        r: usize,
        y: *mut f32,
        ldy: usize,
    ) {
        let (nb, cb) = (m.nb, kind(K).cell_bytes());
        let mut acc = [[[_mm256_setzero_ps(); 2]; G]; MR];
        let xbase = xq.q.as_ptr().add(r * xq.cols);
        let base = m.cells.as_ptr();
        for b in 0..nb {
            let mut dot = [[[_mm256_setzero_si256(); 2]; G]; MR];
            let cell: [*const u8; G] = std::array::from_fn(|i| base.add(((g + i) * nb + b) * cb));
            for j in 0..BLOCK / 4 {
                let w: [[__m256i; 2]; G] =
                    std::array::from_fn(|i| [half::<K>(cell[i], j, 0), half::<K>(cell[i], j, 1)]);
                for (ri, row) in dot.iter_mut().enumerate() {
                    let xp = xbase.add(ri * xq.cols + b * BLOCK + j * 4) as *const i32;
                    let xb = _mm256_set1_epi32(xp.read_unaligned());
                    for (d, wi) in row.iter_mut().zip(&w) {
                        d[0] = _mm256_add_epi32(d[0], dot4::<K>(wi[0], xb));
                        d[1] = _mm256_add_epi32(d[1], dot4::<K>(wi[1], xb));
                    }
                }
            }
            let sm: [[(__m256, __m256); 2]; G] =
                std::array::from_fn(|i| [scales::<K>(cell[i], 0), scales::<K>(cell[i], 1)]);
            for (ri, (arow, drow)) in acc.iter_mut().zip(&dot).enumerate() {
                let at = (r + ri) * nb + b;
                let sx = _mm256_set1_ps(*xq.scale.get_unchecked(at));
                let sum = _mm256_set1_ps(*xq.sum.get_unchecked(at));
                for ((a, d), s) in arow.iter_mut().zip(drow).zip(&sm) {
                    for h in 0..2 {
                        let (sc, mm) = s[h];
                        a[h] =
                            _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[h]), _mm256_mul_ps(sc, sx), a[h]);
                        a[h] = _mm256_fmadd_ps(mm, sum, a[h]);
                    }
                }
            }
        }
        for (ri, arow) in acc.iter().enumerate() {
            for (i, a) in arow.iter().enumerate() {
                let out = y.add((r + ri) * ldy + (g + i) * GROUP);
                _mm256_storeu_ps(out, a[0]);
                _mm256_storeu_ps(out.add(8), a[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// A random-ish weight in `dtype`'s kind (`None`: from f32, kind U8).
    fn weights(rows: usize, cols: usize, dtype: Option<GgmlDType>) -> Int8Matrix {
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 2654435761usize % 4093) as f32 / 2046.0 - 1.0) * 0.05)
            .collect();
        let t = Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap();
        match dtype {
            None => Int8Matrix::from_f32(&t).unwrap(),
            Some(d) => Int8Matrix::from_qtensor(&QTensor::quantize(&t, d).unwrap()).unwrap(),
        }
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
        let shapes = [
            (1, 16, 256),
            (3, 48, 512),
            (5, 80, 896),
            (9, 32, 128),
            (555, 96, 256),
        ];
        let dtypes = [
            None,
            Some(GgmlDType::Q8_0),
            Some(GgmlDType::Q5_0),
            Some(GgmlDType::Q4K),
        ];
        for ((rows, n, k), dtype) in shapes.into_iter().flat_map(|s| dtypes.map(|d| (s, d))) {
            if dtype == Some(GgmlDType::Q4K) && k % 256 != 0 {
                continue;
            }
            let w = weights(n, k, dtype);
            let x = input(rows, k);
            let want = matmul_with(Kernel::Portable, &x, rows, &w);
            for &kernel in Kernel::available() {
                let got = matmul_with(kernel, &x, rows, &w);
                for (a, b) in want.iter().zip(&got) {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                        "{kernel:?} {:?} {rows}x{n}x{k}: {a} vs {b}",
                        w.kind()
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
            // Each activation is off by at most half its block's step: the product by at most
            // Σ |w|·step/2 (plus f32 rounding).
            let xq = quantize_rows(&x, rows, k);
            let wd = dense.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (i, (a, b)) in exact.iter().zip(&want).enumerate() {
                let (r, c) = (i / n, i % n);
                let bound: f32 = (0..k)
                    .map(|j| wd[c * k + j].abs() * xq.scale[r * (k / BLOCK) + j / BLOCK] / 2.0)
                    .sum();
                assert!(
                    (a - b).abs() <= bound * 1.01 + 1e-5,
                    "{:?} {rows}x{n}x{k}: f32 {a} vs int8 {b} (bound {bound})",
                    w.kind()
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
    fn the_lora_delta_is_the_matrix_product() {
        let (rows, k, n, rank) = (3, 70, 24, 5);
        let x: Vec<f32> = input(rows, k);
        let a: Vec<f32> = (0..rank * k).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
        let b: Vec<f32> = (0..n * rank).map(|i| (i % 5) as f32 * 0.2 - 0.4).collect();
        let mut y = vec![1f32; rows * n];
        add_lora(&x, rows, &a, &b, rank, 0.5, &mut y);
        for r in 0..rows {
            for o in 0..n {
                let want: f32 = 1.0
                    + 0.5
                        * (0..rank)
                            .map(|i| {
                                b[o * rank + i]
                                    * (0..k).map(|j| x[r * k + j] * a[i * k + j]).sum::<f32>()
                            })
                            .sum::<f32>();
                assert!(
                    (y[r * n + o] - want).abs() < 1e-3 * (1.0 + want.abs()),
                    "{r},{o}"
                );
            }
        }
    }

    #[test]
    fn a_zero_row_gives_zero() {
        let w = weights(32, 64, None);
        let y = matmul(&[0.0; 64], 1, &w);
        assert!(y.iter().all(|v| *v == 0.0));
    }
}
