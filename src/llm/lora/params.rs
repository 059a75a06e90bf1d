//! The trainable form of an adapter: one pair of f32 `Var`s (`A` `[r, in]`, `B` `[out, r]`) per
//! adapted projection, initialised as PEFT does or copied from an adapter, and turned back into
//! an [`Adapter`] to save.
//!
//! Holds parameters only; never runs the model or steps an optimizer.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};

use super::adapter::{Adapter, AdapterConfig, LoraPair, Target};
use crate::llm::model::Model;
use crate::llm::LlmError;

/// Trainable LoRA matrices for the projections they target: `A` `[r, in]`, `B` `[out, r]`.
pub struct LoraParams {
    pub pairs: BTreeMap<(usize, Target), (Var, Var)>,
    pub config: AdapterConfig,
}

impl LoraParams {
    /// PEFT's initialisation: `A` uniform in ±1/√in (Kaiming-uniform with a = √5), `B` zero,
    /// drawn from `rng` so that a seed fixes them.
    pub fn init(
        model: &Model,
        config: AdapterConfig,
        targets: &[Target],
        rng: &mut impl rand::Rng,
    ) -> Result<Self, LlmError> {
        let dev = model.device().clone();
        let r = config.r;
        let mut pairs = BTreeMap::new();
        for layer in 0..model.n_layers() {
            for &t in targets {
                let (out, inp) = model
                    .projection_dims(layer, t)
                    .ok_or_else(|| LlmError::Generation(format!("no layer {layer}")))?;
                let bound = 1.0 / (inp as f32).sqrt();
                let a: Vec<f32> = (0..r * inp)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                let a = Var::from_tensor(&Tensor::from_vec(a, (r, inp), &dev)?)?;
                let b = Var::zeros((out, r), DType::F32, &dev)?;
                pairs.insert((layer, t), (a, b));
            }
        }
        Ok(Self { pairs, config })
    }

    /// No adapter (the base model), for comparisons.
    pub fn none() -> Self {
        Self {
            pairs: BTreeMap::new(),
            config: AdapterConfig::new(1, 1.0, &[]),
        }
    }

    /// Trainable copies of an adapter's matrices on `dev` (to resume a run). Copies even where
    /// the dtype and device already match: training updates its variables in place, and must
    /// never change the adapter it started from (or another copy made from it).
    pub fn from_adapter(adapter: &Adapter, dev: &Device) -> Result<Self, LlmError> {
        let mut pairs = BTreeMap::new();
        for (k, p) in &adapter.weights {
            let a = Var::from_tensor(&p.a.to_dtype(DType::F32)?.to_device(dev)?.copy()?)?;
            let b = Var::from_tensor(&p.b.to_dtype(DType::F32)?.to_device(dev)?.copy()?)?;
            pairs.insert(*k, (a, b));
        }
        Ok(Self {
            pairs,
            config: adapter.config.clone(),
        })
    }

    pub fn vars(&self) -> Vec<Var> {
        self.pairs
            .values()
            .flat_map(|(a, b)| [a.clone(), b.clone()])
            .collect()
    }

    /// The current weights as an adapter (f32, on the CPU): a snapshot, which later steps of
    /// training do not change.
    pub fn to_adapter(&self, label: &str) -> Result<Adapter, LlmError> {
        let mut weights = BTreeMap::new();
        for (k, (a, b)) in &self.pairs {
            let snap = |t: &Var| t.as_tensor().to_device(&candle_core::Device::Cpu)?.copy();
            weights.insert(
                *k,
                LoraPair {
                    a: snap(a)?,
                    b: snap(b)?,
                },
            );
        }
        Ok(Adapter {
            config: self.config.clone(),
            weights,
            sha256: String::new(),
            label: label.to_string(),
        })
    }
}
