//! The application layer: one file per command (`ask`, `eval`, `train`, `feedback`,
//! `adapters`, `model`, `shell`, `config`), each turning parsed arguments into work and
//! printing the result, over [`session`], which opens what they work with (database,
//! pipeline, model, adapter, feedback store) one way for all, and [`progress`], which draws
//! the bars and wires Ctrl-C once. This is the only layer that knows the command line
//! ([`crate::cli`]) and the config file; imports run down from here — to the shell, the
//! pipeline and below — never up.

pub mod adapters;
pub mod ask;
pub mod config;
pub mod corrections;
pub mod eval;
pub mod feedback;
pub mod model;
pub mod progress;
pub mod rl;
pub mod session;
pub mod shell;
pub mod train;
