//! Answers from an inference server a team already runs: any OpenAI-compatible completions
//! endpoint (`openai://HOST:PORT[/v1]`: vLLM, SGLang, llama.cpp's server) or llama.cpp's own
//! endpoint (`llamacpp://HOST:PORT`), which also takes a per-request LoRA scale and warms its
//! prompt cache. [`Remote`] is a [`Backend`]: the prompts are the text the in-process engine
//! would run (rendered with the tokenizer and chat template of the local GGUF the server's
//! model was converted from), the same stop rules end the answers, a question's mask goes as
//! a GBNF grammar, candidates go as seeded sampled requests beside the greedy one, and the
//! adapter is named per request (vLLM: a model name registered with `--lora-modules`;
//! llama.cpp, whichever API it is spoken to in: an adapter loaded with `--lora`, by its file's
//! name, every loaded adapter's scale set on each request).
//!
//! Owns the HTTP calls, their timeouts and retries (connection errors and 5xx, with backoff)
//! and turning a server's failure into one line. Never sends anything but prompts and
//! generation settings; the API key (`SQLORA_API_KEY`) goes in a header and nowhere else:
//! not in errors, logs or feedback records.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::backend::Backend;
use super::engine::{Generation, ModelInfo, Request};
use super::generate::GenOptions;
use super::prompt::ChatTemplate;
use super::tokenizer::TextTokenizer;
use super::LlmError;
use crate::cancel::Cancel;

/// Which API the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/completions` (and `GET /v1/models`), as OpenAI defines them.
    OpenAi,
    /// llama.cpp's `POST /completion` and `GET /lora-adapters`.
    LlamaCpp,
}

/// A `--backend` URL other than `local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub api: Api,
    /// `http://host:port` (or `https://`), without a trailing slash.
    pub base: String,
    /// The OpenAI API's path prefix (`/v1` unless the URL names another).
    pub prefix: String,
    /// The URL as the user wrote it (without credentials), for messages.
    pub shown: String,
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    /// `openai://HOST:PORT[/PATH]`, `llamacpp://HOST:PORT`; `+https` after the scheme's name
    /// (`openai+https://…`) for TLS.
    fn from_str(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            "a backend is local, openai://HOST:PORT[/v1] or llamacpp://HOST:PORT".to_string()
        })?;
        let (api, tls) = match scheme.to_ascii_lowercase().as_str() {
            "openai" => (Api::OpenAi, false),
            "openai+https" => (Api::OpenAi, true),
            "llamacpp" => (Api::LlamaCpp, false),
            "llamacpp+https" => (Api::LlamaCpp, true),
            other => {
                return Err(format!(
                    "backend scheme `{other}` is not openai, openai+https, llamacpp or \
                     llamacpp+https"
                ))
            }
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if rest.contains(['@', '?', '#']) {
            return Err(format!(
                "backend `{scheme}://…` takes HOST:PORT[/PATH] only (credentials go in \
                 SQLORA_API_KEY, not the URL)"
            ));
        }
        if host.is_empty() {
            return Err(format!("backend `{scheme}://…` needs HOST:PORT"));
        }
        if api == Api::LlamaCpp && !path.is_empty() {
            return Err("llamacpp:// takes HOST:PORT only (its endpoints are fixed)".to_string());
        }
        let prefix = match (api, path) {
            (Api::OpenAi, "") => "/v1".to_string(),
            (Api::OpenAi, p) => p.to_string(),
            (Api::LlamaCpp, _) => String::new(),
        };
        Ok(Endpoint {
            api,
            base: format!("{}://{host}", if tls { "https" } else { "http" }),
            prefix,
            shown: url.to_string(),
        })
    }
}

/// `--backend`: the in-process engine or a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendChoice {
    Local,
    Remote(Endpoint),
}

impl std::str::FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "local" => Ok(BackendChoice::Local),
            url => url.parse().map(BackendChoice::Remote),
        }
    }
}

/// How a request to the server is retried.
const RETRIES: u32 = 3;
/// The first retry waits this long; each later one twice as long.
const BACKOFF: Duration = Duration::from_millis(500);
/// Requests in flight at once for one batch (a server with fewer slots queues the rest).
const IN_FLIGHT: usize = 8;

/// The adapter a request names.
#[derive(Debug, Clone)]
enum AdapterRef {
    /// An OpenAI-compatible server's model name (vLLM's `--lora-modules NAME=PATH`).
    Model(String),
    /// A llama.cpp adapter id (its `--lora` files, in order).
    LoraId(usize),
}

/// An inference server answering for sqlora.
pub struct Remote {
    endpoint: Endpoint,
    agent: ureq::Agent,
    api_key: Option<String>,
    tokenizer: TextTokenizer,
    template: ChatTemplate,
    info: ModelInfo,
    /// The base model's name on the server (what requests without an adapter name).
    model: String,
    /// The server is llama.cpp (whichever API it is spoken to in): adapters are its `--lora`
    /// files, chosen per request by scale.
    llama_cpp: bool,
    /// llama.cpp: how many adapters the server loaded (each request sets all their scales;
    /// a request without any runs them at their load-time scales).
    lora_count: usize,
    adapter: Option<(String, AdapterRef)>,
    /// The adapter is switched off for now (`\compare`).
    adapter_off: bool,
}

/// What a server's failure means, on one line.
fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 300 {
        let cut: String = s.chars().take(300).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// The message of an error body (`{"error": {"message": …}}` in both APIs), else the body.
fn error_message(body: &str) -> String {
    let v: Option<Value> = serde_json::from_str(body).ok();
    let msg = v.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    one_line(&msg.unwrap_or_else(|| body.to_string()))
}

impl Remote {
    /// Connects to `endpoint` (asking which models and adapters it serves), prompting with
    /// `tokenizer` and `template` (those of the GGUF at `info.path`, the server's model's).
    pub fn connect(
        endpoint: Endpoint,
        tokenizer: TextTokenizer,
        template: ChatTemplate,
        mut info: ModelInfo,
    ) -> Result<Remote, LlmError> {
        let start = Instant::now();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(600)))
            .http_status_as_error(false)
            .build()
            .into();
        let endpoint_is_llama_cpp = endpoint.api == Api::LlamaCpp;
        let api_key = std::env::var("SQLORA_API_KEY")
            .ok()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty());
        let mut remote = Remote {
            endpoint,
            agent,
            api_key,
            tokenizer,
            template,
            model: String::new(),
            llama_cpp: endpoint_is_llama_cpp,
            lora_count: 0,
            adapter: None,
            adapter_off: false,
            info: info.clone(),
        };
        let models = remote.get(&format!("{}/models", remote.openai_prefix()))?;
        let ids = model_ids(&models);
        remote.model = ids.first().cloned().ok_or_else(|| {
            LlmError::Server(format!(
                "the server at {} lists no model at {}/models",
                remote.endpoint.shown,
                remote.openai_prefix()
            ))
        })?;
        remote.llama_cpp |= models
            .pointer("/data/0/owned_by")
            .and_then(Value::as_str)
            .is_some_and(|o| o == "llamacpp");
        if remote.llama_cpp {
            remote.lora_count = remote.get("/lora-adapters")?.as_array().map_or(0, Vec::len);
        }
        // llama.cpp names its model by the path it was loaded from.
        info.name = std::path::Path::new(&remote.model).file_name().map_or_else(
            || remote.model.clone(),
            |f| f.to_string_lossy().into_owned(),
        );
        info.load_secs = start.elapsed().as_secs_f64();
        info.device = match remote.endpoint.api {
            Api::OpenAi => format!("OpenAI-compatible server at {}", remote.endpoint.shown),
            Api::LlamaCpp => format!("llama.cpp server at {}", remote.endpoint.shown),
        };
        remote.info = info;
        Ok(remote)
    }

    /// The OpenAI API's path prefix (llama.cpp serves it under `/v1`).
    fn openai_prefix(&self) -> &str {
        match self.endpoint.api {
            Api::OpenAi => &self.endpoint.prefix,
            Api::LlamaCpp => "/v1",
        }
    }

    /// Names `name` as the adapter of the next requests (`None`: the base model). An adapter
    /// the server does not serve is an error that lists what it does serve.
    pub fn set_adapter(&mut self, name: Option<&str>) -> Result<(), LlmError> {
        let Some(name) = name else {
            self.adapter = None;
            return Ok(());
        };
        let found = match self.llama_cpp {
            false => {
                let ids = model_ids(&self.get(&format!("{}/models", self.openai_prefix()))?);
                match ids.iter().find(|i| *i == name) {
                    Some(i) => Ok(AdapterRef::Model(i.clone())),
                    None => Err(format!("serves: {}", ids.join(", "))),
                }
            }
            true => {
                let list = self.get(&self.llama_cpp_path("/lora-adapters"))?;
                let loaded: Vec<(usize, String)> = list
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| {
                        let id = a.get("id")?.as_u64()? as usize;
                        let path = a.get("path")?.as_str()?;
                        let stem = std::path::Path::new(path)
                            .file_stem()?
                            .to_string_lossy()
                            .into_owned();
                        Some((id, stem))
                    })
                    .collect();
                self.lora_count = loaded.len();
                match loaded
                    .iter()
                    .find(|(id, stem)| stem == name || id.to_string() == name)
                {
                    Some((id, _)) => Ok(AdapterRef::LoraId(*id)),
                    None if loaded.is_empty() => {
                        Err("loaded no adapter (start llama-server with --lora FILE.gguf)".into())
                    }
                    None => Err(format!(
                        "loaded: {}",
                        loaded
                            .iter()
                            .map(|(id, s)| format!("{s} (id {id})"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                }
            }
        };
        match found {
            Ok(r) => {
                self.adapter = Some((name.to_string(), r));
                self.adapter_off = false;
                Ok(())
            }
            Err(what) => Err(LlmError::Adapter(format!(
                "`{name}` is not served by {} (it {what})",
                self.endpoint.shown
            ))),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint.base)
    }

    /// A llama.cpp endpoint outside its OpenAI API (`/lora-adapters`), under the same proxy
    /// path as that API (`openai://host/api/v1` → `/api/lora-adapters`).
    fn llama_cpp_path(&self, path: &str) -> String {
        let root = match self.endpoint.api {
            Api::OpenAi => self.endpoint.prefix.trim_end_matches("/v1"),
            Api::LlamaCpp => "",
        };
        format!("{root}{path}")
    }

    fn get(&self, path: &str) -> Result<Value, LlmError> {
        self.call(path, None, &Cancel::new())
    }

    /// One call with retries: a connection that fails or breaks, and 429, 502, 503 and 504
    /// (a server starting, overloaded or behind a restarting proxy) are tried again after
    /// [`BACKOFF`], doubling, [`RETRIES`] times; anything else (a timeout included: the server
    /// is there and slow) is final and told on one line, the API key blanked out of whatever
    /// the server said. A cancel is honoured between tries.
    fn call(&self, path: &str, body: Option<&Value>, cancel: &Cancel) -> Result<Value, LlmError> {
        let url = self.url(path);
        let mut wait = BACKOFF;
        let mut attempt = 0;
        loop {
            if cancel.is_set() {
                return Err(LlmError::Cancelled);
            }
            attempt += 1;
            let auth = self.api_key.as_ref().map(|k| format!("Bearer {k}"));
            let sent = match body {
                Some(b) => {
                    let mut req = self.agent.post(&url);
                    if let Some(a) = &auth {
                        req = req.header("Authorization", a);
                    }
                    req.send_json(b)
                }
                None => {
                    let mut req = self.agent.get(&url);
                    if let Some(a) = &auth {
                        req = req.header("Authorization", a);
                    }
                    req.call()
                }
            };
            let (failure, again) = match sent {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let read = resp
                        .body_mut()
                        .with_config()
                        .limit(64 << 20)
                        .read_to_string();
                    match read {
                        Err(e) => (self.no_answer(&e), true),
                        Ok(text) if (200..300).contains(&status) => {
                            return serde_json::from_str(&text).map_err(|e| {
                                LlmError::Server(format!(
                                    "{} answered {path} with something else than JSON: {e}",
                                    self.endpoint.shown
                                ))
                            });
                        }
                        Ok(text) => {
                            let said = self.redact(&error_message(&text));
                            let msg = format!(
                                "{} answered {path} with HTTP {status}: {said}",
                                self.endpoint.shown
                            );
                            match status {
                                401 | 403 => {
                                    return Err(LlmError::Server(format!(
                                        "{msg} (is SQLORA_API_KEY set right?)"
                                    )))
                                }
                                429 | 502..=504 => (msg, true),
                                _ => return Err(LlmError::Server(msg)),
                            }
                        }
                    }
                }
                Err(e) => {
                    let again = matches!(e, ureq::Error::ConnectionFailed | ureq::Error::Io(_));
                    (self.no_answer(&e), again)
                }
            };
            if !again || attempt > RETRIES {
                return Err(LlmError::Server(if attempt > 1 {
                    format!("{failure}; gave up after {attempt} tries")
                } else {
                    failure
                }));
            }
            std::thread::sleep(wait);
            wait *= 2;
        }
    }

    /// A transport failure as the user reads it.
    fn no_answer(&self, e: &ureq::Error) -> String {
        let why = match e {
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                "connection refused: is the server running?".to_string()
            }
            ureq::Error::ConnectionFailed => {
                "connection failed: is the server running?".to_string()
            }
            ureq::Error::HostNotFound => "host not found".to_string(),
            ureq::Error::Timeout(t) => format!("timed out ({t})"),
            other => self.redact(&one_line(&other.to_string())),
        };
        format!(
            "no answer from the server at {} ({why})",
            self.endpoint.shown
        )
    }

    /// `text` with the API key blanked out (a gateway may quote it back).
    fn redact(&self, text: &str) -> String {
        match &self.api_key {
            Some(k) if k.len() >= 4 => text.replace(k.as_str(), "***"),
            _ => text.to_string(),
        }
    }

    /// The request body for one answer.
    fn body(&self, r: &Request, opts: &GenOptions, grammar: Option<&str>) -> Value {
        let prompt = r.prompt.text();
        let mut b = json!({
            "prompt": prompt,
            "max_tokens": opts.max_new_tokens,
            "stream": false,
        });
        let o = b.as_object_mut().expect("an object");
        match r.sample {
            Some(s) => {
                o.insert("temperature".into(), json!(s.temperature));
                o.insert("top_k".into(), json!(s.top_k));
                o.insert("top_p".into(), json!(1.0));
                // llama.cpp's default min_p (0.05) would narrow the draw further.
                o.insert("min_p".into(), json!(0.0));
                // Both APIs take 32-bit seeds.
                o.insert("seed".into(), json!(s.seed as u32));
            }
            None => {
                o.insert("temperature".into(), json!(0.0));
            }
        }
        if opts.stop_at_fence_close {
            o.insert("stop".into(), json!(["```"]));
        }
        if let Some(g) = grammar {
            o.insert("grammar".into(), json!(g));
        }
        // Only a sampled answer's likelihood is read (it breaks ties of the vote; the greedy
        // answer's group wins its ties anyway), and asking for it costs the server a sort of
        // the vocabulary at every token.
        let adapter = self.adapter.as_ref().filter(|_| !self.adapter_off);
        match self.endpoint.api {
            Api::OpenAi => {
                if r.sample.is_some() {
                    o.insert("logprobs".into(), json!(1));
                }
                let model = match adapter {
                    Some((_, AdapterRef::Model(m))) => m.clone(),
                    _ => self.model.clone(),
                };
                o.insert("model".into(), json!(model));
                if let Some(g) = grammar {
                    // vLLM's field for the same grammar.
                    o.insert("structured_outputs".into(), json!({ "grammar": g }));
                }
            }
            Api::LlamaCpp => {
                if r.sample.is_some() {
                    o.insert("n_probs".into(), json!(1));
                }
                o.insert("cache_prompt".into(), json!(true));
            }
        }
        if self.llama_cpp && self.lora_count > 0 {
            let on = match adapter {
                Some((_, AdapterRef::LoraId(id))) => Some(*id),
                _ => None,
            };
            let lora: Vec<Value> = (0..self.lora_count)
                .map(|id| json!({"id": id, "scale": if on == Some(id) { 1.0 } else { 0.0 }}))
                .collect();
            o.insert("lora".into(), json!(lora));
        }
        b
    }

    /// One answer: the request, then the server's text cut where the stop rule says the
    /// answer ends (the server ran on to its stop word; the in-process loop stops at once).
    fn one(&self, r: &Request, opts: &GenOptions, cancel: &Cancel) -> Result<Generation, LlmError> {
        let t0 = Instant::now();
        let grammar = r
            .mask
            .as_ref()
            .or(opts.mask.as_ref())
            .and_then(|m| m.0.grammar());
        let body = self.body(r, opts, grammar.as_deref());
        let path = match self.endpoint.api {
            Api::OpenAi => format!("{}/completions", self.openai_prefix()),
            Api::LlamaCpp => "/completion".to_string(),
        };
        let v = self.call(&path, Some(&body), cancel)?;
        let secs = t0.elapsed().as_secs_f64();
        let (text, logprob, prefill, cached, new, prefill_secs, decode_secs) = match self
            .endpoint
            .api
        {
            Api::OpenAi => {
                let choice = v.pointer("/choices/0").ok_or_else(|| {
                    LlmError::Server(format!("{} answered without choices", self.endpoint.shown))
                })?;
                let text = choice.get("text").and_then(Value::as_str).unwrap_or("");
                // OpenAI's (and vLLM's) `token_logprobs`, or llama.cpp's `content` list.
                let logprob = match choice.pointer("/logprobs/token_logprobs") {
                    Some(Value::Array(a)) => Some(a.iter().filter_map(Value::as_f64).sum()),
                    _ => sum_logprobs(choice.pointer("/logprobs/content")),
                };
                let usage = |k: &str| {
                    v.pointer(&format!("/usage/{k}"))
                        .and_then(Value::as_u64)
                        .unwrap_or(0) as usize
                };
                let cached = v
                    .pointer("/usage/prompt_tokens_details/cached_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0) as usize;
                let prompt = usage("prompt_tokens");
                (
                    text.to_string(),
                    logprob,
                    prompt.saturating_sub(cached),
                    cached,
                    usage("completion_tokens"),
                    0.0,
                    secs,
                )
            }
            Api::LlamaCpp => {
                let text = v.get("content").and_then(Value::as_str).unwrap_or("");
                let logprob = sum_logprobs(v.get("completion_probabilities"));
                let t = |k: &str| v.pointer(&format!("/timings/{k}")).and_then(Value::as_f64);
                let prompt_n = t("prompt_n").unwrap_or(0.0) as usize;
                let cache_n = t("cache_n").unwrap_or(0.0) as usize;
                (
                    text.to_string(),
                    logprob,
                    prompt_n,
                    cache_n,
                    v.get("tokens_predicted")
                        .and_then(Value::as_u64)
                        .unwrap_or(0) as usize,
                    t("prompt_ms").unwrap_or(0.0) / 1e3,
                    t("predicted_ms").map_or(secs, |ms| ms / 1e3),
                )
            }
        };
        Ok(Generation {
            text: cut_at_stop(r.prompt.answer_start(), &text, opts),
            prefill_tokens: prefill,
            cached_tokens: cached,
            new_tokens: new,
            prefill_secs,
            decode_secs,
            mask_secs: 0.0,
            logprob,
        })
    }
}

/// The model names a `GET …/models` answer lists (`data[].id`), in its order.
fn model_ids(models: &Value) -> Vec<String> {
    models
        .get("data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The sum of `logprob` over a list of per-token entries (llama.cpp's
/// `completion_probabilities`, and its OpenAI `logprobs.content`).
fn sum_logprobs(list: Option<&Value>) -> Option<f64> {
    list.and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|p| p.get("logprob").and_then(Value::as_f64))
            .sum()
    })
}

/// The answer text as the in-process loop would end it: `start` (what the prompt wrote of the
/// answer) and the server's `text`, cut after the first `;` where the caller's stop rule
/// holds (the loop tests it after every token; it can only hold where the text ends in `;`).
fn cut_at_stop(start: &str, text: &str, opts: &GenOptions) -> String {
    let full = format!("{start}{text}");
    if let Some(rule) = &opts.stop_when {
        for (i, _) in full.match_indices(';').filter(|(i, _)| *i >= start.len()) {
            let upto = &full[..=i];
            if (rule.0)(upto) {
                return upto.to_string();
            }
        }
    }
    full
}

impl Backend for Remote {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn template(&self) -> ChatTemplate {
        self.template
    }

    fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Each request goes on its own, [`IN_FLIGHT`] at a time, so that a server with several
    /// slots (llama.cpp `--parallel`, vLLM's batching) answers a question's candidates together.
    fn generate_requests(
        &mut self,
        requests: &[Request],
        opts: &GenOptions,
        cancel: &Cancel,
    ) -> Result<Vec<Generation>, LlmError> {
        let mut out = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(IN_FLIGHT) {
            if cancel.is_set() {
                return Err(LlmError::Cancelled);
            }
            let this = &*self;
            let results: Vec<Result<Generation, LlmError>> = std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|r| s.spawn(move || this.one(r, opts, cancel)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(LlmError::Generation("a server request panicked".into()))
                        })
                    })
                    .collect()
            });
            for r in results {
                out.push(r?);
            }
        }
        Ok(out)
    }

    /// llama.cpp evaluates the prefix into a slot's cache now (`n_predict: 0`); an
    /// OpenAI-compatible server caches prefixes on its own, and is not called.
    fn warm_prefix(&mut self, prefix: &str, cancel: &Cancel) -> Result<usize, LlmError> {
        if cancel.is_set() {
            return Err(LlmError::Cancelled);
        }
        let n = self.tokenizer.encode(prefix)?.len();
        if self.endpoint.api == Api::LlamaCpp {
            let p = super::prompt::Prompt {
                prefix: prefix.to_string(),
                suffix: String::new(),
            };
            let r = Request::greedy(&p);
            let mut body = self.body(&r, &GenOptions::default(), None);
            body["n_predict"] = json!(0);
            body.as_object_mut().map(|o| o.remove("max_tokens"));
            self.call("/completion", Some(&body), cancel)?;
        }
        Ok(n)
    }

    fn clear_prefix_cache(&mut self) {}

    fn adapter_name(&self) -> Option<String> {
        self.adapter
            .as_ref()
            .filter(|_| !self.adapter_off)
            .map(|(n, _)| n.clone())
    }

    fn use_adapter(&mut self, on: bool) -> Result<bool, LlmError> {
        if self.adapter.is_none() {
            return Ok(false);
        }
        self.adapter_off = !on;
        Ok(true)
    }

    fn serve_adapter(&mut self, name: Option<&str>) -> Result<bool, LlmError> {
        self.set_adapter(name).map(|()| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls_parse_or_say_what_is_wrong() {
        let e: Endpoint = "openai://127.0.0.1:8000".parse().unwrap();
        assert_eq!(
            (e.api, e.base.as_str(), e.prefix.as_str()),
            (Api::OpenAi, "http://127.0.0.1:8000", "/v1")
        );
        let e: Endpoint = "openai+https://gpu.lan/api/v1/".parse().unwrap();
        assert_eq!(
            (e.base.as_str(), e.prefix.as_str()),
            ("https://gpu.lan", "/api/v1")
        );
        let e: Endpoint = "llamacpp://localhost:8080".parse().unwrap();
        assert_eq!(
            (e.api, e.base.as_str()),
            (Api::LlamaCpp, "http://localhost:8080")
        );
        for bad in [
            "http://x:1",
            "llamacpp://x:1/v1",
            "openai://",
            "openai://user:secret@host:1",
            "openai://host:1/v1?api_key=secret",
            "openai://host:1/p:secret@x",
            "user:secret@host:8080",
        ] {
            let err = bad.parse::<Endpoint>().unwrap_err();
            assert!(!err.contains('\n'), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn server_errors_become_one_line() {
        let body = r#"{"error":{"code":400,"message":"the\nprompt is too long","type":"x"}}"#;
        assert_eq!(error_message(body), "the prompt is too long");
        assert_eq!(error_message("Bad\n gateway"), "Bad gateway");
        assert!(error_message(&"x ".repeat(400)).ends_with('…'));
    }

    #[test]
    fn answers_are_cut_where_the_stop_rule_holds() {
        use super::super::generate::StopRule;
        use std::sync::Arc;
        let opts = GenOptions {
            stop_when: Some(StopRule(Arc::new(|t: &str| t.ends_with("1;")))),
            ..GenOptions::default()
        };
        assert_eq!(
            cut_at_stop("```sql\n", "SELECT ';'; SELECT 1; SELECT 2;\n", &opts),
            "```sql\nSELECT ';'; SELECT 1;"
        );
        assert_eq!(cut_at_stop("", "SELECT 2;\n", &opts), "SELECT 2;\n");
    }
}
