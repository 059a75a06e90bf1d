//! The adapter library: `adapters/<name>/` in sqlora's data dir, each holding PEFT's two files
//! plus `sqlora.json` (the base model the adapter belongs to, where it came from, when), and
//! `adapters/defaults.json` mapping a database identity to the adapter used with it (`none`:
//! the base model). The shipped adapter is installed here by [`super::bundled`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::adapter::{Adapter, Target, CONFIG_FILE, WEIGHTS_FILE};
use crate::llm::{Engine, LlmError};

pub const META_FILE: &str = "sqlora.json";
const DEFAULTS_FILE: &str = "defaults.json";

/// The base model an adapter was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseIdentity {
    pub architecture: String,
    pub hidden_size: usize,
    pub layers: usize,
    /// The GGUF file's sha256 when known.
    #[serde(default)]
    pub gguf_sha256: Option<String>,
}

/// `sqlora.json` beside the PEFT files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub base: BaseIdentity,
    pub created_at: String,
    /// Where it came from (an imported path, or a training run).
    pub source: String,
    /// Free-form summaries (training data, eval results) written by `train` and `eval`.
    #[serde(default)]
    pub training: Option<serde_json::Value>,
    #[serde(default)]
    pub eval: Option<serde_json::Value>,
}

/// The base identity of a loaded model whose GGUF file has the sha256 `gguf_sha256` when
/// known (the registry knows its own files': `hub::base_identity`).
pub fn base_of(engine: &Engine, gguf_sha256: Option<&str>) -> BaseIdentity {
    let c = &engine.model().config;
    BaseIdentity {
        architecture: format!("{:?}", c.arch).to_lowercase(),
        hidden_size: c.hidden,
        layers: engine.model().n_layers(),
        gguf_sha256: gguf_sha256.map(str::to_string),
    }
}

/// What an adapter's own tensors say about its base: hidden size (q_proj's input) and the
/// number of layers it covers at least.
fn base_from_weights(a: &Adapter) -> (Option<usize>, usize) {
    let hidden = a
        .weights
        .iter()
        .find(|((_, t), _)| {
            matches!(
                t,
                Target::Q | Target::K | Target::V | Target::Gate | Target::Up
            )
        })
        .and_then(|(_, p)| p.a.dims2().ok().map(|(_, inp)| inp));
    let layers = a.weights.keys().map(|(l, _)| l + 1).max().unwrap_or(0);
    (hidden, layers)
}

/// Why `meta` (or the adapter itself) does not fit `model`, if it does not.
pub fn mismatch(meta: Option<&Meta>, adapter: &Adapter, model: &BaseIdentity) -> Option<String> {
    if let Some(m) = meta {
        let b = &m.base;
        if b.architecture != model.architecture
            || b.hidden_size != model.hidden_size
            || b.layers != model.layers
        {
            return Some(format!(
                "it was made for a {} model with hidden size {} and {} layers; the loaded model \
                 is {} with hidden size {} and {} layers",
                b.architecture,
                b.hidden_size,
                b.layers,
                model.architecture,
                model.hidden_size,
                model.layers
            ));
        }
        if let (Some(a), Some(b)) = (&b.gguf_sha256, &model.gguf_sha256) {
            if a != b {
                return Some(format!(
                    "it was made for the GGUF with sha256 {}…, not this one ({}…)",
                    &a[..a.len().min(12)],
                    &b[..b.len().min(12)]
                ));
            }
        }
    }
    let (hidden, layers) = base_from_weights(adapter);
    if hidden.is_some_and(|h| h != model.hidden_size) || layers > model.layers {
        return Some(format!(
            "its weights are for hidden size {} and at least {layers} layers; the loaded model \
             has hidden size {} and {} layers",
            hidden.map_or_else(|| "?".into(), |h| h.to_string()),
            model.hidden_size,
            model.layers
        ));
    }
    None
}

/// The name the shipped adapter is installed under (`super::bundled`), kept for it: sqlora
/// replaces that folder when its content is not the shipped one.
pub const SHIPPED_NAME: &str = "qwen2.5-coder-0.5b-sql";

/// [`valid_name`] for a new adapter: also not [`SHIPPED_NAME`], nor `default` (a word of
/// `adapters use`).
pub fn new_name(name: &str) -> Result<(), LlmError> {
    valid_name(name)?;
    if name == SHIPPED_NAME {
        return Err(LlmError::Adapter(format!(
            "`{name}` is the name of the adapter shipped with sqlora; pick another"
        )));
    }
    if name == "default" {
        return Err(LlmError::Adapter(
            "`default` is a word of `adapters use`, not a usable adapter name".into(),
        ));
    }
    Ok(())
}

pub struct Library {
    dir: PathBuf,
}

fn io(path: &Path, e: impl std::fmt::Display) -> LlmError {
    LlmError::Adapter(format!("{}: {e}", path.display()))
}

/// Whether `name` can name an adapter in the library (one plain directory name): the check
/// every library operation makes, and `train` makes before anything else.
pub fn valid_name(name: &str) -> Result<(), LlmError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
        && name != "none";
    if ok {
        Ok(())
    } else {
        Err(LlmError::Adapter(format!(
            "`{name}` is not a usable adapter name (letters, digits, - _ . ; not `none`)"
        )))
    }
}

impl Library {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Adapter names, sorted.
    pub fn names(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(CONFIG_FILE).is_file())
            // `.name.PID`: an install in progress, or one a crash left.
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    pub fn meta(&self, name: &str) -> Option<Meta> {
        let text = std::fs::read_to_string(self.path(name).join(META_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Loads adapter `name`, refusing it when it does not fit `base`.
    pub fn load_for(&self, name: &str, base: &BaseIdentity) -> Result<Adapter, LlmError> {
        valid_name(name)?;
        let dir = self.path(name);
        if !dir.join(CONFIG_FILE).is_file() {
            return Err(LlmError::Adapter(format!(
                "no adapter named `{name}` in {} (see `sqlora adapters list`)",
                self.dir.display()
            )));
        }
        let adapter = Adapter::load(&dir)?;
        if let Some(why) = mismatch(self.meta(name).as_ref(), &adapter, base) {
            return Err(LlmError::Adapter(format!(
                "`{name}` does not fit this model: {why}"
            )));
        }
        Ok(adapter)
    }

    /// Copies a PEFT adapter directory into the library as `name`, recording `base` (the
    /// model it is checked against now).
    pub fn import(
        &self,
        from: &Path,
        name: &str,
        base: &BaseIdentity,
    ) -> Result<PathBuf, LlmError> {
        new_name(name)?;
        let adapter = Adapter::load(from)?;
        if let Some(why) = mismatch(None, &adapter, base) {
            return Err(LlmError::Adapter(format!(
                "{} does not fit this model: {why}",
                from.display()
            )));
        }
        let dest = self.path(name);
        if dest.exists() {
            return Err(LlmError::Adapter(format!(
                "an adapter named `{name}` exists already (remove it first, or pick --name)"
            )));
        }
        std::fs::create_dir_all(&dest).map_err(|e| io(&dest, e))?;
        for f in [CONFIG_FILE, WEIGHTS_FILE] {
            std::fs::copy(from.join(f), dest.join(f)).map_err(|e| io(&dest.join(f), e))?;
        }
        let meta = Meta {
            base: base.clone(),
            created_at: crate::clock::now_iso(),
            source: format!("imported from {}", from.display()),
            training: None,
            eval: None,
        };
        self.write_meta(name, &meta)?;
        Ok(dest)
    }

    /// Saves a new adapter (made by sqlora) as `name` with its `sqlora.json`.
    pub fn add(&self, name: &str, adapter: &Adapter, meta: &Meta) -> Result<PathBuf, LlmError> {
        new_name(name)?;
        let dest = self.path(name);
        if dest.join(CONFIG_FILE).exists() {
            return Err(LlmError::Adapter(format!(
                "an adapter named `{name}` exists already"
            )));
        }
        adapter.save(&dest)?;
        self.write_meta(name, meta)?;
        Ok(dest)
    }

    pub fn write_meta(&self, name: &str, meta: &Meta) -> Result<(), LlmError> {
        let path = self.path(name).join(META_FILE);
        let text = serde_json::to_string_pretty(meta).map_err(|e| io(&path, e))?;
        std::fs::write(&path, text + "\n").map_err(|e| io(&path, e))
    }

    /// Records an evaluation of adapter `name` in its `sqlora.json`, under `eval.<key>` (the
    /// latest result per set and slice replaces the one before).
    pub fn record_eval(
        &self,
        name: &str,
        key: &str,
        result: serde_json::Value,
    ) -> Result<(), LlmError> {
        valid_name(name)?;
        let path = self.path(name).join(META_FILE);
        let mut meta = self
            .meta(name)
            .ok_or_else(|| io(&path, "missing or unreadable, cannot record the evaluation"))?;
        let mut evals = match meta.eval.take() {
            Some(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        evals.insert(key.to_string(), result);
        meta.eval = Some(serde_json::Value::Object(evals));
        self.write_meta(name, &meta)
    }

    /// Copies adapter `name`'s PEFT files (and `sqlora.json`) to `to`.
    pub fn export(&self, name: &str, to: &Path) -> Result<(), LlmError> {
        valid_name(name)?;
        let src = self.path(name);
        if !src.join(CONFIG_FILE).is_file() {
            return Err(LlmError::Adapter(format!("no adapter named `{name}`")));
        }
        std::fs::create_dir_all(to).map_err(|e| io(to, e))?;
        for f in [CONFIG_FILE, WEIGHTS_FILE, META_FILE] {
            if src.join(f).is_file() {
                std::fs::copy(src.join(f), to.join(f)).map_err(|e| io(&to.join(f), e))?;
            }
        }
        Ok(())
    }

    pub fn remove(&self, name: &str) -> Result<(), LlmError> {
        valid_name(name)?;
        let dir = self.path(name);
        if !dir.join(CONFIG_FILE).is_file() {
            return Err(LlmError::Adapter(format!("no adapter named `{name}`")));
        }
        std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let mut d = self.defaults();
        d.retain(|_, v| v != name);
        self.write_defaults(&d)
    }

    /// Per-database default adapters: database identity → adapter name.
    pub fn defaults(&self) -> BTreeMap<String, String> {
        std::fs::read_to_string(self.dir.join(DEFAULTS_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn write_defaults(&self, d: &BTreeMap<String, String>) -> Result<(), LlmError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let path = self.dir.join(DEFAULTS_FILE);
        let text = serde_json::to_string_pretty(d).map_err(|e| io(&path, e))?;
        std::fs::write(&path, text + "\n").map_err(|e| io(&path, e))
    }

    /// Makes `name` (or the base model, with `None`: stored as `none`) the default for database
    /// `db_identity`.
    pub fn set_default(&self, db_identity: &str, name: Option<&str>) -> Result<(), LlmError> {
        let mut d = self.defaults();
        match name {
            Some(n) => {
                valid_name(n)?;
                if !self.path(n).join(CONFIG_FILE).is_file() {
                    return Err(LlmError::Adapter(format!("no adapter named `{n}`")));
                }
                d.insert(db_identity.to_string(), n.to_string());
            }
            None => {
                d.insert(db_identity.to_string(), "none".to_string());
            }
        }
        self.write_defaults(&d)
    }

    /// Forgets database `db_identity`'s choice: it gets what any database gets (the shipped
    /// adapter with the model it was made for, else the base model).
    pub fn clear_default(&self, db_identity: &str) -> Result<(), LlmError> {
        let mut d = self.defaults();
        if d.remove(db_identity).is_some() {
            self.write_defaults(&d)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::lora::adapter::{AdapterConfig, LoraPair};
    use candle_core::{DType, Device, Tensor};

    fn tiny(hidden: usize, layers: usize) -> Adapter {
        let mut weights = BTreeMap::new();
        for l in 0..layers {
            weights.insert(
                (l, Target::Q),
                LoraPair {
                    a: Tensor::zeros((2, hidden), DType::F32, &Device::Cpu).unwrap(),
                    b: Tensor::zeros((hidden, 2), DType::F32, &Device::Cpu).unwrap(),
                },
            );
        }
        Adapter {
            config: AdapterConfig::new(2, 4.0, &[Target::Q]),
            weights,
            sha256: String::new(),
            label: "tiny".into(),
        }
    }

    fn base(hidden: usize, layers: usize) -> BaseIdentity {
        BaseIdentity {
            architecture: "qwen2".into(),
            hidden_size: hidden,
            layers,
            gguf_sha256: None,
        }
    }

    #[test]
    fn import_list_default_export_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("peft");
        tiny(8, 2).save(&src).unwrap();
        let lib = Library::new(tmp.path().join("adapters"));
        lib.import(&src, "shop", &base(8, 2)).unwrap();
        assert_eq!(lib.names(), ["shop"]);
        assert_eq!(lib.meta("shop").unwrap().base, base(8, 2));
        assert!(
            lib.import(&src, "shop", &base(8, 2)).is_err(),
            "no overwrite"
        );
        assert!(lib.import(&src, "../evil", &base(8, 2)).is_err());
        lib.load_for("shop", &base(8, 2)).unwrap();
        let e = lib.load_for("shop", &base(16, 2)).unwrap_err().to_string();
        assert!(e.contains("does not fit this model"), "{e}");
        let e = lib
            .import(&src, "other", &base(8, 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 2 layers"), "{e}");
        lib.set_default("sqlite:/y.db", None).unwrap();
        assert_eq!(
            lib.defaults()["sqlite:/y.db"],
            "none",
            "the base model, chosen"
        );
        lib.clear_default("sqlite:/y.db").unwrap();
        assert!(!lib.defaults().contains_key("sqlite:/y.db"));
        lib.set_default("sqlite:/x.db", Some("shop")).unwrap();
        assert_eq!(lib.defaults()["sqlite:/x.db"], "shop");
        let out = tmp.path().join("out");
        lib.export("shop", &out).unwrap();
        assert!(out.join(WEIGHTS_FILE).is_file() && out.join(META_FILE).is_file());
        lib.remove("shop").unwrap();
        assert!(lib.names().is_empty());
        assert!(
            lib.defaults().is_empty(),
            "defaults forget a removed adapter"
        );
        assert!(lib
            .load_for("shop", &base(8, 2))
            .unwrap_err()
            .to_string()
            .contains("no adapter named"));
    }
}
