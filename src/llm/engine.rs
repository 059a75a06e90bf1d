//! The engine: a loaded model with its tokenizer and chat template, the applied adapter, the
//! KV state of the last prompt prefix (in memory, and on disk between runs), and the choice of
//! stepper for the one decoding loop ([`generate::decode`](super::generate::decode)): the
//! fused CUDA decoder for one sequence where it runs, candle's kernels otherwise, one padded
//! batch for prompts that share a prefix.
//!
//! Knows nothing of databases or SQL; never prints (progress goes through callbacks).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};

use super::cache::{BatchCache, KvCache};
use super::config::{Arch, ModelConfig};
use super::cpu::store;
#[cfg(feature = "cuda")]
use super::cuda::decode as cuda_decode;
use super::generate::{self, GenOptions, Row, Sample, Sampler, TokenMask};
use super::gguf_check;
use super::linear::WeightPlan;
use super::lora::adapter as lora;
use super::model::{Int8Source, Model};
use super::prompt::{ChatTemplate, Prompt};
use super::tokenizer::TextTokenizer;
use super::LlmError;
use crate::cancel::Cancel;

/// Options for loading a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub plan: WeightPlan,
    pub device: Device,
    /// Where the KV state of prompt prefixes is kept between runs (`None`: memory only).
    pub kv_dir: Option<PathBuf>,
    /// Where the CPU's converted int8 weights are kept between runs (`None`: converted at
    /// every load).
    pub weights_dir: Option<PathBuf>,
}

/// Prefix KV files kept on disk; older ones are removed.
const KV_FILES_KEPT: usize = 8;

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            plan: WeightPlan::cpu_default(),
            device: Device::Cpu,
            kv_dir: None,
            weights_dir: None,
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
    /// Seconds the token mask cost (its tests and the search for an allowed token).
    pub mask_secs: f64,
    /// Sum of the log-probabilities of the tokens chosen, when every step's logits were read
    /// (sampled answers; greedy ones beside them in a batch).
    pub logprob: Option<f64>,
}

/// One answer to generate: its prompt, its own mask (else [`GenOptions::mask`]) and, for a
/// sampled answer, how to sample.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub prompt: &'a Prompt,
    pub mask: Option<TokenMask>,
    pub sample: Option<Sample>,
}

impl<'a> Request<'a> {
    /// The greedy answer to `prompt`.
    pub fn greedy(prompt: &'a Prompt) -> Self {
        Request {
            prompt,
            mask: None,
            sample: None,
        }
    }
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
        self.mask_secs += other.mask_secs;
        self.logprob = other.logprob;
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
    pub(super) model: Model,
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
    /// The adapter taken off for a while (`\\compare`'s base answer), to be put back.
    parked: Option<lora::Adapter>,
    /// Single-sequence decode with fused CUDA kernels (CUDA builds, CUDA models): built on
    /// first use, dropped whenever the weights change. (`sqlora train` never decodes one
    /// sequence, so it does not hold the decoder's f16 weights and fixed KV cache.)
    #[cfg(feature = "cuda")]
    pub(super) fast: Option<cuda_decode::Decoder>,
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
        let weights_file = opts
            .weights_dir
            .as_ref()
            .filter(|_| opts.device.is_cpu())
            .and_then(|dir| store::path_for(dir, path));
        let mapped = weights_file.as_deref().and_then(store::Mapped::open);
        // Each token's bytes, which the schema mask reads at every step (151,936 entries for
        // Qwen, about 80 ms on 2 cores), are spelled out on another thread while the load goes
        // on and the first prompt is read; the first masked answer waits for them only if it
        // comes sooner. Best effort: without the thread, that answer builds the table.
        let table = tokenizer.clone();
        let _ = std::thread::Builder::new()
            .name("token table".into())
            .spawn(move || {
                let table = std::panic::AssertUnwindSafe(table);
                std::panic::catch_unwind(move || table.token_bytes(0).len())
            });
        let source = Int8Source {
            mapped: mapped.as_ref(),
        };
        let model = Model::load(&content, &mut reader, &opts.plan, &opts.device, &source)?;
        // First start on this GGUF: keep the converted weights for the next (best effort: a
        // failure costs the next start its conversion, nothing else).
        if let (None, Some(file)) = (&mapped, &weights_file) {
            let all = model.int8_matrices();
            if !all.is_empty() {
                let _ = store::write(file, path, &all);
            }
        }
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
            parked: None,
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
    pub(super) fn fast_decoder(&mut self) -> Option<&mut cuda_decode::Decoder> {
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
    pub(super) fn fast_start(&mut self, cache: &KvCache) -> Result<bool, LlmError> {
        #[cfg(feature = "cuda")]
        if let Some(f) = self.fast_decoder() {
            f.start(cache)?;
            return Ok(true);
        }
        let _ = cache;
        Ok(false)
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
        self.parked = None;
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

    /// Takes the applied adapter off (`park`) until it is put back (`!park`); returns whether
    /// there was one to take off or put back.
    pub fn park_adapter(&mut self, park: bool) -> Result<bool, LlmError> {
        if park {
            let Some(adapter) = self.adapter.clone() else {
                return Ok(false);
            };
            self.set_adapter(None)?;
            self.parked = Some(adapter);
            Ok(true)
        } else {
            let Some(adapter) = self.parked.take() else {
                return Ok(false);
            };
            self.set_adapter(Some(adapter))?;
            Ok(true)
        }
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
        let mut out = self.generate_group(&[Request::greedy(prompt)], opts, cancel)?;
        Ok(out.remove(0))
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
        let requests: Vec<Request> = prompts.iter().map(Request::greedy).collect();
        self.generate_requests(&requests, opts, cancel)
    }

    /// [`Engine::generate_batch`] for answers that may each have their own mask and be
    /// sampled: several answers to one prompt (candidates) share its prefix and its batch.
    pub fn generate_requests(
        &mut self,
        requests: &[Request],
        opts: &GenOptions,
        cancel: &Cancel,
    ) -> Result<Vec<Generation>, LlmError> {
        let mut out: Vec<Option<Generation>> = vec![None; requests.len()];
        // Groups of one prefix, in order of first appearance.
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            match groups
                .iter_mut()
                .find(|(prefix, _)| *prefix == r.prompt.prefix)
            {
                Some((_, members)) => members.push(i),
                None => groups.push((&r.prompt.prefix, vec![i])),
            }
        }
        for (_, members) in groups {
            let group: Vec<Request> = members.iter().map(|&i| requests[i].clone()).collect();
            for (i, g) in members
                .iter()
                .zip(self.generate_group(&group, opts, cancel)?)
            {
                out[*i] = Some(g);
            }
        }
        Ok(out
            .into_iter()
            .map(|g| g.expect("every request is in a group"))
            .collect())
    }

    /// Prompts of one prefix: the prefix's KV state (computed or reused), each question's
    /// prefill, then the one decoding loop — one sequence on the fused decoder or candle's
    /// kernels, several as one batch.
    fn generate_group(
        &mut self,
        requests: &[Request],
        opts: &GenOptions,
        cancel: &Cancel,
    ) -> Result<Vec<Generation>, LlmError> {
        let t0 = Instant::now();
        let n = requests.len();
        let (prefix_ids, prefix_cache, computed) =
            self.prefix_cache(&requests[0].prompt.prefix, cancel)?;
        let suffixes = requests
            .iter()
            .map(|r| self.tokenizer.encode(&r.prompt.suffix))
            .collect::<Result<Vec<_>, _>>()?;
        let max_pos = self.model.max_positions();
        let mut rows: Vec<Row> = requests
            .iter()
            .zip(&suffixes)
            .map(|(r, s)| Row {
                answer_start: r.prompt.answer_start().to_string(),
                budget: opts
                    .max_new_tokens
                    .min(max_pos.saturating_sub(prefix_ids.len() + s.len())),
                mask: r.mask.clone().or_else(|| opts.mask.clone()),
                sampler: r.sample.map(Sampler::new),
                logprob: Some(0.0),
                ..Row::default()
            })
            .collect();
        let prefill_secs;
        if n == 1 {
            let mut cache = prefix_cache;
            let logits = self.model.forward(&suffixes[0], &mut cache)?;
            prefill_secs = t0.elapsed().as_secs_f64();
            // The fused decoder pays off from the second token on.
            let fused = rows[0].budget > 1 && self.fast_start(&cache)?;
            let tokenizer = &self.tokenizer;
            #[cfg(feature = "cuda")]
            if fused {
                let decoder = self.fast.as_mut().expect("fast_start built it");
                let mut stepper = generate::Fused {
                    decoder,
                    next: Err(logits),
                };
                generate::decode(&mut stepper, &mut rows, tokenizer, opts, cancel)?;
                return self.finish(rows, &suffixes, prefix_ids.len(), computed, prefill_secs);
            }
            debug_assert!(!fused);
            let mut stepper = generate::Single {
                model: &self.model,
                cache,
                logits,
            };
            generate::decode(&mut stepper, &mut rows, tokenizer, opts, cancel)?;
        } else {
            let mut cache = BatchCache::broadcast(&prefix_cache, n)?;
            let logits = self.model.forward_batch(&suffixes, &mut cache)?;
            prefill_secs = t0.elapsed().as_secs_f64();
            let mut stepper = generate::Batch {
                model: &self.model,
                cache,
                logits,
            };
            generate::decode(&mut stepper, &mut rows, &self.tokenizer, opts, cancel)?;
        }
        self.finish(rows, &suffixes, prefix_ids.len(), computed, prefill_secs)
    }

    /// The generations of decoded rows, with what each cost. The prefix is counted once, on the
    /// first answer of the group, when this call computed it.
    fn finish(
        &mut self,
        rows: Vec<Row>,
        suffixes: &[Vec<u32>],
        prefix_len: usize,
        computed: bool,
        prefill_secs: f64,
    ) -> Result<Vec<Generation>, LlmError> {
        let mut out = Vec::with_capacity(rows.len());
        for (i, (row, s)) in rows.into_iter().zip(suffixes).enumerate() {
            let first = computed && i == 0;
            self.generated += row.tokens.len();
            out.push(Generation {
                text: row.text(&self.tokenizer)?,
                prefill_tokens: s.len() + if first { prefix_len } else { 0 },
                cached_tokens: if first { 0 } else { prefix_len },
                new_tokens: row.tokens.len(),
                prefill_secs,
                decode_secs: row.decode_secs,
                mask_secs: row.mask_secs,
                logprob: row.logprob,
            });
        }
        Ok(out)
    }
}
