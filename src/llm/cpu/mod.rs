//! The CPU's own weight format and products: [`blocks::Int8Matrix`] holds each projection once,
//! as bytes with a scale and an offset per 32 weights (converted exactly from the GGUF's Q8_0,
//! Q4_0, Q5_0 and Q4_K), and [`gemm`] multiplies activations by it with integer dot products —
//! one representation for prefill and decode, instead of an f32 copy for one and a Q8_0 copy
//! for the other. [`store`] keeps the converted weights in the cache folder, mapped at the
//! next start. [`softmax`] is attention's causal softmax without a mask tensor.
//!
//! Owns CPU weights and kernels; never knows layers, adapters or models.

pub mod blocks;
pub mod gemm;
pub mod softmax;

pub use blocks::Int8Matrix;
pub use gemm::{add_lora, matmul, Kernel};
pub mod store;
