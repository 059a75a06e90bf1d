//! The converted CPU weights on disk: one file per GGUF (keyed, like the prompt-prefix cache, by
//! the model file's path, size and modification time, plus the cell format's version and
//! sqlora's version, so a rebuilt or replaced GGUF or a new sqlora never reads an old file),
//! holding every [`Int8Matrix`] by its GGUF tensor name, memory-mapped at
//! the next start so that loading costs a `stat` and page faults instead of a conversion. A
//! file that is truncated, of another version or of another model is ignored and rewritten.
//!
//! Owns the file format and its key; never converts weights, never decides whether a model
//! uses the cache.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::blocks::{Int8Matrix, Kind};

/// Each matrix starts on a cache line.
const ALIGN: usize = 64;

const MAGIC: &[u8; 8] = b"SQLINT8\0";
/// Bump when the cell layout or the conversions change.
const FORMAT: u32 = 2;
/// Data starts on a page boundary; each matrix on a cell boundary.
const PAGE: usize = 4096;

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    format: u32,
    sqlora: String,
    /// The GGUF's canonical path: an older file of the same model is removed when a new one
    /// is written (after the GGUF was replaced or touched).
    #[serde(default)]
    model: String,
    tensors: BTreeMap<String, Entry>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    kind: Kind,
    rows: usize,
    cols: usize,
    /// From the start of the file.
    offset: usize,
}

/// The cache file for the GGUF at `model` under `dir`.
pub fn path_for(dir: &Path, model: &Path) -> Option<PathBuf> {
    use sha2::{Digest, Sha256};
    let meta = std::fs::metadata(model).ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    let h = Sha256::new()
        .chain_update(canonical(model).as_bytes())
        .chain_update(format!(
            "|{}|{modified}|{FORMAT}|{}",
            meta.len(),
            env!("CARGO_PKG_VERSION")
        ))
        .finalize();
    let name: String = h.iter().take(12).map(|b| format!("{b:02x}")).collect();
    Some(dir.join(format!("{name}.int8")))
}

/// The matrices of a cache file, mapped.
pub struct Mapped {
    map: Arc<memmap2::Mmap>,
    tensors: BTreeMap<String, Entry>,
}

impl Mapped {
    /// Maps `file` when it is a complete cache file of this format; `None` otherwise.
    pub fn open(file: &Path) -> Option<Self> {
        let f = std::fs::File::open(file).ok()?;
        // SAFETY: the file is written once under a temporary name and renamed into place;
        // sqlora never changes it afterwards (a user who edits it gets wrong weights, as with
        // an edited GGUF).
        let map = unsafe { memmap2::Mmap::map(&f) }.ok()?;
        if map.len() < 16 || &map[..8] != MAGIC {
            return None;
        }
        let len = u64::from_le_bytes(map[8..16].try_into().ok()?) as usize;
        let header: Header =
            serde_json::from_slice(map.get(16..16usize.checked_add(len)?)?).ok()?;
        if header.format != FORMAT || header.sqlora != env!("CARGO_PKG_VERSION") {
            return None;
        }
        let map = Arc::new(map);
        // Every entry must lie inside the file (the kernels' loads are unaligned).
        for e in header.tensors.values() {
            Int8Matrix::from_mapped(e.kind, e.rows, e.cols, map.clone(), e.offset)?;
        }
        Some(Self {
            map,
            tensors: header.tensors,
        })
    }

    /// The matrix stored as `name`, if any.
    pub fn get(&self, name: &str) -> Option<Int8Matrix> {
        let e = self.tensors.get(name)?;
        Int8Matrix::from_mapped(e.kind, e.rows, e.cols, self.map.clone(), e.offset)
    }
}

/// Writes `tensors` to `file` (through a temporary name and a rename).
pub fn write(file: &Path, model: &Path, tensors: &[(String, &Int8Matrix)]) -> std::io::Result<()> {
    let model = canonical(model);
    let mut entries = BTreeMap::new();
    let mut offset = 0usize;
    for (name, m) in tensors {
        entries.insert(
            name.clone(),
            Entry {
                kind: m.kind(),
                rows: m.rows(),
                cols: m.cols(),
                offset,
            },
        );
        offset += m.bytes().len().div_ceil(ALIGN) * ALIGN;
    }
    // The header's length depends on the offsets, which depend on where data starts: reserve
    // pages for the header first, then shift every offset by them.
    let draft = serde_json::to_vec(&Header {
        format: FORMAT,
        sqlora: env!("CARGO_PKG_VERSION").into(),
        model: model.clone(),
        tensors: BTreeMap::new(),
    })?;
    let room = (16 + draft.len() + entries.len() * 96).div_ceil(PAGE) * PAGE;
    for e in entries.values_mut() {
        e.offset += room;
    }
    let header = serde_json::to_vec(&Header {
        format: FORMAT,
        sqlora: env!("CARGO_PKG_VERSION").into(),
        model: model.clone(),
        tensors: entries,
    })?;
    if 16 + header.len() > room {
        return Err(std::io::Error::other(
            "weight cache header outgrew its room",
        ));
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        w.write_all(MAGIC)?;
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        w.write_all(&vec![0u8; room - 16 - header.len()])?;
        for (_, m) in tensors {
            let b = m.bytes();
            w.write_all(b)?;
            w.write_all(&vec![0u8; b.len().div_ceil(ALIGN) * ALIGN - b.len()])?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    if result.is_ok() {
        if let Some(dir) = file.parent() {
            remove_stale(dir, file, &model);
        }
    }
    result
}

/// Removes the cache files that will never be read again: of another format or sqlora version
/// (or no cache file at all), an older file of the same GGUF, or of a GGUF that is gone; and
/// temporary files a stopped process left more than an hour ago. Files of other GGUFs that are
/// still there stay.
fn remove_stale(dir: &Path, keep: &Path, model: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path == keep {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let key = |s: &str| s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let stale = match name.split_once('.') {
            Some((k, "int8")) if key(k) => match header(&path) {
                Some(h) => {
                    h.format != FORMAT
                        || h.sqlora != env!("CARGO_PKG_VERSION")
                        || h.model == model
                        || (!h.model.is_empty() && !Path::new(&h.model).exists())
                }
                None => true,
            },
            Some((k, rest))
                if key(k)
                    && rest
                        .strip_prefix("tmp.")
                        .is_some_and(|p| p.parse::<u32>().is_ok()) =>
            {
                e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 3600))
            }
            _ => false,
        };
        if stale {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn canonical(model: &Path) -> String {
    std::fs::canonicalize(model)
        .unwrap_or_else(|_| model.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

/// The header of a cache file, when it has one.
fn header(file: &Path) -> Option<Header> {
    use std::io::Read;
    let mut f = std::fs::File::open(file).ok()?;
    let mut start = [0u8; 16];
    f.read_exact(&mut start).ok()?;
    if &start[..8] != MAGIC {
        return None;
    }
    let len = u64::from_le_bytes(start[8..16].try_into().ok()?) as usize;
    let mut header = vec![0u8; len.min(1 << 24)];
    f.read_exact(&mut header).ok()?;
    serde_json::from_slice(&header).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn a_written_cache_maps_back_to_the_same_weights() {
        let dir = tempfile::tempdir().unwrap();
        let w = |rows: usize, cols: usize, seed: usize| {
            let v: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * seed) % 211) as f32 / 100.0 - 1.0)
                .collect();
            Int8Matrix::from_f32(&Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()).unwrap()
        };
        let (a, b) = (w(32, 64, 7), w(16, 96, 13));
        let c = Int8Matrix::from_qtensor(
            &candle_core::quantized::QTensor::quantize(
                &Tensor::ones((16, 64), candle_core::DType::F32, &Device::Cpu).unwrap(),
                candle_core::quantized::GgmlDType::Q5_0,
            )
            .unwrap(),
        )
        .unwrap();
        let key = |c: char| {
            dir.path()
                .join(format!("{}.int8", c.to_string().repeat(24)))
        };
        let file = key('a');
        let gguf = dir.path().join("m.gguf");
        std::fs::write(&gguf, b"model").unwrap();
        write(
            &file,
            &gguf,
            &[("a".into(), &a), ("b".into(), &b), ("c".into(), &c)],
        )
        .unwrap();
        let mapped = Mapped::open(&file).unwrap();
        assert_eq!(mapped.get("a").unwrap().bytes(), a.bytes());
        assert_eq!(mapped.get("b").unwrap().bytes(), b.bytes());
        let mc = mapped.get("c").unwrap();
        assert_eq!((mc.kind(), mc.bytes()), (Kind::Q5, c.bytes()));
        assert!(mapped.get("d").is_none());
        drop(mapped);
        // Writing a new file for the same GGUF removes its older one and files of another
        // format; another GGUF's file and files that are not the cache's stay.
        let other_gguf = dir.path().join("other.gguf");
        std::fs::write(&other_gguf, b"other").unwrap();
        write(&key('b'), &other_gguf, &[("a".into(), &a)]).unwrap();
        std::fs::write(key('c'), b"SQLINT8\0\x02\0\0\0\0\0\0\0{}").unwrap();
        let gone_gguf = dir.path().join("gone.gguf");
        std::fs::write(&gone_gguf, b"gone").unwrap();
        write(&key('e'), &gone_gguf, &[("a".into(), &a)]).unwrap();
        std::fs::remove_file(&gone_gguf).unwrap();
        let notes = dir.path().join("notes.int8");
        std::fs::write(&notes, b"mine").unwrap();
        write(&key('d'), &gguf, &[("a".into(), &a)]).unwrap();
        assert!(
            !file.exists() && !key('c').exists() && !key('e').exists(),
            "stale files stayed"
        );
        assert!(key('b').exists() && notes.exists() && key('d').exists());
        // A truncated file is not used.
        let bytes = std::fs::read(key('d')).unwrap();
        std::fs::write(key('d'), &bytes[..bytes.len() - 1]).unwrap();
        assert!(Mapped::open(&key('d')).is_none());
    }
}
