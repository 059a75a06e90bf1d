//! LoRA adapters: the PEFT adapter files and their application ([`adapter`]), the trainable
//! parameters ([`params`]) and the dropout on their input ([`dropout`]) used in training, the
//! on-disk library of named adapters ([`library`]), the adapter shipped for the default model
//! ([`bundled`]), and an adapter as a llama.cpp LoRA GGUF ([`gguf`]).
//!
//! Never runs the model itself; the model applies an adapter it is given.

pub mod adapter;
pub mod bundled;
pub mod dropout;
pub mod gguf;
pub mod library;
pub mod params;
