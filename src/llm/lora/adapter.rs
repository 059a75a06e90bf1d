//! LoRA adapters in Hugging Face PEFT's layout: `adapter_config.json` and
//! `adapter_model.safetensors` with tensors named
//! `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` (`[r, in]`) and
//! `….lora_B.weight` (`[out, r]`), for `q_proj`, `k_proj`, `v_proj`, `o_proj` and
//! `mlp.gate_proj`, `up_proj`, `down_proj`. They map onto the GGUF projections `blk.{i}.attn_q`,
//! … and are applied as `y = base(x) + scale · (x·Aᵀ)·Bᵀ` with `scale = alpha / r` (or
//! `alpha / √r` with rsLoRA), leaving the 4-bit base untouched.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::llm::LlmError;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The projections an adapter can target, by their PEFT module names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// PEFT's module name (`target_modules` entry).
    pub fn module(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// The path under `model.layers.{i}` in a Hugging Face checkpoint.
    fn path(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }

    /// The GGUF tensor the projection corresponds to.
    pub fn gguf(self) -> &'static str {
        match self {
            Target::Q => "attn_q",
            Target::K => "attn_k",
            Target::V => "attn_v",
            Target::O => "attn_output",
            Target::Gate => "ffn_gate",
            Target::Up => "ffn_up",
            Target::Down => "ffn_down",
        }
    }

    fn from_module(m: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.module() == m)
    }

    /// A target as a user names it: PEFT's module name (`q_proj`) or its short form (`q`).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::from_module(name).or_else(|| {
            Self::ALL
                .into_iter()
                .find(|t| t.module().trim_end_matches("_proj") == name)
        })
    }
}

/// PEFT's `adapter_config.json` (the fields sqlora reads and writes; others are kept as is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    pub target_modules: TargetModules,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default = "default_bias")]
    pub bias: String,
    #[serde(default = "default_peft_type")]
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

fn default_bias() -> String {
    "none".into()
}
fn default_peft_type() -> String {
    "LORA".into()
}

/// PEFT's `target_modules`: a list of module names, or one string (`"all-linear"` or a regex
/// over module paths). Either way the tensors present decide what is adapted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    Pattern(String),
}

impl std::fmt::Display for TargetModules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetModules::List(v) => f.write_str(&v.join(",")),
            TargetModules::Pattern(p) => write!(f, "{p:?}"),
        }
    }
}

impl AdapterConfig {
    pub fn new(r: usize, lora_alpha: f64, targets: &[Target]) -> Self {
        Self {
            r,
            lora_alpha,
            lora_dropout: 0.0,
            target_modules: TargetModules::List(
                targets.iter().map(|t| t.module().to_string()).collect(),
            ),
            use_rslora: false,
            base_model_name_or_path: None,
            bias: default_bias(),
            peft_type: default_peft_type(),
            task_type: Some("CAUSAL_LM".into()),
            other: BTreeMap::new(),
        }
    }

    /// `alpha / r`, or `alpha / √r` with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }
}

/// One adapted projection: `A` is `[r, in]`, `B` is `[out, r]`, both f32.
#[derive(Debug, Clone)]
pub struct LoraPair {
    pub a: Tensor,
    pub b: Tensor,
}

/// A loaded adapter.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub config: AdapterConfig,
    /// `(layer, target) → (A, B)`.
    pub weights: BTreeMap<(usize, Target), LoraPair>,
    /// sha256 of the weights file: identifies the adapter (prompt caches are keyed by it).
    pub sha256: String,
    /// A name to show (the library name, or the directory it was read from).
    pub label: String,
}

fn bad(dir: &Path, what: impl std::fmt::Display) -> LlmError {
    LlmError::Adapter(format!("{}: {what}", dir.display()))
}

/// PEFT's tensor name for a layer's projection.
pub fn tensor_name(layer: usize, target: Target, which: char) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.lora_{which}.weight",
        target.path()
    )
}

fn parse_name(name: &str) -> Option<(usize, Target, char)> {
    let rest = name.strip_prefix("base_model.model.model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer = layer.parse().ok()?;
    let (path, tail) = rest.split_once(".lora_")?;
    let which = match tail {
        "A.weight" | "A.default.weight" => 'A',
        "B.weight" | "B.default.weight" => 'B',
        _ => return None,
    };
    let target = Target::ALL.into_iter().find(|t| t.path() == path)?;
    Some((layer, target, which))
}

impl Adapter {
    /// Reads an adapter directory in PEFT's layout, checking shapes against `r` and refusing
    /// non-finite weights.
    pub fn load(dir: &Path) -> Result<Self, LlmError> {
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| bad(dir, format!("cannot read {CONFIG_FILE}: {e}")))?;
        let config: AdapterConfig = serde_json::from_str(&text)
            .map_err(|e| bad(dir, format!("{CONFIG_FILE} is not a PEFT LoRA config: {e}")))?;
        if config.peft_type.to_uppercase() != "LORA" {
            return Err(bad(
                dir,
                format!("peft_type {} is not LORA", config.peft_type),
            ));
        }
        if config.r == 0 {
            return Err(bad(dir, "r is 0"));
        }
        if config.bias != "none" {
            return Err(bad(
                dir,
                format!("bias \"{}\" is not supported (only \"none\")", config.bias),
            ));
        }
        // PEFT options that change what the weights mean: refuse rather than compute something
        // else than PEFT would.
        let on = |k: &str| match config.other.get(k) {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::Object(m)) => !m.is_empty(),
            Some(serde_json::Value::Array(a)) => !a.is_empty(),
            Some(serde_json::Value::Null) | None => false,
            Some(_) => true,
        };
        for (key, what) in [
            ("use_dora", "DoRA (use_dora)"),
            ("fan_in_fan_out", "fan_in_fan_out weights"),
            ("lora_bias", "LoRA biases (lora_bias)"),
            ("rank_pattern", "per-module ranks (rank_pattern)"),
            ("alpha_pattern", "per-module alphas (alpha_pattern)"),
            (
                "modules_to_save",
                "fully trained extra modules (modules_to_save)",
            ),
            ("layer_replication", "layer_replication"),
        ] {
            if on(key) {
                return Err(bad(dir, format!("{what} is not supported by sqlora")));
            }
        }
        let listed: &[String] = match &config.target_modules {
            TargetModules::List(v) => v,
            TargetModules::Pattern(_) => &[],
        };
        for m in listed {
            if Target::from_module(m).is_none() {
                return Err(bad(
                    dir,
                    format!("target module `{m}` is not one sqlora can adapt"),
                ));
            }
        }
        let weights_path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&weights_path)
            .map_err(|e| bad(dir, format!("cannot read {WEIGHTS_FILE}: {e}")))?;
        let sha256 = {
            use sha2::{Digest, Sha256};
            format!("{:x}", Sha256::digest(&bytes))
        };
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| bad(dir, format!("{WEIGHTS_FILE} is not valid safetensors: {e}")))?;
        let mut halves: BTreeMap<(usize, Target), (Option<Tensor>, Option<Tensor>)> =
            BTreeMap::new();
        for (name, t) in tensors {
            let Some((layer, target, which)) = parse_name(&name) else {
                return Err(bad(dir, format!("unexpected tensor `{name}`")));
            };
            let t = t.to_dtype(DType::F32)?;
            let finite = t
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .all(|v| v.is_finite());
            if !finite {
                return Err(bad(
                    dir,
                    format!("tensor `{name}` holds NaN or infinite values"),
                ));
            }
            let (rows, cols) = t
                .dims2()
                .map_err(|_| bad(dir, format!("tensor `{name}` is not a matrix")))?;
            let ok = match which {
                'A' => rows == config.r,
                _ => cols == config.r,
            };
            if !ok {
                return Err(bad(
                    dir,
                    format!(
                        "tensor `{name}` is {rows}x{cols}, which does not fit r = {}",
                        config.r
                    ),
                ));
            }
            let e = halves.entry((layer, target)).or_default();
            if which == 'A' {
                e.0 = Some(t);
            } else {
                e.1 = Some(t);
            }
        }
        let mut weights = BTreeMap::new();
        for ((layer, target), (a, b)) in halves {
            match (a, b) {
                (Some(a), Some(b)) => {
                    weights.insert((layer, target), LoraPair { a, b });
                }
                _ => {
                    return Err(bad(
                        dir,
                        format!(
                            "layer {layer} {} has only one of lora_A and lora_B",
                            target.module()
                        ),
                    ))
                }
            }
        }
        if weights.is_empty() {
            return Err(bad(dir, "the adapter holds no LoRA weights"));
        }
        Ok(Self {
            config,
            weights,
            sha256,
            label: dir.file_name().map_or_else(
                || dir.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
        })
    }

    /// Writes the adapter in PEFT's layout (f32 tensors).
    pub fn save(&self, dir: &Path) -> Result<(), LlmError> {
        std::fs::create_dir_all(dir).map_err(|e| bad(dir, e))?;
        let config = serde_json::to_string_pretty(&self.config).map_err(|e| bad(dir, e))?;
        std::fs::write(dir.join(CONFIG_FILE), config + "\n").map_err(|e| bad(dir, e))?;
        let mut tensors = std::collections::HashMap::new();
        for ((layer, target), pair) in &self.weights {
            tensors.insert(tensor_name(*layer, *target, 'A'), pair.a.clone());
            tensors.insert(tensor_name(*layer, *target, 'B'), pair.b.clone());
        }
        candle_core::safetensors::save(&tensors, dir.join(WEIGHTS_FILE)).map_err(|e| bad(dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_scale_follows_rslora() {
        for t in Target::ALL {
            for w in ['A', 'B'] {
                assert_eq!(parse_name(&tensor_name(7, t, w)), Some((7, t, w)));
            }
        }
        assert_eq!(Target::from_name("gate"), Some(Target::Gate));
        assert_eq!(Target::from_name(" q_proj"), Some(Target::Q));
        assert_eq!(Target::from_name("c_attn"), None);
        assert_eq!(
            parse_name("base_model.model.model.layers.3.mlp.down_proj.lora_B.default.weight"),
            Some((3, Target::Down, 'B'))
        );
        assert_eq!(parse_name("base_model.model.lm_head.weight"), None);
        let mut c = AdapterConfig::new(16, 32.0, &[Target::Q]);
        assert_eq!(c.scale(), 2.0);
        c.use_rslora = true;
        assert_eq!(c.scale(), 8.0);
    }

    #[test]
    fn save_load_and_bad_adapters() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tensor::ones((4, 8), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros((6, 4), DType::F32, &Device::Cpu).unwrap();
        let mut weights = BTreeMap::new();
        weights.insert(
            (0, Target::Q),
            LoraPair {
                a: a.clone(),
                b: b.clone(),
            },
        );
        let adapter = Adapter {
            config: AdapterConfig::new(4, 8.0, &[Target::Q]),
            weights,
            sha256: String::new(),
            label: "t".into(),
        };
        adapter.save(dir.path()).unwrap();
        let back = Adapter::load(dir.path()).unwrap();
        assert_eq!(back.config.r, 4);
        assert_eq!(back.weights.len(), 1);
        assert_eq!(back.sha256.len(), 64);

        // Wrong rank for the config.
        let mut cfg = back.config.clone();
        cfg.r = 5;
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            serde_json::to_string(&cfg).unwrap(),
        )
        .unwrap();
        let e = Adapter::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("does not fit r = 5"), "{e}");
        // Missing files and NaNs.
        let empty = tempfile::tempdir().unwrap();
        assert!(Adapter::load(empty.path())
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
        let nan = Tensor::new(&[[f32::NAN; 8]; 4], &Device::Cpu).unwrap();
        let mut weights = BTreeMap::new();
        weights.insert((0, Target::Q), LoraPair { a: nan, b });
        Adapter { weights, ..adapter }.save(dir.path()).unwrap();
        let e = Adapter::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("NaN"), "{e}");
    }
}
