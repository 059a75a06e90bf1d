//! What the pipeline asks of a model, wherever it runs: [`Backend`], implemented by the
//! in-process [`Engine`] and by [`super::remote::Remote`] (an inference server that sqlora
//! talks to over HTTP). Both take the same [`Request`]s — the same prompt text, stop rules and
//! constraint — and give the same [`Generation`]s back, so the guard, the repairs, the vote,
//! `eval` and the shell never know where the tokens came from.
//!
//! Owns the trait and the in-process engine's side of it; never builds prompts and never
//! touches a database. What only the in-process engine can do (train, merge, load adapters
//! from files) stays on [`Engine`], reached through [`Backend::local_mut`].

use super::engine::{Engine, Generation, ModelInfo, Request};
use super::generate::GenOptions;
use super::prompt::ChatTemplate;
use super::tokenizer::TextTokenizer;
use super::LlmError;
use crate::cancel::Cancel;

/// A model that answers prompts: in this process ([`Engine`]) or on a server.
pub trait Backend: Send {
    /// The model's identity for display and reports.
    fn info(&self) -> &ModelInfo;
    /// The chat format prompts are written in.
    fn template(&self) -> ChatTemplate;
    /// The tokenizer prompts are measured with (budgets, prefix sizes, example fitting).
    fn tokenizer(&self) -> &TextTokenizer;
    /// Whether generation runs on a GPU here (a server's GPU is not: the defaults that depend
    /// on it are the CPU's unless the user sets them).
    fn on_gpu(&self) -> bool {
        false
    }
    /// One generation for each request, in order (see [`Engine::generate_requests`]).
    fn generate_requests(
        &mut self,
        requests: &[Request],
        opts: &GenOptions,
        cancel: &Cancel,
    ) -> Result<Vec<Generation>, LlmError>;
    /// Prepares the prompt prefix so that the next question only pays for its own tokens;
    /// returns the prefix's length in tokens.
    fn warm_prefix(&mut self, prefix: &str, cancel: &Cancel) -> Result<usize, LlmError>;
    /// Forgets a prepared prefix (the schema changed).
    fn clear_prefix_cache(&mut self);
    /// The adapter answers come from, by its library (or server) name.
    fn adapter_name(&self) -> Option<String>;
    /// Answers from the base model (`false`) or with the adapter again (`true`), for `\compare`.
    /// Returns whether an adapter was there to switch.
    fn use_adapter(&mut self, on: bool) -> Result<bool, LlmError>;
    /// Where the model runs, for the user ("CPU", "CUDA device 0", "llama.cpp server at …").
    fn where_it_runs(&self) -> String {
        self.info().device.clone()
    }
    /// The in-process engine, when this is one.
    fn local(&self) -> Option<&Engine> {
        None
    }
    fn local_mut(&mut self) -> Option<&mut Engine> {
        None
    }
    /// Names the adapter a server answers with (`None`: its base model); an adapter it does
    /// not serve is an error that lists those it does. `Ok(false)`: this backend takes no
    /// adapter by name (the in-process engine loads one from the library instead).
    fn serve_adapter(&mut self, name: Option<&str>) -> Result<bool, LlmError> {
        let _ = name;
        Ok(false)
    }
    /// The in-process engine, when this is one (to train with it).
    fn into_local(self: Box<Self>) -> Option<Engine> {
        None
    }
}

impl Backend for Engine {
    fn info(&self) -> &ModelInfo {
        Engine::info(self)
    }

    fn template(&self) -> ChatTemplate {
        Engine::template(self)
    }

    fn tokenizer(&self) -> &TextTokenizer {
        Engine::tokenizer(self)
    }

    fn on_gpu(&self) -> bool {
        self.model().device().is_cuda()
    }

    fn generate_requests(
        &mut self,
        requests: &[Request],
        opts: &GenOptions,
        cancel: &Cancel,
    ) -> Result<Vec<Generation>, LlmError> {
        Engine::generate_requests(self, requests, opts, cancel)
    }

    fn warm_prefix(&mut self, prefix: &str, cancel: &Cancel) -> Result<usize, LlmError> {
        Engine::warm_prefix(self, prefix, cancel)
    }

    fn clear_prefix_cache(&mut self) {
        Engine::clear_prefix_cache(self)
    }

    fn adapter_name(&self) -> Option<String> {
        Engine::adapter_name(self)
    }

    fn use_adapter(&mut self, on: bool) -> Result<bool, LlmError> {
        self.park_adapter(!on)
    }

    fn local(&self) -> Option<&Engine> {
        Some(self)
    }

    fn local_mut(&mut self) -> Option<&mut Engine> {
        Some(self)
    }

    fn into_local(self: Box<Self>) -> Option<Engine> {
        Some(*self)
    }
}
