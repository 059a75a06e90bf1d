//! sqlora's own CPU weight format, [`Int8Matrix`]: every 32 weights of a row are `s·u + m`
//! with `u` an unsigned integer of at most 8 bits, laid out for the VNNI product of `gemm`: 16
//! rows (one *group*) by one block of 32 columns form a *cell*, whose bytes `0..512` in logical
//! order put, for chunk `j` (0..8), bytes `4j..4j+4` of each of the 16 rows side by side
//! (`64j + 4·row + t`). How a cell stores them is the matrix's [`Kind`], chosen from the GGUF
//! type so that the conversion is exact and decode reads about what the GGUF holds:
//!
//! | kind | from | cell | bytes / weight |
//! |---|---|---|---|
//! | `Q5` | Q5_0, Q4_0 | low nibbles, a high-bit plane, an f16 scale per row (`m = −16·s`) | 0.69 |
//! | `Q4` | Q4_K | nibbles, f32 scale and offset per row | 0.75 |
//! | `Q8` | Q8_0 | signed bytes, an f16 scale per row (`m = −128·s`) | 1.06 |
//! | `U8` | anything else (Q6_K, f16, f32, a merged adapter) | bytes, f32 scale and offset | 1.25 |
//!
//! `U8` quantizes each block to 256 levels between its minimum and maximum: for Q6_K (64
//! levels per 16 weights) that adds up to half a step of the block's whole range, a quarter of
//! a Q6_K step where the block's two halves have like scales, more where they do not.
//!
//! Owns the format, the conversions and dequantization; never multiplies (that is `gemm`),
//! never reads or writes files (`store`).

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// Weights per block (the scale's reach along a row).
pub const BLOCK: usize = 32;
/// Rows per group (one 512-bit register of f32 or i32 lanes).
pub const GROUP: usize = 16;

/// How a matrix's cells hold their bytes (see the module's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    U8,
    Q8,
    Q5,
    Q4,
}

impl Kind {
    /// Bytes of one cell (16 rows × 32 weights).
    pub const fn cell_bytes(self) -> usize {
        match self {
            Kind::U8 => 640,
            Kind::Q8 => 544,
            Kind::Q5 => 352,
            Kind::Q4 => 384,
        }
    }

    /// The kind a GGUF type converts to exactly (`U8` for the rest, through f32).
    fn of(dtype: GgmlDType) -> Kind {
        match dtype {
            GgmlDType::Q8_0 => Kind::Q8,
            GgmlDType::Q5_0 | GgmlDType::Q4_0 => Kind::Q5,
            GgmlDType::Q4K => Kind::Q4,
            _ => Kind::U8,
        }
    }

    /// Byte offsets within a cell: (s, m) for kinds with f32 scales and offsets; the f16 scales
    /// for the others.
    pub const U8_S: usize = 0;
    pub const U8_M: usize = 64;
    pub const U8_Q: usize = 128;
    pub const Q8_D: usize = 512;
    pub const Q5_QH: usize = 256;
    pub const Q5_D: usize = 320;
    pub const Q4_S: usize = 256;
    pub const Q4_M: usize = 320;

    /// The offset `m` of kinds that derive it from the scale (`m = factor·s`).
    pub const fn offset_factor(self) -> Option<f32> {
        match self {
            Kind::Q8 => Some(-128.0),
            Kind::Q5 => Some(-16.0),
            _ => None,
        }
    }

    /// Logical byte `pos` (0..512) of a cell.
    #[inline(always)]
    pub fn byte(self, cell: &[u8], pos: usize) -> u8 {
        match self {
            Kind::U8 => cell[Kind::U8_Q + pos],
            Kind::Q8 => cell[pos] ^ 0x80,
            Kind::Q5 | Kind::Q4 => {
                let (j, rest) = (pos / 64, pos % 64);
                let nib = (cell[(j / 2) * 64 + rest] >> (4 * (j % 2))) & 0x0f;
                if self == Kind::Q5 {
                    nib | (((cell[Kind::Q5_QH + pos / 8] >> (pos % 8)) & 1) << 4)
                } else {
                    nib
                }
            }
        }
    }

    /// Row `lane`'s scale and offset in a cell.
    #[inline(always)]
    pub fn scale(self, cell: &[u8], lane: usize) -> (f32, f32) {
        let f32_at = |o: usize| f32::from_le_bytes(cell[o..o + 4].try_into().unwrap());
        let f16_at = |o: usize| half_to_f32(u16::from_le_bytes([cell[o], cell[o + 1]]));
        match self {
            Kind::U8 => (f32_at(Kind::U8_S + 4 * lane), f32_at(Kind::U8_M + 4 * lane)),
            Kind::Q4 => (f32_at(Kind::Q4_S + 4 * lane), f32_at(Kind::Q4_M + 4 * lane)),
            Kind::Q8 => {
                let s = f16_at(Kind::Q8_D + 2 * lane);
                (s, -128.0 * s)
            }
            Kind::Q5 => {
                let s = f16_at(Kind::Q5_D + 2 * lane);
                (s, -16.0 * s)
            }
        }
    }

    /// Stores row `lane`'s block as `s·u + m` in a cell. The caller guarantees that `u` and
    /// `m` fit the kind (`Kind::of` of the block's GGUF type).
    fn put(self, cell: &mut [u8], lane: usize, s: f32, m: f32, u: &[u8; BLOCK]) {
        let put_f32 =
            |cell: &mut [u8], o: usize, v: f32| cell[o..o + 4].copy_from_slice(&v.to_le_bytes());
        match self {
            Kind::U8 => {
                put_f32(cell, Kind::U8_S + 4 * lane, s);
                put_f32(cell, Kind::U8_M + 4 * lane, m);
            }
            Kind::Q4 => {
                put_f32(cell, Kind::Q4_S + 4 * lane, s);
                put_f32(cell, Kind::Q4_M + 4 * lane, m);
            }
            Kind::Q8 => {
                cell[Kind::Q8_D + 2 * lane..][..2].copy_from_slice(&f32_to_half(s).to_le_bytes())
            }
            Kind::Q5 => {
                cell[Kind::Q5_D + 2 * lane..][..2].copy_from_slice(&f32_to_half(s).to_le_bytes())
            }
        }
        for (i, &v) in u.iter().enumerate() {
            let pos = (i / 4) * 64 + lane * 4 + i % 4;
            match self {
                Kind::U8 => cell[Kind::U8_Q + pos] = v,
                Kind::Q8 => cell[pos] = v ^ 0x80,
                Kind::Q5 | Kind::Q4 => {
                    let (j, rest) = (pos / 64, pos % 64);
                    let at = (j / 2) * 64 + rest;
                    let shift = 4 * (j % 2);
                    cell[at] = (cell[at] & !(0x0f << shift)) | ((v & 0x0f) << shift);
                    if self == Kind::Q5 {
                        let (byte, bit) = (Kind::Q5_QH + pos / 8, pos % 8);
                        cell[byte] = (cell[byte] & !(1 << bit)) | (((v >> 4) & 1) << bit);
                    }
                }
            }
        }
    }

    fn get(self, cell: &[u8], lane: usize, out: &mut [f32]) {
        let (s, m) = self.scale(cell, lane);
        for (i, o) in out.iter_mut().enumerate().take(BLOCK) {
            *o = s * self.byte(cell, (i / 4) * 64 + lane * 4 + i % 4) as f32 + m;
        }
    }
}

/// Where a matrix's cells live: built in memory, or mapped from the on-disk cache.
#[derive(Clone)]
pub(crate) enum Bytes {
    Owned(Arc<Vec<u8>>),
    Mapped {
        map: Arc<memmap2::Mmap>,
        offset: usize,
        len: usize,
    },
}

/// A weight `[rows, cols]` (`rows` multiple of 16, `cols` of 32) in the cell layout.
#[derive(Clone)]
pub struct Int8Matrix {
    rows: usize,
    cols: usize,
    kind: Kind,
    bytes: Bytes,
}

impl std::fmt::Debug for Int8Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Int8Matrix({}x{} {:?})", self.rows, self.cols, self.kind)
    }
}

fn f16(b: &[u8]) -> f32 {
    half_to_f32(u16::from_le_bytes([b[0], b[1]]))
}

/// IEEE half to f32 (no `half` crate in CPU builds).
pub fn half_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// f32 to IEEE half, rounding to nearest even (exact for every value that came from a half).
pub fn f32_to_half(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    // Below the normal range the implicit bit joins the fraction and shifts further.
    let (man, shift) = if e <= 0 {
        if e < -10 {
            return sign;
        }
        (man | 0x80_0000, (14 - e) as u32)
    } else {
        (man, 13)
    };
    let half_ulp = 1u32 << (shift - 1);
    let rest = man & ((1u32 << shift) - 1);
    let mut h = (man >> shift) as u16;
    if rest > half_ulp || (rest == half_ulp && h & 1 == 1) {
        h += 1; // may carry into the exponent, which is right
    }
    if e <= 0 {
        sign | h
    } else {
        sign | (((e as u16) << 10) + h)
    }
}

/// One block of 32 as `s·u + m`: the smallest value is `m`, 256 levels up to the largest.
pub fn affine_block(v: &[f32]) -> (f32, f32, [u8; BLOCK]) {
    let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut u = [0u8; BLOCK];
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater)
        || !lo.is_finite()
        || !hi.is_finite()
    {
        return (0.0, if lo.is_finite() { lo } else { 0.0 }, u);
    }
    let s = (hi - lo) / 255.0;
    for (o, &x) in u.iter_mut().zip(v) {
        *o = ((x - lo) / s).round().clamp(0.0, 255.0) as u8;
    }
    (s, lo, u)
}

/// Receives `(block, s, m, u)`.
type BlockSink<'a> = dyn FnMut(usize, f32, f32, &[u8; BLOCK]) + 'a;

/// Calls `f(block, s, m, u)` for each block of 32 of one row of raw GGUF data in `dtype`, when
/// that type is exactly `s·u + m` per block; `None` when it is not.
fn exact_row(dtype: GgmlDType, row: &[u8], f: &mut BlockSink) -> Option<()> {
    let mut u = [0u8; BLOCK];
    match dtype {
        GgmlDType::Q8_0 => {
            for (b, blk) in row.chunks_exact(34).enumerate() {
                let d = f16(blk);
                for (o, &q) in u.iter_mut().zip(&blk[2..]) {
                    *o = (q as i8 as i16 + 128) as u8;
                }
                f(b, d, -128.0 * d, &u);
            }
        }
        GgmlDType::Q4_0 => {
            // d·(u − 8) = d·((u + 8) − 16): a Q5 block whose high bit is that of u + 8.
            for (b, blk) in row.chunks_exact(18).enumerate() {
                let d = f16(blk);
                for j in 0..16 {
                    u[j] = (blk[2 + j] & 0x0f) + 8;
                    u[j + 16] = (blk[2 + j] >> 4) + 8;
                }
                f(b, d, -16.0 * d, &u);
            }
        }
        GgmlDType::Q5_0 => {
            for (b, blk) in row.chunks_exact(22).enumerate() {
                let d = f16(blk);
                let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                for j in 0..16 {
                    let h0 = (((qh >> j) << 4) & 0x10) as u8;
                    let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                    u[j] = (blk[6 + j] & 0x0f) | h0;
                    u[j + 16] = (blk[6 + j] >> 4) | h1;
                }
                f(b, d, -16.0 * d, &u);
            }
        }
        GgmlDType::Q4K => {
            for (sb, blk) in row.chunks_exact(144).enumerate() {
                let d = f16(&blk[0..]);
                let dmin = f16(&blk[2..]);
                let sc = &blk[4..16];
                let qs = &blk[16..];
                let scale_min = |j: usize| -> (u8, u8) {
                    if j < 4 {
                        (sc[j] & 63, sc[j + 4] & 63)
                    } else {
                        (
                            (sc[j + 4] & 0x0f) | ((sc[j - 4] >> 6) << 4),
                            (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4),
                        )
                    }
                };
                for pair in 0..4 {
                    let q = &qs[pair * 32..pair * 32 + 32];
                    for half in 0..2 {
                        let (s, m) = scale_min(pair * 2 + half);
                        for (o, &b) in u.iter_mut().zip(q) {
                            *o = if half == 0 { b & 0x0f } else { b >> 4 };
                        }
                        f(
                            sb * 8 + pair * 2 + half,
                            d * s as f32,
                            -(dmin * m as f32),
                            &u,
                        );
                    }
                }
            }
        }
        _ => return None,
    }
    Some(())
}

impl Int8Matrix {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether a weight of this shape can be held in this format.
    pub fn fits(rows: usize, cols: usize) -> bool {
        rows > 0 && cols > 0 && rows.is_multiple_of(GROUP) && cols.is_multiple_of(BLOCK)
    }

    /// Bytes of the cells of a `rows × cols` matrix of `kind` (`None`: past `usize`, which
    /// only a damaged cache header can ask).
    pub fn size(kind: Kind, rows: usize, cols: usize) -> Option<usize> {
        (rows / GROUP)
            .checked_mul(cols / BLOCK)?
            .checked_mul(kind.cell_bytes())
    }

    /// The cells, group-major (`(group · blocks + block) · cell_bytes`).
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Owned(v) => v,
            Bytes::Mapped { map, offset, len } => &map[*offset..*offset + len],
        }
    }

    /// A matrix whose cells are the `size(kind, rows, cols)` bytes at `offset` of a mapped file.
    pub(crate) fn from_mapped(
        kind: Kind,
        rows: usize,
        cols: usize,
        map: Arc<memmap2::Mmap>,
        offset: usize,
    ) -> Option<Self> {
        if !Self::fits(rows, cols) {
            return None;
        }
        let len = Self::size(kind, rows, cols)?;
        (offset.checked_add(len)? <= map.len()).then(|| Self {
            rows,
            cols,
            kind,
            bytes: Bytes::Mapped { map, offset, len },
        })
    }

    fn blocks(&self) -> usize {
        self.cols / BLOCK
    }

    /// A matrix of a weight that exists in memory (so its cells' size fits in `usize`).
    fn new_owned(kind: Kind, rows: usize, cols: usize, fill: impl FnOnce(&mut [u8])) -> Self {
        let size = Self::size(kind, rows, cols).expect("cells of a weight held in memory");
        let mut bytes = vec![0u8; size];
        fill(&mut bytes);
        Self {
            rows,
            cols,
            kind,
            bytes: Bytes::Owned(Arc::new(bytes)),
        }
    }

    /// Converts a GGUF weight `[rows, cols]`: exactly for the types whose blocks are `s·u + m`,
    /// through f32 otherwise.
    pub fn from_qtensor(q: &QTensor) -> candle_core::Result<Self> {
        let (rows, cols) = q.shape().dims2()?;
        if !Self::fits(rows, cols) {
            candle_core::bail!("a {rows}x{cols} weight does not fit the int8 cell layout");
        }
        let dtype = q.dtype();
        let kind = Kind::of(dtype);
        let nb = cols / BLOCK;
        let row_bytes = cols / dtype.block_size() * dtype.type_size();
        let data = q.data()?;
        if kind != Kind::U8 && data.len() == rows * row_bytes {
            let cb = kind.cell_bytes();
            Ok(Self::new_owned(kind, rows, cols, |cells| {
                for (r, row) in data.chunks_exact(row_bytes).enumerate() {
                    let base = r / GROUP * nb;
                    exact_row(dtype, row, &mut |b, s, m, u| {
                        kind.put(&mut cells[(base + b) * cb..][..cb], r % GROUP, s, m, u)
                    });
                }
            }))
        } else {
            drop(data);
            let dense = q
                .dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            Ok(Self::affine(&dense, rows, cols))
        }
    }

    /// Quantizes a dense f32 weight `[rows, cols]` block by block (`affine_block`, kind `U8`).
    pub fn from_f32(w: &Tensor) -> candle_core::Result<Self> {
        let (rows, cols) = w.dims2()?;
        if !Self::fits(rows, cols) {
            candle_core::bail!("a {rows}x{cols} weight does not fit the int8 cell layout");
        }
        let dense = w
            .to_device(&Device::Cpu)?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self::affine(&dense, rows, cols))
    }

    fn affine(dense: &[f32], rows: usize, cols: usize) -> Self {
        let nb = cols / BLOCK;
        let cb = Kind::U8.cell_bytes();
        Self::new_owned(Kind::U8, rows, cols, |cells| {
            for r in 0..rows {
                for b in 0..nb {
                    let v = &dense[r * cols + b * BLOCK..r * cols + (b + 1) * BLOCK];
                    let (s, m, u) = affine_block(v);
                    Kind::U8.put(
                        &mut cells[(r / GROUP * nb + b) * cb..][..cb],
                        r % GROUP,
                        s,
                        m,
                        &u,
                    );
                }
            }
        })
    }

    /// Row `r` dequantized into `out` (`cols` values).
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let (nb, cb) = (self.blocks(), self.kind.cell_bytes());
        let group = &self.bytes()[r / GROUP * nb * cb..(r / GROUP + 1) * nb * cb];
        for (b, cell) in group.chunks_exact(cb).enumerate() {
            self.kind
                .get(cell, r % GROUP, &mut out[b * BLOCK..(b + 1) * BLOCK]);
        }
    }

    /// The rows `ids` dequantized, `[ids.len(), cols]` (an embedding lookup).
    pub fn gather(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let mut out = vec![0f32; ids.len() * self.cols];
        for (i, &id) in ids.iter().enumerate() {
            let id = id as usize;
            if id >= self.rows {
                candle_core::bail!("token id {id} is outside the vocabulary of {}", self.rows);
            }
            self.row_into(id, &mut out[i * self.cols..(i + 1) * self.cols]);
        }
        Tensor::from_vec(out, (ids.len(), self.cols), &Device::Cpu)
    }

    /// The whole weight dequantized, `[rows, cols]` f32 on `device`.
    pub fn dequantize(&self, device: &Device) -> candle_core::Result<Tensor> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.row_into(r, row);
        }
        Tensor::from_vec(out, (self.rows, self.cols), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_conversions_round_trip() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(half_to_f32(0x7bff), 65504.0);
        for h in 0..=u16::MAX {
            let is_nan = (h >> 10) & 0x1f == 0x1f && h & 0x3ff != 0;
            if !is_nan {
                assert_eq!(f32_to_half(half_to_f32(h)), h, "{h:#06x}");
            }
        }
        assert_eq!(f32_to_half(1.0 + 2f32.powi(-11)), 0x3c00); // a tie rounds to even
        assert_eq!(f32_to_half(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
    }

    /// Q8_0, Q4_0, Q5_0 and Q4_K convert exactly, each to its compact kind: the cells
    /// dequantize to what candle's own dequantization gives, bit for bit; Q6_K (kind U8)
    /// within half a step of its 256 levels.
    #[test]
    fn conversions_match_candles_dequantization() {
        let (rows, cols) = (48, 512);
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 13) as f32))
            .collect();
        let dense = Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap();
        for (dtype, kind) in [
            (GgmlDType::Q8_0, Kind::Q8),
            (GgmlDType::Q4_0, Kind::Q5),
            (GgmlDType::Q5_0, Kind::Q5),
            (GgmlDType::Q4K, Kind::Q4),
            (GgmlDType::Q6K, Kind::U8),
        ] {
            let q = QTensor::quantize(&dense, dtype).unwrap();
            let want = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap();
            let want = want.to_vec1::<f32>().unwrap();
            let m = Int8Matrix::from_qtensor(&q).unwrap();
            assert_eq!(m.kind(), kind, "{dtype:?}");
            assert_eq!(Some(m.bytes().len()), Int8Matrix::size(kind, rows, cols));
            let got = m.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap();
            let got = got.to_vec1::<f32>().unwrap();
            let worst = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            if kind != Kind::U8 {
                assert_eq!(worst, 0.0, "{dtype:?} is not converted exactly");
            } else {
                assert!(worst < 0.2, "{dtype:?}: worst difference {worst}");
            }
        }
    }
}
