//! The CPU products one at a time, on the default model's shapes: sqlora's int8 kernel (the
//! best this CPU runs, on cells of kind U8, Q8 and Q5) beside candle's f32 matmul and its Q8_0 quantized matmul, for one row
//! (decode) and 555 rows (prefill). Random weights; GFLOP/s counts 2·rows·out·in.
//!
//! Run: `cargo bench --bench kernels` (`BENCH_ROWS=1,555` picks the row counts).

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use sqlora::llm::cpu::{gemm, Int8Matrix, Kernel};

fn time(mut f: impl FnMut(), budget: f64) -> f64 {
    f();
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed().as_secs_f64() < budget || n < 3 {
        f();
        n += 1;
    }
    t.elapsed().as_secs_f64() / n as f64
}

fn main() -> candle_core::Result<()> {
    let rows_list: Vec<usize> = std::env::var("BENCH_ROWS")
        .unwrap_or_else(|_| "1,555".into())
        .split(',')
        .filter_map(|v| v.parse().ok())
        .collect();
    let shapes = [
        ("q/o 896→896", 896, 896),
        ("gate/up 896→4864", 4864, 896),
        ("down 4864→896", 896, 4864),
        ("head 896→151936", 151936, 896),
    ];
    println!(
        "{} threads; kernels: {:?}",
        rayon::current_num_threads(),
        Kernel::available()
    );
    for &rows in &rows_list {
        for (name, n, k) in shapes {
            if rows > 1 && n > 100_000 {
                continue; // the head only ever sees one row
            }
            let w = Tensor::randn(0f32, 0.02, (n, k), &Device::Cpu)?;
            let x = Tensor::randn(0f32, 1.0, (rows, k), &Device::Cpu)?;
            let xv = x.flatten_all()?.to_vec1::<f32>()?;
            let q8 = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0)?)?;
            let kinds = [
                ("U8", Int8Matrix::from_f32(&w)?),
                (
                    "Q8",
                    Int8Matrix::from_qtensor(&QTensor::quantize(&w, GgmlDType::Q8_0)?)?,
                ),
                (
                    "Q5",
                    Int8Matrix::from_qtensor(&QTensor::quantize(&w, GgmlDType::Q5_0)?)?,
                ),
            ];
            let flops = 2.0 * (rows * n * k) as f64;
            let budget = 0.5;
            let mut line = format!("{rows:>4} rows {name:<18}");
            let f32_s = time(
                || {
                    x.matmul(&w.t().unwrap()).unwrap();
                },
                budget,
            );
            line += &format!(" f32 {:>6.1}", flops / f32_s / 1e9);
            let q8_s = time(
                || {
                    q8.forward(&x).unwrap();
                },
                budget,
            );
            line += &format!(" | q8_0 {:>6.1}", flops / q8_s / 1e9);
            for (label, m) in &kinds {
                let s = time(
                    || {
                        gemm::matmul_with(Kernel::best(), &xv, rows, m);
                    },
                    budget,
                );
                line += &format!(" | {label} {:>6.1}", flops / s / 1e9);
            }
            println!("{line}  GFLOP/s");
        }
    }
    Ok(())
}
