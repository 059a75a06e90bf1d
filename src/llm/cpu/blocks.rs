//! sqlora's own CPU weight format, [`Int8Matrix`]: every 32 weights of a row are `s·u + m`
//! with `u` an unsigned byte and `s`, `m` f32, laid out for the VNNI product of `gemm`: 16 rows
//! (one *group*) by one block of 32 columns form a 640-byte [`Cell`] — the 16 scales, the 16
//! offsets, then eight 64-byte chunks, chunk `j` holding bytes `4j..4j+4` of each of the 16 rows
//! side by side. Q8_0, Q4_0, Q5_0 and Q4_K convert exactly (their blocks are already of that
//! form); other types are dequantized and each block quantized to 256 levels between its
//! minimum and maximum (Q6_K's error grows by under 1/60 of its own step).
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

/// One group of 16 rows by one block of 32 columns.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct Cell {
    pub s: [f32; GROUP],
    pub m: [f32; GROUP],
    /// Chunk `j` (64 bytes): for row `l` of the group, bytes `4j..4j+4` of its block at `64j + 4l`.
    pub q: [u8; GROUP * BLOCK],
}

/// Bytes of one [`Cell`].
pub const CELL_BYTES: usize = std::mem::size_of::<Cell>();
const _: () = assert!(CELL_BYTES == 640);

impl Cell {
    const ZERO: Cell = Cell {
        s: [0.0; GROUP],
        m: [0.0; GROUP],
        q: [0; GROUP * BLOCK],
    };

    fn put(&mut self, lane: usize, s: f32, m: f32, u: &[u8; BLOCK]) {
        self.s[lane] = s;
        self.m[lane] = m;
        for (i, &v) in u.iter().enumerate() {
            self.q[(i / 4) * 64 + lane * 4 + i % 4] = v;
        }
    }

    fn get(&self, lane: usize, out: &mut [f32]) {
        let (s, m) = (self.s[lane], self.m[lane]);
        for (i, o) in out.iter_mut().enumerate().take(BLOCK) {
            *o = s * self.q[(i / 4) * 64 + lane * 4 + i % 4] as f32 + m;
        }
    }
}

/// Where a matrix's cells live: built in memory, or mapped from the on-disk cache.
#[derive(Clone)]
pub(crate) enum Cells {
    Owned(Arc<Vec<Cell>>),
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
    cells: Cells,
}

impl std::fmt::Debug for Int8Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Int8Matrix({}x{})", self.rows, self.cols)
    }
}

fn f16(b: &[u8]) -> f32 {
    half_to_f32(u16::from_le_bytes([b[0], b[1]]))
}

/// IEEE half to f32 (no `half` crate in CPU builds).
fn half_to_f32(h: u16) -> f32 {
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

/// One block of 32 as `s·u + m`: the smallest value is `m`, 256 levels up to the largest.
pub fn affine_block(v: &[f32]) -> (f32, f32, [u8; BLOCK]) {
    let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut u = [0u8; BLOCK];
    if !(hi > lo) || !lo.is_finite() || !hi.is_finite() {
        return (0.0, if lo.is_finite() { lo } else { 0.0 }, u);
    }
    let s = (hi - lo) / 255.0;
    for (o, &x) in u.iter_mut().zip(v) {
        *o = ((x - lo) / s).round().clamp(0.0, 255.0) as u8;
    }
    (s, lo, u)
}

/// Calls `f(block, s, m, u)` for each block of 32 of one row of raw GGUF data in `dtype`, when
/// that type is exactly `s·u + m` per block; `None` when it is not.
fn exact_row(
    dtype: GgmlDType,
    row: &[u8],
    f: &mut dyn FnMut(usize, f32, f32, &[u8; BLOCK]),
) -> Option<()> {
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
            for (b, blk) in row.chunks_exact(18).enumerate() {
                let d = f16(blk);
                for j in 0..16 {
                    u[j] = blk[2 + j] & 0x0f;
                    u[j + 16] = blk[2 + j] >> 4;
                }
                f(b, d, -8.0 * d, &u);
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

    /// Whether a weight of this shape can be held in this format.
    pub fn fits(rows: usize, cols: usize) -> bool {
        rows > 0 && cols > 0 && rows % GROUP == 0 && cols % BLOCK == 0
    }

    pub(crate) fn cells(&self) -> &[Cell] {
        match &self.cells {
            Cells::Owned(v) => v,
            Cells::Mapped { map, offset, len } => {
                let bytes = &map[*offset..*offset + len * CELL_BYTES];
                // SAFETY: `Cell` is plain old data of any bit pattern; `from_mapped` checked the
                // offset's alignment (the map itself is page-aligned) and the length.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const Cell, *len) }
            }
        }
    }

    /// The cells as bytes (for the on-disk cache).
    pub(crate) fn bytes(&self) -> &[u8] {
        let c = self.cells();
        // SAFETY: `Cell` is `repr(C)` without padding (640 bytes of f32 and u8).
        unsafe { std::slice::from_raw_parts(c.as_ptr() as *const u8, c.len() * CELL_BYTES) }
    }

    /// A matrix whose cells are `len` cells at `offset` of a mapped file.
    pub(crate) fn from_mapped(
        rows: usize,
        cols: usize,
        map: Arc<memmap2::Mmap>,
        offset: usize,
    ) -> Option<Self> {
        if !Self::fits(rows, cols) {
            return None;
        }
        let len = rows / GROUP * cols / BLOCK;
        let end = offset.checked_add(len.checked_mul(CELL_BYTES)?)?;
        let aligned = (map.as_ptr() as usize + offset) % std::mem::align_of::<Cell>() == 0;
        (aligned && end <= map.len()).then(|| Self {
            rows,
            cols,
            cells: Cells::Mapped { map, offset, len },
        })
    }

    fn blocks(&self) -> usize {
        self.cols / BLOCK
    }

    /// Converts a GGUF weight `[rows, cols]`: exactly for the types whose blocks are `s·u + m`,
    /// through f32 otherwise.
    pub fn from_qtensor(q: &QTensor) -> candle_core::Result<Self> {
        let (rows, cols) = q.shape().dims2()?;
        if !Self::fits(rows, cols) {
            candle_core::bail!("a {rows}x{cols} weight does not fit the int8 cell layout");
        }
        let nb = cols / BLOCK;
        let mut cells = vec![Cell::ZERO; rows / GROUP * nb];
        let dtype = q.dtype();
        let row_bytes = cols / dtype.block_size() * dtype.type_size();
        let data = q.data()?;
        let exact =
            data.len() == rows * row_bytes && exact_row(dtype, &[], &mut |_, _, _, _| {}).is_some();
        if exact {
            for (r, row) in data.chunks_exact(row_bytes).enumerate() {
                let base = r / GROUP * nb;
                exact_row(dtype, row, &mut |b, s, m, u| {
                    cells[base + b].put(r % GROUP, s, m, u)
                });
            }
        } else {
            drop(data);
            let dense = q
                .dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            fill_affine(&mut cells, &dense, rows, cols);
        }
        Ok(Self {
            rows,
            cols,
            cells: Cells::Owned(Arc::new(cells)),
        })
    }

    /// Quantizes a dense f32 weight `[rows, cols]` block by block (`affine_block`).
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
        let mut cells = vec![Cell::ZERO; rows / GROUP * (cols / BLOCK)];
        fill_affine(&mut cells, &dense, rows, cols);
        Ok(Self {
            rows,
            cols,
            cells: Cells::Owned(Arc::new(cells)),
        })
    }

    /// Row `r` dequantized into `out` (`cols` values).
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let nb = self.blocks();
        let cells = &self.cells()[r / GROUP * nb..(r / GROUP + 1) * nb];
        for (b, c) in cells.iter().enumerate() {
            c.get(r % GROUP, &mut out[b * BLOCK..(b + 1) * BLOCK]);
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

fn fill_affine(cells: &mut [Cell], dense: &[f32], rows: usize, cols: usize) {
    let nb = cols / BLOCK;
    for r in 0..rows {
        for b in 0..nb {
            let v = &dense[r * cols + b * BLOCK..r * cols + (b + 1) * BLOCK];
            let (s, m, u) = affine_block(v);
            cells[r / GROUP * nb + b].put(r % GROUP, s, m, &u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_conversion_matches_known_values() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(half_to_f32(0x7bff), 65504.0);
    }

    /// Q8_0, Q4_0, Q5_0 and Q4_K convert exactly: the cells dequantize to what candle's own
    /// dequantization gives, bit for bit; Q6_K within half a step of its 256 levels.
    #[test]
    fn conversions_match_candles_dequantization() {
        let (rows, cols) = (48, 512);
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 13) as f32))
            .collect();
        let dense = Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap();
        for dtype in [
            GgmlDType::Q8_0,
            GgmlDType::Q4_0,
            GgmlDType::Q5_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let q = QTensor::quantize(&dense, dtype).unwrap();
            let want = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap();
            let want = want.to_vec1::<f32>().unwrap();
            let m = Int8Matrix::from_qtensor(&q).unwrap();
            let got = m.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap();
            let got = got.to_vec1::<f32>().unwrap();
            let worst = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let exact = dtype != GgmlDType::Q6K;
            if exact {
                assert_eq!(worst, 0.0, "{dtype:?} is not converted exactly");
            } else {
                assert!(worst < 0.2, "{dtype:?}: worst difference {worst}");
            }
        }
    }
}
