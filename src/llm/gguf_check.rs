//! A validating pre-read of a GGUF file: the header, every metadata entry and the tensor table
//! are walked once and checked against the file's size before candle's reader sees the file,
//! so a damaged or crafted model is refused with what is wrong with it, never a panic, a
//! division by zero or a huge allocation inside candle.
//!
//! Checks: the magic and version; the counts; every string and array length (bounded by the
//! bytes left in the file); value types; `general.alignment` (an unsigned integer, a non-zero
//! power of two); each tensor's dimensions, type and offset (aligned, its data inside the
//! file). Reads only the header and tensor table (skipping over string bytes), never the
//! tensor data; knows nothing of architectures or tokenizers (the loader checks those). Never
//! prints.

use std::io::Read;
use std::path::Path;

use candle_core::quantized::GgmlDType;

/// Arrays nested deeper than this are refused (candle's own limit).
const MAX_DEPTH: usize = 64;
/// A tensor has at most this many dimensions (ggml's limit).
const MAX_DIMS: u32 = 4;
/// The alignment used when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
/// Larger alignments make no sense for a model file.
const MAX_ALIGNMENT: u64 = 1 << 24;

/// Checks the GGUF file at `path`; the error says what is wrong (without the path).
pub fn check(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let size = file
        .metadata()
        .map_err(|e| format!("cannot read its size: {e}"))?
        .len();
    check_reader(std::io::BufReader::new(file), size)
}

/// Checks a GGUF image of `size` bytes read from the start of `reader`.
pub fn check_reader<R: Read>(reader: R, size: u64) -> Result<(), String> {
    let mut r = Reader {
        inner: reader,
        pos: 0,
        size,
        wide: true,
    };
    let magic = r.bytes4("the magic number")?;
    if magic != *b"GGUF" {
        return Err(if magic == *b"FUGG" {
            "it is a big-endian GGUF, which is not supported".into()
        } else {
            format!("it does not start with `GGUF` (found {magic:02x?})")
        });
    }
    let version = r.u32("the version")?;
    let wide = match version {
        1 => false,
        2 | 3 => true,
        v => {
            return Err(format!(
                "unsupported GGUF version {v} (1, 2 and 3 are known)"
            ))
        }
    };
    r.wide = wide;
    let tensors = r.len("the tensor count")?;
    let entries = r.len("the metadata count")?;
    // The smallest possible entry: a key's length, a value type, one byte of value; the
    // smallest tensor: a name's length, its dimension count, type and offset.
    let prefix = if wide { 8 } else { 4 };
    let need = entries
        .saturating_mul(prefix + 4 + 1)
        .saturating_add(tensors.saturating_mul(prefix + 4 + 4 + 8));
    if need > r.left() {
        return Err(format!(
            "the header declares {tensors} tensors and {entries} metadata entries, which need at \
             least {need} bytes; only {} are left in the file",
            r.left()
        ));
    }
    let mut alignment = None;
    let mut keys = std::collections::HashSet::new();
    for i in 0..entries {
        let key = r.string(&format!("the key of metadata entry {i}"))?;
        let what = format!("metadata `{key}`");
        let ty = r.u32(&format!("the type of {what}"))?;
        if key == "general.alignment" {
            let value = match ty {
                0 => u64::from(r.u8(&what)?),
                2 => u64::from(r.u16(&what)?),
                4 => u64::from(r.u32(&what)?),
                _ => {
                    return Err(format!(
                        "general.alignment has value type {}, not an unsigned integer",
                        type_name(ty)
                    ))
                }
            };
            if value == 0 {
                return Err("general.alignment is 0".into());
            }
            if !value.is_power_of_two() || value > MAX_ALIGNMENT {
                return Err(format!(
                    "general.alignment is {value}, not a power of two up to {MAX_ALIGNMENT}"
                ));
            }
            alignment = Some(value);
        } else {
            r.value(ty, &what, 0)?;
        }
        if !keys.insert(key.clone()) {
            return Err(format!("{what} appears twice"));
        }
    }
    let alignment = alignment.unwrap_or(DEFAULT_ALIGNMENT);
    let mut table = Vec::new();
    let mut names = std::collections::HashSet::new();
    for i in 0..tensors {
        let name = r.string(&format!("the name of tensor {i}"))?;
        let what = format!("tensor `{name}`");
        let dims = r.u32(&format!("the dimension count of {what}"))?;
        if dims > MAX_DIMS {
            return Err(format!("{what} has {dims} dimensions (at most {MAX_DIMS})"));
        }
        let mut elements: u64 = 1;
        let mut first = 1;
        for d in 0..dims {
            let n = r.len(&format!("dimension {d} of {what}"))?;
            if d == 0 {
                first = n;
            }
            elements = elements
                .checked_mul(n)
                .filter(|&e| e <= r.size.saturating_mul(8))
                .ok_or_else(|| format!("{what} has more elements than the file could hold"))?;
        }
        let ty = r.u32(&format!("the type of {what}"))?;
        let dtype = ggml_type(ty)
            .ok_or_else(|| format!("{what} has tensor type {ty}, which this build cannot read"))?;
        let block = dtype.block_size() as u64;
        if !first.is_multiple_of(block) {
            return Err(format!(
                "{what}: its first dimension {first} is not a multiple of its type's block of \
                 {block}"
            ));
        }
        let bytes = (elements / block).saturating_mul(dtype.type_size() as u64);
        let offset = r.u64(&format!("the offset of {what}"))?;
        if !offset.is_multiple_of(alignment) {
            return Err(format!(
                "{what} starts at offset {offset}, not a multiple of the alignment {alignment}"
            ));
        }
        if !names.insert(name.clone()) {
            return Err(format!("{what} appears twice"));
        }
        table.push((what, offset, bytes));
    }
    let data = r.pos.div_ceil(alignment).saturating_mul(alignment);
    for (what, offset, bytes) in table {
        let end = data.checked_add(offset).and_then(|s| s.checked_add(bytes));
        if end.is_none_or(|e| e > size) {
            return Err(format!(
                "{what} ({bytes} bytes at offset {offset} of the data, which starts at byte \
                 {data}) lies past the end of the file ({size} bytes)"
            ));
        }
    }
    Ok(())
}

/// The tensor types candle reads (ggml's numbering).
fn ggml_type(ty: u32) -> Option<GgmlDType> {
    Some(match ty {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

fn type_name(ty: u32) -> String {
    const NAMES: [&str; 13] = [
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64",
        "f64",
    ];
    NAMES
        .get(ty as usize)
        .map_or_else(|| format!("{ty} (unknown)"), |n| n.to_string())
}

/// The bytes of one value of a fixed-size type, or `None` for strings and arrays.
fn fixed_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// A reader that knows where it is and how much of the file is left.
struct Reader<R> {
    inner: R,
    pos: u64,
    size: u64,
    /// Lengths and counts are u64 (GGUF v2 and v3), else u32 (v1).
    wide: bool,
}

impl<R: Read> Reader<R> {
    fn left(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }

    fn exact<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        if (N as u64) > self.left() {
            return Err(format!(
                "the file ends at byte {} in the middle of {what}",
                self.size
            ));
        }
        let mut b = [0u8; N];
        self.inner
            .read_exact(&mut b)
            .map_err(|e| format!("reading {what}: {e}"))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn bytes4(&mut self, what: &str) -> Result<[u8; 4], String> {
        self.exact::<4>(what)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.exact::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.exact::<2>(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.exact::<4>(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.exact::<8>(what)?))
    }

    /// A length or count: u64 in v2 and v3, u32 in v1.
    fn len(&mut self, what: &str) -> Result<u64, String> {
        if self.wide {
            self.u64(what)
        } else {
            self.u32(what).map(u64::from)
        }
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), String> {
        if n > self.left() {
            return Err(format!(
                "{what} needs {n} bytes at byte {}, past the end of the file ({} bytes)",
                self.pos, self.size
            ));
        }
        // Read through (not seek): a buffered reader keeps its buffer, and many short strings
        // are skipped.
        let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())
            .map_err(|e| format!("reading {what}: {e}"))?;
        if copied != n {
            return Err(format!(
                "the file ends at byte {} in the middle of {what}",
                self.pos + copied
            ));
        }
        self.pos += n;
        Ok(())
    }

    /// A length-prefixed string, read whole (keys and tensor names are short).
    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.string_len(what)?;
        if n > 65_536 {
            return Err(format!(
                "{what} is {n} bytes long (names are at most 65536)"
            ));
        }
        let mut b = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut b)
            .map_err(|e| format!("reading {what}: {e}"))?;
        self.pos += n;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    fn string_len(&mut self, what: &str) -> Result<u64, String> {
        let n = self.len(what)?;
        if n > self.left() {
            return Err(format!(
                "{what} has length {n}, more than the {} bytes left in the file",
                self.left()
            ));
        }
        Ok(n)
    }

    /// Skips over one value of type `ty`, checking it.
    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("{what} nests arrays deeper than {MAX_DEPTH}"));
        }
        match ty {
            7 => match self.u8(what)? {
                0 | 1 => Ok(()),
                b => Err(format!("{what} is a bool of value {b}")),
            },
            8 => {
                let n = self.string_len(what)?;
                self.skip(n, what)
            }
            9 => {
                let elem = self.u32(&format!("the element type of {what}"))?;
                let count = self.len(&format!("the length of {what}"))?;
                let min = match (elem, fixed_size(elem)) {
                    (_, Some(s)) => s,
                    (8, None) => {
                        if self.wide {
                            8
                        } else {
                            4
                        }
                    }
                    (9, None) => {
                        if self.wide {
                            12
                        } else {
                            8
                        }
                    }
                    _ => return Err(format!("{what} is an array of unknown value type {elem}")),
                };
                if count.saturating_mul(min) > self.left() {
                    return Err(format!(
                        "{what} has length {count}, more than the {} bytes left in the file hold",
                        self.left()
                    ));
                }
                match fixed_size(elem) {
                    Some(s) if elem != 7 => self.skip(count * s, what),
                    _ => {
                        for _ in 0..count {
                            self.value(elem, what, depth + 1)?;
                        }
                        Ok(())
                    }
                }
            }
            t => match fixed_size(t) {
                Some(s) => self.skip(s, what),
                None => Err(format!("{what} has unknown value type {t}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal GGUF v3 image: `kvs` as (key, type, value bytes), then `tensors` as (name,
    /// dims, type, offset), padded to 32, then `data` bytes.
    fn image(
        kvs: &[(&str, u32, Vec<u8>)],
        tensors: &[(&str, &[u64], u32, u64)],
        data: usize,
    ) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((tensors.len() as u64).to_le_bytes());
        b.extend((kvs.len() as u64).to_le_bytes());
        let s = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        for (k, t, v) in kvs {
            s(&mut b, k);
            b.extend(t.to_le_bytes());
            b.extend(v);
        }
        for (name, dims, ty, offset) in tensors {
            s(&mut b, name);
            b.extend((dims.len() as u32).to_le_bytes());
            for d in *dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(ty.to_le_bytes());
            b.extend(offset.to_le_bytes());
        }
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend(vec![0u8; data]);
        b
    }

    fn check_bytes(b: &[u8]) -> Result<(), String> {
        check_reader(std::io::Cursor::new(b), b.len() as u64)
    }

    fn string_value(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u64).to_le_bytes().to_vec();
        v.extend(s.as_bytes());
        v
    }

    #[test]
    fn a_sound_image_passes() {
        let b = image(
            &[
                ("general.architecture", 8, string_value("llama")),
                ("general.alignment", 4, 32u32.to_le_bytes().to_vec()),
            ],
            &[("w", &[4, 2], 0, 0)],
            32,
        );
        check_bytes(&b).unwrap();
    }

    #[test]
    fn bad_images_are_refused_with_the_reason() {
        let fails = |b: Vec<u8>, needle: &str| {
            let e = check_bytes(&b).unwrap_err();
            assert!(e.contains(needle), "{e}");
        };
        fails(b"GGU".to_vec(), "the file ends");
        fails(b"GGML\x03\0\0\0".to_vec(), "does not start with `GGUF`");
        fails(b"GGUF\x09\0\0\0".to_vec(), "unsupported GGUF version 9");
        fails(
            image(
                &[("general.alignment", 4, 0u32.to_le_bytes().to_vec())],
                &[],
                0,
            ),
            "general.alignment is 0",
        );
        fails(
            image(
                &[("general.alignment", 4, 24u32.to_le_bytes().to_vec())],
                &[],
                0,
            ),
            "not a power of two",
        );
        fails(
            image(&[("general.alignment", 8, string_value("x"))], &[], 0),
            "not an unsigned integer",
        );
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend(b"x");
        fails(
            image(&[("k", 8, huge)], &[], 0),
            "has length 18446744073709551615",
        );
        let mut arr = 0u32.to_le_bytes().to_vec();
        arr.extend((1u64 << 40).to_le_bytes());
        fails(image(&[("k", 9, arr)], &[], 0), "has length 1099511627776");
        fails(
            image(&[("k", 42, vec![0; 8])], &[], 0),
            "unknown value type 42",
        );
        fails(image(&[("k", 7, vec![2])], &[], 0), "a bool of value 2");
        fails(
            image(&[], &[("w", &[4, 2], 0, 1 << 20)], 32),
            "past the end of the file",
        );
        fails(
            image(&[], &[("w", &[4, 2], 0, 0)], 8),
            "past the end of the file",
        );
        fails(
            image(&[], &[("w", &[4, 2], 0, 3)], 64),
            "not a multiple of the alignment",
        );
        fails(image(&[], &[("w", &[4, 2], 99, 0)], 64), "tensor type 99");
        fails(
            image(&[], &[("w", &[1, 1, 1, 1, 1], 0, 0)], 64),
            "5 dimensions",
        );
        fails(
            image(&[], &[("w", &[u64::MAX, u64::MAX], 0, 0)], 64),
            "more elements than the file",
        );
        fails(image(&[], &[("w", &[33], 12, 0)], 256), "not a multiple");
        fails(
            image(&[], &[("w", &[1], 0, 0), ("w", &[1], 0, 32)], 64),
            "appears twice",
        );
        // Counts no file of this size could hold.
        let mut b = b"GGUF\x03\0\0\0".to_vec();
        b.extend(u64::MAX.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        fails(b, "the header declares");
        // Cut anywhere, a sound image is refused, never a panic.
        let sound = image(
            &[("general.architecture", 8, string_value("llama"))],
            &[("w", &[4, 2], 0, 0)],
            32,
        );
        for n in 0..sound.len() {
            assert!(check_bytes(&sound[..n]).is_err(), "cut at {n}");
        }
    }
}
