//! The language model: GGUF loading, the tokenizer built from GGUF metadata, the one model
//! forward, greedy generation with a cached prompt prefix, and the prompt builder.
//!
//! Knows nothing of databases or SQL execution; never prints (progress goes through callbacks).

#[cfg(feature = "cuda")]
pub mod cuda_attention;
#[cfg(feature = "cuda")]
pub mod cuda_decode;
#[cfg(feature = "cuda")]
pub mod cuda_layers;
#[cfg(feature = "cuda")]
pub mod cuda_train;
pub mod device;
pub mod gguf_check;
pub mod library;
pub mod lora;
pub mod model;
pub mod prompt;
pub mod registry;
pub mod tokenizer;
pub mod trainable;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};

use crate::cancel::Cancel;
pub use model::{Arch, BatchCache, KvCache, Model, ModelConfig, WeightFormat, WeightPlan};
pub use prompt::{ChatTemplate, Prompt};
pub use tokenizer::TextTokenizer;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The cause is part of the message (and not also a `source`: it would show twice).
    #[error("cannot read model file {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("not a usable GGUF model: {0}")]
    Corrupt(String),
    /// The file's header, metadata or tensor table is malformed ([`gguf_check`]).
    #[error("model file {} is not a valid GGUF: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// The device asked for cannot run the model (no CUDA in this build, no driver, no GPU).
    #[error("{0}")]
    Device(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("generation failed: {0}")]
    Generation(String),
    #[error("cancelled")]
    Cancelled,
    #[error("model fetch failed: {0}")]
    Fetch(String),
    #[error("adapter {0}")]
    Adapter(String),
    /// A training data file that cannot be read or holds something else than pairs.
    #[error("training data {0}")]
    TrainingData(String),
}

impl From<candle_core::Error> for LlmError {
    fn from(e: candle_core::Error) -> Self {
        LlmError::Generation(e.to_string())
    }
}

/// Options for loading a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub plan: WeightPlan,
    pub device: Device,
    /// Where the KV state of prompt prefixes is kept between runs (`None`: memory only).
    pub kv_dir: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            plan: WeightPlan::cpu_default(),
            device: Device::Cpu,
            kv_dir: None,
        }
    }
}

/// Prefix KV files kept on disk; older ones are removed.
const KV_FILES_KEPT: usize = 8;

/// A caller's test for "the answer is complete", checked on the answer text after each token.
#[derive(Clone)]
pub struct StopRule(pub std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for StopRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopRule(..)")
    }
}

/// Options for one generation.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub max_new_tokens: usize,
    /// Generation stops once the text produced so far ends a fenced code block.
    pub stop_at_fence_close: bool,
    /// Generation also stops once this holds for the answer text.
    pub stop_when: Option<StopRule>,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 320,
            stop_at_fence_close: true,
            stop_when: None,
        }
    }
}

/// What one generation produced and what it cost.
#[derive(Debug, Clone, Default)]
pub struct Generation {
    pub text: String,
    /// Prompt tokens run through the model for this call (the cached prefix excluded).
    pub prefill_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
    pub new_tokens: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
}

impl Generation {
    /// Adds another generation's costs (for an answer that took several attempts).
    pub fn add(&mut self, other: &Generation) {
        self.text = other.text.clone();
        self.prefill_tokens += other.prefill_tokens;
        self.cached_tokens += other.cached_tokens;
        self.new_tokens += other.new_tokens;
        self.prefill_secs += other.prefill_secs;
        self.decode_secs += other.decode_secs;
    }
}

/// Identity of the loaded model file, for display and (later) logging.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub name: String,
    pub arch: Arch,
    pub file_size: u64,
    pub load_secs: f64,
    /// Where the model runs, in words ("CPU", "CUDA device 0").
    pub device: String,
}

struct PrefixState {
    text: String,
    ids: Vec<u32>,
    cache: KvCache,
}

/// A loaded model with its tokenizer, ready to answer prompts.
pub struct Engine {
    model: Model,
    tokenizer: TextTokenizer,
    template: ChatTemplate,
    info: ModelInfo,
    prefix: Option<PrefixState>,
    kv_dir: Option<PathBuf>,
    /// Identifies this model file and weight plan in prefix-cache keys.
    identity: String,
    /// Tokens generated since loading (all calls to `generate`).
    generated: usize,
    /// The adapter applied, if any (its sha256 keys the prompt caches too).
    adapter: Option<lora::Adapter>,
    adapter_label: Option<String>,
    /// The adapter is folded into the weights (`--merge`) and cannot be changed any more.
    merged: bool,
    /// Single-sequence decode with fused CUDA kernels (CUDA builds, CUDA models): built on
    /// first use, dropped whenever the weights change. (`sqlora train` never decodes one
    /// sequence, so it does not hold the decoder's f16 weights and fixed KV cache.)
    #[cfg(feature = "cuda")]
    fast: Option<cuda_decode::Decoder>,
    /// Why single-sequence decode runs on candle's kernels instead (`None`: it does not).
    fast_off: Option<String>,
}

impl Engine {
    /// Loads a GGUF file: metadata, tokenizer and weights in the representation `opts.plan` asks.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self, LlmError> {
        let start = Instant::now();
        let io = |error| LlmError::Io {
            path: path.to_path_buf(),
            error,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        let file_size = meta.len();
        // Candle's reader panics or over-allocates on some malformed files: check first.
        gguf_check::check(path).map_err(|reason| LlmError::Invalid {
            path: path.to_path_buf(),
            reason,
        })?;
        let mut reader = std::io::BufReader::new(&mut file);
        let content = gguf_file::Content::read(&mut reader)
            .map_err(|e| LlmError::Corrupt(format!("{}: {e}", path.display())))?;
        let tokenizer = TextTokenizer::from_gguf(&content)?;
        let template = ChatTemplate::from_gguf(&content);
        let model = Model::from_gguf(&content, &mut reader, &opts.plan, &opts.device)?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let identity = format!(
            "{}|{file_size}|{modified}|{:?}|{:?}",
            path.display(),
            opts.plan,
            opts.device
        );
        let info = ModelInfo {
            path: path.to_path_buf(),
            name: model.config.name.clone(),
            arch: model.config.arch,
            file_size,
            load_secs: start.elapsed().as_secs_f64(),
            device: if opts.device.is_cuda() {
                "CUDA".into()
            } else {
                "CPU".into()
            },
        };
        let mut engine = Self {
            model,
            tokenizer,
            template,
            info,
            prefix: None,
            kv_dir: opts.kv_dir.clone(),
            identity,
            generated: 0,
            adapter: None,
            adapter_label: None,
            merged: false,
            #[cfg(feature = "cuda")]
            fast: None,
            fast_off: None,
        };
        engine.rebuild_fast();
        engine.info.load_secs = start.elapsed().as_secs_f64();
        Ok(engine)
    }

    /// Drops the fused CUDA decoder (the weights changed; it is built again on first use), or
    /// records why there is none. `SQLORA_FAST_DECODE=0` turns it off (decode then runs on
    /// candle's kernels).
    fn rebuild_fast(&mut self) {
        #[cfg(feature = "cuda")]
        {
            self.fast = None;
        }
        self.fast_off = if !self.model.device().is_cuda() {
            Some("the model runs on the CPU".into())
        } else if std::env::var("SQLORA_FAST_DECODE").is_ok_and(|v| v == "0") {
            Some("SQLORA_FAST_DECODE=0".into())
        } else {
            self.fast_unsupported()
        };
    }

    #[cfg(feature = "cuda")]
    fn fast_unsupported(&self) -> Option<String> {
        cuda_decode::unsupported(&self.model).map(|why| format!("unsupported model: {why}"))
    }

    #[cfg(not(feature = "cuda"))]
    fn fast_unsupported(&self) -> Option<String> {
        Some("this build has no CUDA".into())
    }

    /// The fused decoder, built on first use; a build that fails (out of memory, say) turns it
    /// off, and decode runs on candle's kernels.
    #[cfg(feature = "cuda")]
    fn fast_decoder(&mut self) -> Option<&mut cuda_decode::Decoder> {
        if self.fast_off.is_some() {
            return None;
        }
        if self.fast.is_none() {
            match cuda_decode::Decoder::new(&self.model) {
                Ok(d) => self.fast = Some(d),
                Err(e) => {
                    self.fast_off = Some(e.to_string());
                    return None;
                }
            }
        }
        self.fast.as_mut()
    }

    /// Whether single-sequence decode runs on the fused CUDA decoder (once built, on first
    /// use: a build that then fails falls back to candle's kernels).
    pub fn fused_decode(&self) -> bool {
        self.fast_off.is_none()
    }

    /// Turns the fused CUDA decoder off, or back on when the model can use it (benchmarks
    /// compare the two paths).
    pub fn set_fast_decode(&mut self, on: bool) {
        if on {
            self.rebuild_fast();
        } else {
            #[cfg(feature = "cuda")]
            {
                self.fast = None;
            }
            self.fast_off = Some("turned off".into());
        }
    }

    /// How single-sequence decode runs, in words (for benchmarks and `--verbose` output).
    pub fn decode_path(&self) -> String {
        match &self.fast_off {
            None => {
                #[cfg(feature = "cuda")]
                if self.fast.as_ref().is_some_and(|f| f.uses_graph()) {
                    return "fused CUDA kernels, CUDA graph".into();
                }
                "fused CUDA kernels".into()
            }
            Some(why) => format!("candle kernels ({why})"),
        }
    }

    /// Prepares single-sequence decode after `cache`: true when the fused decoder will run it.
    fn fast_start(&mut self, cache: &KvCache) -> Result<bool, LlmError> {
        #[cfg(feature = "cuda")]
        if let Some(f) = self.fast_decoder() {
            f.start(cache)?;
            return Ok(true);
        }
        let _ = cache;
        Ok(false)
    }

    /// One fused decode step: runs `token` and returns the greedy next one.
    fn fast_step(&mut self, token: u32) -> Result<u32, LlmError> {
        #[cfg(feature = "cuda")]
        if let Some(f) = self.fast.as_mut() {
            let (next, logit) = f.step(token)?;
            if !logit.is_finite() {
                return Err(LlmError::Generation(
                    "model produced non-finite logits".into(),
                ));
            }
            return Ok(next);
        }
        let _ = token;
        Err(LlmError::Generation("no fused decoder".into()))
    }

    fn kv_file(&self, prefix: &str) -> Option<PathBuf> {
        use sha2::{Digest, Sha256};
        let dir = self.kv_dir.as_ref()?;
        let h = Sha256::new()
            .chain_update(&self.identity)
            .chain_update(self.adapter.as_ref().map_or("", |a| a.sha256.as_str()))
            .chain_update(if self.merged { "|merged" } else { "" })
            .chain_update([0u8])
            .chain_update(prefix)
            .finalize();
        let name: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Some(dir.join(format!("{name}.safetensors")))
    }

    /// The saved KV state of `prefix`, if a previous run stored a valid one.
    fn load_kv(&self, prefix: &str, n_ids: usize) -> Option<KvCache> {
        let file = self.kv_file(prefix)?;
        let named = candle_core::safetensors::load(&file, self.model.device()).ok()?;
        let cache = KvCache::from_named(named, self.model.config.n_layer)?;
        (cache.len() == n_ids).then_some(cache)
    }

    /// Saves the KV state of `prefix` (best effort: a failure only costs speed next time).
    fn save_kv(&self, prefix: &str, cache: &KvCache) {
        let (Some(file), Some(dir)) = (self.kv_file(prefix), self.kv_dir.as_ref()) else {
            return;
        };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let tmp = file.with_extension("tmp");
        let named: std::collections::HashMap<String, Tensor> =
            cache.to_named().into_iter().collect();
        if candle_core::safetensors::save(&named, &tmp).is_ok() {
            let _ = std::fs::rename(&tmp, &file);
        }
        // Keep only the most recent few.
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut files: Vec<(std::time::SystemTime, PathBuf)> = rd
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .collect();
            files.sort();
            let excess = files.len().saturating_sub(KV_FILES_KEPT);
            for (_, p) in files.into_iter().take(excess) {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    /// Tokens generated since the model was loaded.
    pub fn tokens_generated(&self) -> usize {
        self.generated
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn config(&self) -> &ModelConfig {
        &self.model.config
    }

    pub fn template(&self) -> ChatTemplate {
        self.template
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Forgets the cached prompt prefix (e.g. after the schema changed).
    pub fn clear_prefix_cache(&mut self) {
        self.prefix = None;
    }

    /// Replaces the device description shown to the user.
    pub fn set_device_label(&mut self, label: String) {
        self.info.device = label;
    }

    /// The applied adapter's library name, if any.
    pub fn adapter_name(&self) -> Option<String> {
        self.adapter_label.clone()
    }

    /// Applies a LoRA adapter (or removes it with `None`). The cached prompt state belongs to
    /// the previous weights and is dropped.
    pub fn set_adapter(&mut self, adapter: Option<lora::Adapter>) -> Result<(), LlmError> {
        if self.merged {
            return Err(LlmError::Adapter(format!(
                "adapter {} is merged into the weights (--merge); start sqlora again without \
                 --merge to switch adapters",
                self.adapter_label.as_deref().unwrap_or("?")
            )));
        }
        self.model.set_adapter(adapter.as_ref())?;
        self.adapter_label = adapter.as_ref().map(|a| a.label.clone());
        self.adapter = adapter;
        self.prefix = None;
        self.rebuild_fast();
        Ok(())
    }

    /// Folds the applied adapter into the weights: the forward then costs what the base costs
    /// (no extra matrix products per projection), and on CPU it takes no more memory than the
    /// base (the merged weights replace the f32 and Q8_0 copies). The adapter can no longer be
    /// changed or removed in this session.
    pub fn merge_adapter(&mut self) -> Result<(), LlmError> {
        if self.adapter.is_none() {
            return Err(LlmError::Adapter("no adapter to merge".into()));
        }
        if !self.merged {
            self.model.merge_adapter()?;
            self.merged = true;
            self.prefix = None;
            self.rebuild_fast();
        }
        Ok(())
    }

    /// Whether the adapter is merged into the weights.
    pub fn is_merged(&self) -> bool {
        self.merged
    }

    pub fn adapter(&self) -> Option<&lora::Adapter> {
        self.adapter.as_ref()
    }

    /// The loaded model (for logits-level checks and building adapters).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Runs the prompt's stable prefix through the model now, so that the next question only
    /// prefills its own tokens. Returns the number of prefix tokens.
    pub fn warm_prefix(&mut self, prefix: &str, cancel: &Cancel) -> Result<usize, LlmError> {
        self.prefix_cache(prefix, cancel)
            .map(|(ids, _, _)| ids.len())
    }

    fn prefix_cache(
        &mut self,
        prefix: &str,
        cancel: &Cancel,
    ) -> Result<(Vec<u32>, KvCache, bool), LlmError> {
        if let Some(p) = &self.prefix {
            if p.text == prefix {
                return Ok((p.ids.clone(), p.cache.clone(), false));
            }
        }
        let ids = self.tokenizer.encode(prefix)?;
        let (cache, computed) = match self.load_kv(prefix, ids.len()) {
            Some(cache) => (cache, false),
            None => {
                let mut cache = KvCache::default();
                // Chunked so that Ctrl-C is honoured during a long schema prefill.
                for chunk in ids.chunks(256) {
                    if cancel.is_set() {
                        return Err(LlmError::Cancelled);
                    }
                    self.model.forward(chunk, &mut cache)?;
                }
                self.save_kv(prefix, &cache);
                (cache, true)
            }
        };
        self.prefix = Some(PrefixState {
            text: prefix.to_string(),
            ids: ids.clone(),
            cache: cache.clone(),
        });
        Ok((ids, cache, computed))
    }

    /// Greedy generation for `prompt`, reusing the KV state of its prefix when it was seen before.
    pub fn generate(
        &mut self,
        prompt: &Prompt,
        opts: &GenOptions,
        cancel: &Cancel,
    ) -> Result<Generation, LlmError> {
        let t0 = Instant::now();
        let (prefix_ids, mut cache, computed) = self.prefix_cache(&prompt.prefix, cancel)?;
        let suffix_ids = self.tokenizer.encode(&prompt.suffix)?;
        let answer_start = prompt.answer_start();
        let (prefill_tokens, cached_tokens) = if computed {
            (prefix_ids.len() + suffix_ids.len(), 0)
        } else {
            (suffix_ids.len(), prefix_ids.len())
        };
        let logits = self.model.forward(&suffix_ids, &mut cache)?;
        let prefill_secs = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let budget = opts
            .max_new_tokens
            .min(self.model.max_positions().saturating_sub(cache.len()));
        let mut out: Vec<u32> = Vec::new();
        let mut next = argmax(&logits)?;
        let fast = budget > 1 && self.fast_start(&cache)?;
        for _ in 0..budget {
            if cancel.is_set() {
                return Err(LlmError::Cancelled);
            }
            if self.tokenizer.is_stop(next) {
                break;
            }
            out.push(next);
            // Decoding the answer so far costs microseconds; a needless token costs ~70 ms.
            let text = format!("{answer_start}{}", self.tokenizer.decode(&out)?);
            if (opts.stop_at_fence_close && closes_fence(&text))
                || opts.stop_when.as_ref().is_some_and(|rule| (rule.0)(&text))
            {
                break;
            }
            next = if fast {
                self.fast_step(next)?
            } else {
                argmax(&self.model.forward(&[next], &mut cache)?)?
            };
        }
        let text = format!("{answer_start}{}", self.tokenizer.decode(&out)?);
        self.generated += out.len();
        Ok(Generation {
            text,
            prefill_tokens,
            cached_tokens,
            new_tokens: out.len(),
            prefill_secs,
            decode_secs: t1.elapsed().as_secs_f64(),
        })
    }

    /// Greedy generation for several prompts at once: prompts that share a prefix run as one
    /// batch (the prefix's KV state computed or reused once, then every question and every
    /// decode step of the whole group in one forward), so that on a GPU n answers cost little
    /// more than one. Each answer is what [`Engine::generate`] gives for its prompt alone, up to
    /// floating-point summation order. Answers leave the batch as they finish.
    pub fn generate_batch(
        &mut self,
        prompts: &[Prompt],
        opts: &GenOptions,
        cancel: &Cancel,
    ) -> Result<Vec<Generation>, LlmError> {
        let mut out: Vec<Option<Generation>> = vec![None; prompts.len()];
        // Groups of one prefix, in order of first appearance.
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, p) in prompts.iter().enumerate() {
            match groups.iter_mut().find(|(prefix, _)| *prefix == p.prefix) {
                Some((_, members)) => members.push(i),
                None => groups.push((&p.prefix, vec![i])),
            }
        }
        for (_, members) in groups {
            if members.len() == 1 {
                let i = members[0];
                out[i] = Some(self.generate(&prompts[i], opts, cancel)?);
                continue;
            }
            let group: Vec<&Prompt> = members.iter().map(|&i| &prompts[i]).collect();
            for (i, g) in members
                .iter()
                .zip(self.generate_group(&group, opts, cancel)?)
            {
                out[*i] = Some(g);
            }
        }
        Ok(out
            .into_iter()
            .map(|g| g.expect("every prompt is in a group"))
            .collect())
    }

    /// [`Engine::generate_batch`] for prompts of one prefix.
    fn generate_group(
        &mut self,
        prompts: &[&Prompt],
        opts: &GenOptions,
        cancel: &Cancel,
    ) -> Result<Vec<Generation>, LlmError> {
        let t0 = Instant::now();
        let n = prompts.len();
        let (prefix_ids, prefix_cache, computed) = self.prefix_cache(&prompts[0].prefix, cancel)?;
        let suffixes = prompts
            .iter()
            .map(|p| self.tokenizer.encode(&p.suffix))
            .collect::<Result<Vec<_>, _>>()?;
        let mut cache = BatchCache::broadcast(&prefix_cache, n)?;
        let mut logits = self.model.forward_batch(&suffixes, &mut cache)?;
        let prefill_secs = t0.elapsed().as_secs_f64();
        let mut gens: Vec<Generation> = suffixes
            .iter()
            .enumerate()
            .map(|(i, s)| Generation {
                // The prefix is counted once, on the first answer of the group that computed it.
                prefill_tokens: s.len()
                    + if computed && i == 0 {
                        prefix_ids.len()
                    } else {
                        0
                    },
                cached_tokens: if computed && i == 0 {
                    0
                } else {
                    prefix_ids.len()
                },
                prefill_secs,
                ..Generation::default()
            })
            .collect();
        let t1 = Instant::now();
        let max_pos = self.model.max_positions();
        // `active[k]`: the prompt whose sequence is row k of the batch.
        let mut active: Vec<usize> = (0..n).collect();
        let mut answers: Vec<Vec<u32>> = vec![Vec::new(); n];
        while !active.is_empty() {
            if cancel.is_set() {
                return Err(LlmError::Cancelled);
            }
            let next = argmax_rows(&logits)?;
            let mut keep = Vec::with_capacity(active.len());
            let mut feed = Vec::with_capacity(active.len());
            for (row, &i) in active.iter().enumerate() {
                let token = next[row];
                let budget = opts
                    .max_new_tokens
                    .min(max_pos.saturating_sub(cache.seq_len(row) - answers[i].len()));
                let mut done = self.tokenizer.is_stop(token) || answers[i].len() >= budget;
                if !done {
                    answers[i].push(token);
                    let text = format!(
                        "{}{}",
                        prompts[i].answer_start(),
                        self.tokenizer.decode(&answers[i])?
                    );
                    done = (opts.stop_at_fence_close && closes_fence(&text))
                        || opts.stop_when.as_ref().is_some_and(|rule| (rule.0)(&text))
                        || answers[i].len() >= budget;
                }
                if done {
                    gens[i].decode_secs = t1.elapsed().as_secs_f64();
                } else {
                    keep.push(row);
                    feed.push(vec![token]);
                }
            }
            if keep.is_empty() {
                break;
            }
            cache.retain(&keep)?;
            active = keep.iter().map(|&row| active[row]).collect();
            logits = self.model.forward_batch(&feed, &mut cache)?;
        }
        for (g, (ids, p)) in gens.iter_mut().zip(answers.iter().zip(prompts)) {
            g.text = format!("{}{}", p.answer_start(), self.tokenizer.decode(ids)?);
            g.new_tokens = ids.len();
            self.generated += ids.len();
        }
        Ok(gens)
    }

    /// Runs `tokens` through the model from an empty cache (benchmarks use this).
    pub fn prefill_only(&self, tokens: &[u32]) -> Result<(), LlmError> {
        let mut cache = KvCache::default();
        self.model.forward(tokens, &mut cache).map(|_| ())
    }

    /// Generates exactly `n` tokens after `tokens` and ignores stop tokens (benchmarks); the
    /// same decode path as [`Engine::generate`].
    pub fn decode_n(&mut self, tokens: &[u32], n: usize) -> Result<f64, LlmError> {
        let mut cache = KvCache::default();
        let logits = self.model.forward(tokens, &mut cache)?;
        let mut next = argmax(&logits)?;
        let fast = self.fast_start(&cache)?;
        let t = Instant::now();
        for _ in 0..n {
            next = if fast {
                self.fast_step(next)?
            } else {
                argmax(&self.model.forward(&[next], &mut cache)?)?
            };
        }
        Ok(t.elapsed().as_secs_f64())
    }

    /// Checks the fused decoder against candle's kernels over `n` greedy steps after `tokens`
    /// (both fed the reference tokens): the largest |logit| difference, and in how many steps
    /// the two chose the same token. `None` when there is no fused decoder (benchmarks).
    pub fn check_fast_decode(
        &mut self,
        tokens: &[u32],
        n: usize,
    ) -> Result<Option<(f32, usize)>, LlmError> {
        #[cfg(feature = "cuda")]
        if self.fast_decoder().is_some() {
            let mut cache = KvCache::default();
            let mut logits = self.model.forward(tokens, &mut cache)?;
            self.fast_start(&cache)?;
            let (mut worst, mut same) = (0f32, 0);
            for _ in 0..n {
                let next = argmax(&logits)?;
                logits = self.model.forward(&[next], &mut cache)?;
                let want = argmax(&logits)?;
                let fast = self.fast.as_mut().expect("checked above");
                let (got, _) = fast.step(next)?;
                let reference = logits.to_vec1::<f32>()?;
                for (a, b) in fast.logits()?.iter().zip(&reference) {
                    worst = worst.max((a - b).abs());
                }
                same += usize::from(got == want);
            }
            return Ok(Some((worst, same)));
        }
        let _ = (tokens, n);
        Ok(None)
    }

    /// Runs `tokens` for `batch` sequences at once, then `n` batched decode steps (each
    /// sequence fed its own greedy token), and returns the seconds the steps took (benchmarks).
    pub fn decode_batch_n(&self, tokens: &[u32], batch: usize, n: usize) -> Result<f64, LlmError> {
        let mut cache = BatchCache::new(batch);
        let mut logits = self
            .model
            .forward_batch(&vec![tokens.to_vec(); batch], &mut cache)?;
        let t = Instant::now();
        for _ in 0..n {
            let next = argmax_rows(&logits)?;
            let feed: Vec<Vec<u32>> = next.into_iter().map(|t| vec![t]).collect();
            logits = self.model.forward_batch(&feed, &mut cache)?;
        }
        Ok(t.elapsed().as_secs_f64())
    }
}

/// True once `text` holds an opening ``` fence and a closing one after it.
fn closes_fence(text: &str) -> bool {
    match text.find("```") {
        Some(open) => text[open + 3..].contains("```"),
        None => false,
    }
}

/// Greedy choice of the next token through candle's sampler, refusing non-finite logits (a
/// corrupt model) instead of emitting an arbitrary token.
fn argmax(logits: &Tensor) -> Result<u32, LlmError> {
    use candle_transformers::generation::{LogitsProcessor, Sampling};
    let id = LogitsProcessor::from_sampling(0, Sampling::ArgMax).sample(logits)?;
    let best: f32 = logits.get(id as usize)?.to_scalar()?;
    if !best.is_finite() {
        return Err(LlmError::Generation(
            "model produced non-finite logits".into(),
        ));
    }
    Ok(id)
}

/// [`argmax`] for each row of `[batch, vocab]` logits, on the logits' device (one small
/// transfer per step rather than the whole vocabulary of every row).
fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>, LlmError> {
    let ids = logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?;
    let best = logits.max(candle_core::D::Minus1)?.to_vec1::<f32>()?;
    if best.iter().any(|v| !v.is_finite()) {
        return Err(LlmError::Generation(
            "model produced non-finite logits".into(),
        ));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_close_needs_open_and_close() {
        assert!(!closes_fence("SELECT 1"));
        assert!(!closes_fence("```sql\nSELECT 1"));
        assert!(closes_fence("```sql\nSELECT 1\n```"));
        assert!(closes_fence("Here:\n```sql\nSELECT 1;\n``` and more"));
    }
}
