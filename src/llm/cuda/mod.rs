//! CUDA speed-ups of the model's one layer body (`llm::block`), each held to it by an
//! equivalence test in `tests/cuda.rs`: the fused single-sequence decoder ([`decode`]), fused
//! norm/RoPE/SwiGLU kernels with their backward ([`layers`]), fused training attention
//! ([`attention`]), and the hand-written QLoRA training layer ([`train_layer`], built from
//! [`train_ops`]). Their kernels are in `kernels/`, compiled to PTX by `build.rs`.
//!
//! Only built with the `cuda` feature; never chosen here (the engine and the trainer decide
//! when a speed-up runs).

pub mod attention;
pub mod decode;
pub mod layers;
pub mod train_layer;
pub mod train_ops;
