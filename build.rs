//! With the `cuda` feature: compiles the project's own CUDA kernels (`src/llm/cuda/kernels/*.cu`) to
//! PTX with nvcc, and (x86-64 Linux) builds the CUDA library shim described in
//! [`cuda_shim`]. The default (CPU) build needs nothing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/llm/cuda/kernels/decode.cu");
    println!("cargo:rerun-if-changed=src/llm/cuda/kernels/attention.cu");
    println!("cargo:rerun-if-changed=src/llm/cuda/kernels/layers.cu");
    println!("cargo:rerun-if-changed=src/llm/cuda/kernels/train.cu");
    println!("cargo:rerun-if-changed=src/llm/cuda/kernels/common.cuh");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rustc-check-cfg=cfg(sqlora_cuda_shim)");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let roots: Vec<PathBuf> = ["CUDA_ROOT", "CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .chain([PathBuf::from("/usr/local/cuda")])
        .collect();
    ptx(&out, &roots);
    let linux_x86 = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64");
    if linux_x86 && std::env::var_os("SQLORA_NO_CUDA_SHIM").is_none() {
        cuda_shim::build(&out, &roots);
    }
}

fn ptx(out: &Path, roots: &[PathBuf]) {
    let nvcc = roots
        .iter()
        .map(|root| root.join("bin").join("nvcc"))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    // PTX for the oldest architecture asked for; the driver compiles it for the card it runs on.
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let cap: String = cap.chars().filter(char::is_ascii_digit).collect();
    for name in ["decode", "attention", "layers", "train"] {
        let src = format!("src/llm/cuda/kernels/{name}.cu");
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17"])
            .arg(format!("-arch=compute_{cap}"))
            .arg(&src)
            .arg("-o")
            .arg(out.join(format!("{name}.ptx")))
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} to build the CUDA kernels ({e}); set CUDA_ROOT to the toolkit",
                    nvcc.display()
                )
            });
        assert!(status.success(), "nvcc failed on {src}");
    }
}

/// candle links the CUDA driver, runtime, cuBLAS, cuBLASLt, cuRAND and NVRTC at load time (cudarc's
/// `dynamic-linking`, which candle-core turns on and a feature cannot turn off), so a binary
/// linked against them does not even start where they are missing: the dynamic loader stops it
/// before `main`. The shim defines every function those libraries export as a small trampoline
/// that, on first call, opens the library with `dlopen` and jumps to the real function; if the
/// library cannot be opened, the call returns 100 (`CUDA_ERROR_NO_DEVICE`; a failure status for
/// every one of these APIs). With the symbols defined in the binary, the linker (which rustc
/// runs with `--as-needed`) no longer records the libraries as needed, so the binary starts
/// everywhere and `--device` can say in one line why CUDA is not there.
mod cuda_shim {
    use super::*;

    /// Libraries linked by candle's cudarc, in the order their symbols are claimed.
    const LIBS: [&str; 6] = ["cuda", "cudart", "cublas", "cublasLt", "curand", "nvrtc"];

    fn find(name: &str, roots: &[PathBuf]) -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::env::var("LIBRARY_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect();
        for r in roots {
            for sub in [
                "lib",
                "lib64",
                "lib/stubs",
                "lib64/stubs",
                "targets/x86_64-linux/lib",
            ] {
                dirs.push(r.join(sub));
            }
        }
        dirs.push("/usr/lib/x86_64-linux-gnu".into());
        let file = format!("lib{name}.so");
        dirs.into_iter().map(|d| d.join(&file)).find(|p| p.exists())
    }

    /// The library's SONAME and the functions it exports (default versions only).
    fn exports(lib: &Path) -> Option<(String, Vec<String>)> {
        let dump = Command::new("objdump").arg("-p").arg(lib).output().ok()?;
        let soname = String::from_utf8_lossy(&dump.stdout)
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("SONAME")
                    .map(|s| s.trim().to_string())
            })?;
        let nm = Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(lib)
            .output()
            .ok()?;
        let mut names = Vec::new();
        for line in String::from_utf8_lossy(&nm.stdout).lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let (kind, sym) = match parts.as_slice() {
                [_, k, s] => (*k, *s),
                _ => continue,
            };
            if !matches!(kind, "T" | "W" | "i") {
                continue;
            }
            // `name@@VERSION` is the default version; `name@VERSION` an older one.
            let name = match sym.split_once('@') {
                Some((n, rest)) if rest.starts_with('@') => n,
                Some(_) => continue,
                None => sym,
            };
            if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                names.push(name.to_string());
            }
        }
        Some((soname, names))
    }

    pub fn build(out: &Path, roots: &[PathBuf]) {
        let mut libs = Vec::new();
        for name in LIBS {
            let Some(path) = find(name, roots) else {
                println!(
                    "cargo:warning=lib{name}.so not found: no CUDA library shim, so this binary \
                     needs the CUDA libraries to start"
                );
                return;
            };
            println!("cargo:rerun-if-changed={}", path.display());
            let Some(e) = exports(&path) else {
                println!(
                    "cargo:warning=cannot read the exports of {}: no CUDA library shim",
                    path.display()
                );
                return;
            };
            libs.push(e);
        }
        let mut seen = std::collections::HashSet::new();
        let mut syms: Vec<(usize, String)> = Vec::new();
        for (i, (_, names)) in libs.iter().enumerate() {
            for n in names {
                if seen.insert(n.clone()) {
                    syms.push((i, n.clone()));
                }
            }
        }

        let mut c =
            String::from("#define _GNU_SOURCE\n#include <dlfcn.h>\n#include <stddef.h>\n\n");
        writeln!(c, "static const char *const LIBS[] = {{").unwrap();
        for (soname, _) in &libs {
            writeln!(c, "  \"{soname}\",").unwrap();
        }
        writeln!(
            c,
            "}};\nstatic void *handles[{}];\nstatic int tried[{}];",
            libs.len(),
            libs.len()
        )
        .unwrap();
        writeln!(c, "static char errors[{}][512];", libs.len()).unwrap();
        writeln!(c, "static const unsigned char LIB_OF[] = {{").unwrap();
        for (i, _) in &syms {
            write!(c, "{i},").unwrap();
        }
        writeln!(c, "}};\nstatic const char *const NAMES[] = {{").unwrap();
        for (_, n) in &syms {
            writeln!(c, "  \"{n}\",").unwrap();
        }
        writeln!(c, "}};").unwrap();
        writeln!(
            c,
            "__attribute__((visibility(\"hidden\"))) void *sqlora_shim_tab[{}];",
            syms.len()
        )
        .unwrap();
        c.push_str(
            r#"
static void *open_lib(unsigned l) {
  if (!__atomic_load_n(&tried[l], __ATOMIC_ACQUIRE)) {
    void *h = dlopen(LIBS[l], RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
      const char *e = dlerror();
      size_t i = 0;
      for (; e && e[i] && i < sizeof errors[l] - 1; i++) errors[l][i] = e[i];
      errors[l][i] = 0;
    }
    __atomic_store_n(&handles[l], h, __ATOMIC_RELEASE);
    __atomic_store_n(&tried[l], 1, __ATOMIC_RELEASE);
  }
  return __atomic_load_n(&handles[l], __ATOMIC_ACQUIRE);
}

__attribute__((visibility("hidden"))) void *sqlora_shim_resolve(unsigned idx) {
  void *h = open_lib(LIB_OF[idx]);
  if (!h) return NULL;
  void *p = dlsym(h, NAMES[idx]);
  __atomic_store_n(&sqlora_shim_tab[idx], p, __ATOMIC_RELEASE);
  return p;
}

/* NULL when every CUDA library opens; else why the first that does not. */
const char *sqlora_cuda_missing(void) {
  for (unsigned l = 0; l < sizeof LIBS / sizeof LIBS[0]; l++)
    if (!open_lib(l)) return errors[l][0] ? errors[l] : LIBS[l];
  return NULL;
}
"#,
        );

        let mut s = String::from(".text\n");
        for (idx, (_, n)) in syms.iter().enumerate() {
            // Jump to the resolved function; else resolve it (with its index in %eax).
            let off = idx * 8;
            writeln!(
                s,
                ".globl {n}\n.type {n},@function\n.p2align 4\n{n}:\n\
                 \x20 movq sqlora_shim_tab+{off}(%rip), %rax\n\
                 \x20 testq %rax, %rax\n  jz 1f\n  jmp *%rax\n\
                 1:\n  movl ${idx}, %eax\n  jmp sqlora_shim_slow\n.size {n}, .-{n}"
            )
            .unwrap();
        }
        s.push_str(
            r#"
.p2align 4
.type sqlora_shim_slow,@function
sqlora_shim_slow:
  pushq %rbp
  movq %rsp, %rbp
  pushq %rdi
  pushq %rsi
  pushq %rdx
  pushq %rcx
  pushq %r8
  pushq %r9
  subq $128, %rsp
  movdqu %xmm0, 0(%rsp)
  movdqu %xmm1, 16(%rsp)
  movdqu %xmm2, 32(%rsp)
  movdqu %xmm3, 48(%rsp)
  movdqu %xmm4, 64(%rsp)
  movdqu %xmm5, 80(%rsp)
  movdqu %xmm6, 96(%rsp)
  movdqu %xmm7, 112(%rsp)
  movl %eax, %edi
  call sqlora_shim_resolve@PLT
  movdqu 0(%rsp), %xmm0
  movdqu 16(%rsp), %xmm1
  movdqu 32(%rsp), %xmm2
  movdqu 48(%rsp), %xmm3
  movdqu 64(%rsp), %xmm4
  movdqu 80(%rsp), %xmm5
  movdqu 96(%rsp), %xmm6
  movdqu 112(%rsp), %xmm7
  addq $128, %rsp
  popq %r9
  popq %r8
  popq %rcx
  popq %rdx
  popq %rsi
  popq %rdi
  popq %rbp
  testq %rax, %rax
  jz 2f
  jmp *%rax
2:
  movl $100, %eax
  ret
.size sqlora_shim_slow, .-sqlora_shim_slow
.section .note.GNU-stack,"",@progbits
"#,
        );
        let c_file = out.join("cuda_shim.c");
        let s_file = out.join("cuda_shim.S");
        std::fs::write(&c_file, c).expect("write cuda_shim.c");
        std::fs::write(&s_file, s).expect("write cuda_shim.S");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        for (src, obj) in [(&c_file, "cuda_shim_c.o"), (&s_file, "cuda_shim_s.o")] {
            let ok = Command::new(&cc)
                .args(["-c", "-O2", "-fPIC"])
                .arg(src)
                .arg("-o")
                .arg(out.join(obj))
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "{cc} failed on {}", src.display());
        }
        let lib = out.join("libsqlora_cuda_shim.a");
        let _ = std::fs::remove_file(&lib);
        let ok = Command::new("ar")
            .arg("crs")
            .arg(&lib)
            .arg(out.join("cuda_shim_c.o"))
            .arg(out.join("cuda_shim_s.o"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ar failed on {}", lib.display());
        println!("cargo:rustc-link-search=native={}", out.display());
        println!("cargo:rustc-link-lib=static:+whole-archive=sqlora_cuda_shim");
        println!("cargo:rustc-cfg=sqlora_cuda_shim");
    }
}
