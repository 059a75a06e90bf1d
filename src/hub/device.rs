//! Which device runs the model: `--device auto|cpu|cuda[:N]`.
//!
//! CUDA exists only in builds with the `cuda` feature (`cargo build --release --features
//! cuda`); the default build is CPU-only. `auto` takes the first CUDA device when the build has
//! CUDA and a device answers, and the CPU otherwise.

use candle_core::Device;

use crate::llm::{LlmError, WeightFormat, WeightPlan};

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" | "" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device `{s}` (auto, cpu, cuda, cuda:N)")),
        }
    }
}

/// Whether this build can run on CUDA at all.
pub const CUDA_BUILD: bool = cfg!(feature = "cuda");

/// Why the CUDA libraries cannot be loaded (driver, runtime, cuBLAS, cuRAND, NVRTC), or `None`.
/// CUDA builds open them at run time through the shim `build.rs` generates, so that a CUDA
/// build starts, and says this, on a machine without them.
#[cfg(sqlora_cuda_shim)]
fn cuda_libraries_missing() -> Option<String> {
    extern "C" {
        fn sqlora_cuda_missing() -> *const std::ffi::c_char;
    }
    // SAFETY: returns NULL or a NUL-terminated string that lives as long as the process.
    let p = unsafe { sqlora_cuda_missing() };
    (!p.is_null()).then(|| {
        // SAFETY: non-null, NUL-terminated (see above).
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned()
    })
}

#[cfg(not(sqlora_cuda_shim))]
fn cuda_libraries_missing() -> Option<String> {
    None
}

/// The device for `choice`, and a line saying which one was chosen and why.
pub fn select(choice: DeviceChoice) -> Result<(Device, String), LlmError> {
    match choice {
        DeviceChoice::Cpu => Ok((Device::Cpu, "CPU".into())),
        DeviceChoice::Cuda(n) => {
            if !CUDA_BUILD {
                return Err(LlmError::Device(
                    "this sqlora was built without CUDA; build it with `cargo build --release \
                     --features cuda`, or use --device cpu"
                        .into(),
                ));
            }
            if let Some(why) = cuda_libraries_missing() {
                return Err(LlmError::Device(format!(
                    "CUDA device {n} is not usable: {why} (is the NVIDIA driver installed and \
                     are the CUDA libraries on LD_LIBRARY_PATH? --device cpu runs without them)"
                )));
            }
            let d = Device::new_cuda(n).map_err(|e| {
                LlmError::Device(format!("CUDA device {n} is not usable: {}", one_line(&e)))
            })?;
            Ok((d, format!("CUDA device {n}")))
        }
        DeviceChoice::Auto => {
            if let Some(why) = CUDA_BUILD.then(cuda_libraries_missing).flatten() {
                return Ok((
                    Device::Cpu,
                    format!("CPU (auto: CUDA libraries not found: {why})"),
                ));
            }
            if CUDA_BUILD {
                match Device::new_cuda(0) {
                    Ok(d) => return Ok((d, "CUDA device 0 (auto)".into())),
                    Err(e) => {
                        return Ok((
                            Device::Cpu,
                            format!("CPU (auto: no CUDA device answered: {})", one_line(&e)),
                        ))
                    }
                }
            }
            Ok((Device::Cpu, "CPU (auto; this build has no CUDA)".into()))
        }
    }
}

/// The weight representation per phase for `device`. CPU: sqlora's int8 cells for both phases
/// (see [`WeightPlan::cpu_default`]). CUDA (measured on one H200, `scripts/bench-gpu`): dense
/// f32 weights through cuBLAS for prefill (38–40k tok/s on a 555-token prompt, against 5.6k
/// with the GGUF's own kernels) and the GGUF's 4-bit kernels for decode (122–129 tok/s, against
/// 105 with f32). `SQLORA_WEIGHTS=PREFILL,DECODE` (native, q8_0, f32, int8) overrides either.
pub fn plan_for(device: &Device) -> WeightPlan {
    let mut plan = if device.is_cuda() {
        WeightPlan {
            prefill: WeightFormat::F32,
            decode: WeightFormat::Native,
            wide_rows: 4,
        }
    } else {
        WeightPlan::cpu_default()
    };
    if let Ok(v) = std::env::var("SQLORA_WEIGHTS") {
        let mut parts = v.split(',').map(|p| p.parse::<WeightFormat>());
        if let Some(Ok(f)) = parts.next() {
            plan.prefill = f;
        }
        if let Some(Ok(f)) = parts.next() {
            plan.decode = f;
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_cpu_builds_refuse_cuda_clearly() {
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert_eq!("CPU".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        assert!("tpu"
            .parse::<DeviceChoice>()
            .unwrap_err()
            .contains("unknown device"));
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        let (d, why) = select(DeviceChoice::Cpu).unwrap();
        assert!(d.is_cpu() && why == "CPU");
        if !CUDA_BUILD {
            let err = select(DeviceChoice::Cuda(0)).unwrap_err().to_string();
            assert!(err.contains("--features cuda"), "{err}");
            assert!(!err.contains('\n'));
            let (d, why) = select(DeviceChoice::Auto).unwrap();
            assert!(d.is_cpu() && why.contains("no CUDA"), "{why}");
        }
    }
}
