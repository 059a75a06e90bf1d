//! Command-line interface (clap derive). Parsing and validation only; no IO (whether a word
//! names an existing file is asked of the caller, see [`Cli::resolve`]).

use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};

use crate::shell::render::Format;

#[derive(Debug, Parser)]
#[command(
    name = "sqlora",
    version,
    about = "Ask a SQL database questions in plain English, with a local model",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options for the shell when no subcommand is given.
    #[command(flatten)]
    pub shell: ShellArgs,
    /// A database to open the shell on (a SQLite file or a postgres://, mysql://, mariadb:// or
    /// sqlite: URL), or a question to answer at once as `sqlora ask` does (on that database
    /// when the first word names one, else on --db or the default).
    #[arg(value_name = "DB|QUESTION")]
    pub target: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Interactive shell (the default).
    Shell(ShellArgs),
    /// Answer one question and print the result (for scripts).
    Ask(AskArgs),
    /// Measure execution accuracy on Spider dev or a JSONL question set.
    Eval(EvalArgs),
    /// Record, list, export and count answer feedback (the training data).
    #[command(subcommand)]
    Feedback(FeedbackCommand),
    /// Manage model weights.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Manage the LoRA adapter library (PEFT format).
    #[command(subcommand)]
    Adapters(AdaptersCommand),
    /// Train a LoRA adapter (QLoRA: the base stays quantized) on question/SQL pairs.
    Train(Box<TrainArgs>),
    /// Where the config file is, and the settings in effect.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script (e.g. `sqlora completions bash > ~/.local/share/bash-completion/completions/sqlora`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the config file's path (`SQLORA_CONFIG`, else config.toml in the config dir).
    Path,
    /// Print the settings in effect and where each comes from (passwords are hidden).
    Show,
}

/// True when `s` is a database URL sqlora opens (not a file path).
pub fn is_database_url(s: &str) -> bool {
    let lower = s.trim().to_ascii_lowercase();
    [
        "postgres://",
        "postgresql://",
        "mysql://",
        "mariadb://",
        "sqlite:",
    ]
    .iter()
    .any(|p| lower.starts_with(p))
}

/// True when `s` is one word that reads as a database file name (so a missing one is a typo,
/// not a question).
fn looks_like_db_file(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    !s.contains(char::is_whitespace)
        && (s.contains('/')
            || s.contains(std::path::MAIN_SEPARATOR)
            || [".sqlite", ".sqlite3", ".db", ".db3"]
                .iter()
                .any(|e| lower.ends_with(e)))
}

impl Cli {
    /// The command to run. Without a subcommand, the first word (if any) that is an existing
    /// file (`is_file` answers) or a database URL is the database: alone it opens the shell
    /// on it, with more words those are a question asked of it. Other words are a question
    /// answered at once on --db (or the default), as `sqlora ask` does; a lone word that
    /// reads as a database file but is not one is an error.
    pub fn resolve(self, is_file: impl Fn(&str) -> bool) -> Result<Command, String> {
        if let Some(c) = self.command {
            return Ok(c);
        }
        let mut shell = self.shell;
        let mut words = self.target;
        if let Some(first) = words.first() {
            // `sqlora --format csv ask …`: the shell's options put before a command.
            let command = <Cli as clap::CommandFactory>::command();
            if command.get_subcommands().any(|c| c.get_name() == first) {
                return Err(format!(
                    "`{first}` is a command: put its options after it (`sqlora {first} --…`)"
                ));
            }
            if is_database_url(first) || is_file(first) {
                shell.common.db.db = Some(words.remove(0));
            } else if words.len() == 1 && looks_like_db_file(first) {
                return Err(format!(
                    "no database file `{first}` (give an existing SQLite file, a database URL, \
                     or a question)"
                ));
            }
        }
        if words.is_empty() {
            return Ok(Command::Shell(shell));
        }
        Ok(Command::Ask(AskArgs {
            common: shell.common,
            feedback: shell.feedback,
            format: shell.format,
            compare: false,
            question: words,
        }))
    }
}

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// `feedback` (accepted and corrected answers from the feedback store), `spider-train`
    /// (Spider's 7000 training questions, with each database's schema read and rendered live
    /// as inference does), or JSONL files of {"question","context","answer","dialect"?};
    /// comma-separated.
    #[arg(
        long,
        value_name = "feedback|spider-train|FILE.jsonl[,…]",
        value_delimiter = ',',
        required_unless_present = "auto"
    )]
    pub data: Vec<String>,
    /// Directory holding spider/ for `--data spider-train` (default: $SQLORA_EVAL_DATA, else
    /// ../shared/data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Name of the new adapter in the library (with --auto, default: auto-DATE-TIME).
    #[arg(long, value_name = "NAME", required_unless_present = "auto")]
    pub out: Option<String>,
    /// Periodic run: train only when at least --min-new accepted or corrected answers (of
    /// --db's database, or of all) were logged since the last run, on the feedback (plus any
    /// --data, e.g. spider-train with --limit, against forgetting); mark them used; make the
    /// new adapter the database's default unless its loss on held-out feedback is worse than
    /// the current default's.
    #[arg(long)]
    pub auto: bool,
    /// Go on from this library adapter's weights (its rank, α and projections, in place of
    /// --rank, --alpha, --targets; a fresh optimizer) rather than from a fresh adapter; `none`:
    /// fresh. Default: with --auto, the
    /// adapter shipped for the model when it fits (what databases answer with by default);
    /// otherwise fresh.
    #[arg(long, value_name = "NAME|none")]
    pub from: Option<String>,
    /// With --auto: how many times each feedback pair appears among the training pairs, so
    /// that a few corrections are not drowned by the replayed ones.
    #[arg(long, default_value_t = crate::train::recipe::AUTO_WEIGHT, value_name = "N", value_parser = count(1, 1000))]
    pub weight: usize,
    /// With --auto: Spider train pairs replayed beside the feedback, against forgetting SQL in
    /// general (0: none; read from --data-dir's spider/, skipped with a warning when absent).
    #[arg(long, default_value_t = crate::train::recipe::AUTO_REPLAY, value_name = "N", value_parser = count(0, 1_000_000))]
    pub replay: usize,
    /// With --auto: the new pairs needed to start a run.
    #[arg(long, default_value_t = 50, value_name = "N", value_parser = count(0, 1_000_000_000))]
    pub min_new: usize,
    /// With --auto: also measure execution accuracy on this question set (`spider-dev`, from
    /// --data-dir, or a JSONL set as `eval` takes) for the new adapter and the current default;
    /// the new one is made the default only if it is not worse on either measure.
    #[arg(long, value_name = "spider-dev|FILE", requires = "auto")]
    pub eval_set: Option<String>,
    /// Questions of --eval-set to run (from its start).
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = count(1, 1_000_000_000))]
    pub eval_limit: usize,
    #[command(flatten)]
    pub model: ModelOpts,
    #[command(flatten)]
    pub feedback: FeedbackOpts,
    /// Only the feedback of this database (with --data feedback).
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// LoRA rank r (1 to 1024).
    #[arg(long, default_value_t = 16, value_parser = count(1, 1024))]
    pub rank: usize,
    /// LoRA alpha: the update is scaled by alpha/r (above 0).
    #[arg(long, default_value_t = 32.0, value_parser = number(0.0, true, 1e6, false))]
    pub alpha: f64,
    /// Dropout on the LoRA input, from 0 up to (not including) 1.
    #[arg(long, default_value_t = 0.05, value_parser = number(0.0, false, 1.0, true).map(|v| v as f32))]
    pub dropout: f32,
    /// Projections to adapt: q,k,v,o,gate,up,down.
    #[arg(long, value_delimiter = ',', default_value = "q,k,v,o,gate,up,down")]
    pub targets: Vec<String>,
    /// Peak learning rate (above 0, at most 1; default 2e-4, with --rl 2e-5).
    #[arg(long, value_parser = number(0.0, true, 1.0, false))]
    pub lr: Option<f64>,
    /// AdamW weight decay (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = number(0.0, false, 1.0, false))]
    pub weight_decay: f64,
    /// Optimizer steps (default: from --epochs).
    #[arg(long, value_parser = count(1, 100_000_000))]
    pub steps: Option<usize>,
    /// Passes over the training examples (above 0).
    #[arg(long, default_value_t = 1.0, value_parser = number(0.0, true, 10_000.0, false))]
    pub epochs: f64,
    /// Examples a forward pass.
    #[arg(long, default_value_t = 4, value_parser = count(1, 1024))]
    pub batch: usize,
    /// Forward passes summed into one optimizer step.
    #[arg(long, default_value_t = 1, value_parser = count(1, 1024))]
    pub grad_accum: usize,
    /// Longer examples (prompt + answer tokens) are left out (default: 512; with --auto
    /// 2048, so that a team's pairs over a large schema are not).
    #[arg(long, value_parser = count(16, 131_072))]
    pub max_len: Option<usize>,
    /// Steps of linear warm-up of the learning rate.
    #[arg(long, default_value_t = 10, value_parser = count(0, 100_000_000))]
    pub warmup: usize,
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: crate::train::Schedule,
    /// Share of the examples held out for the eval loss, from 0 up to (not including) 1.
    #[arg(long, default_value_t = 0.05, value_parser = number(0.0, false, 1.0, true))]
    pub eval_split: f64,
    /// Compute the eval loss every N steps (and at the end; 0: only at the end).
    #[arg(long, default_value_t = 50, value_parser = count(0, 1_000_000_000))]
    pub eval_every: usize,
    /// Clip the gradient's norm to this (0: no clipping).
    #[arg(long, default_value_t = 1.0, value_parser = number(0.0, false, 1e6, false))]
    pub clip: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use at most this many examples (after shuffling with the seed).
    #[arg(long, value_parser = count(1, 1_000_000_000))]
    pub limit: Option<usize>,
    /// Save a checkpoint every N steps (0: never), and on Ctrl-C.
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = count(0, 1_000_000_000))]
    pub checkpoint_every: usize,
    /// Continue the run of this --out from its last checkpoint (same data and options).
    #[arg(long)]
    pub resume: bool,
    /// Keep every layer's activations for the backward pass instead of recomputing them:
    /// faster, at several times the memory. (Autograd path only: bf16 training on CUDA runs
    /// hand-written layers that keep a lean set of activations and never recompute.)
    #[arg(long)]
    pub keep_activations: bool,
    /// On CUDA, compute f32 matrix products in full f32 instead of on TF32 tensor cores.
    #[arg(long)]
    pub exact_f32: bool,
    /// Dtype of activations and matrix products (default: bf16 on a GPU, f32 on CPU). LoRA
    /// master weights, optimizer state, attention normalisation and the loss stay f32.
    #[arg(long, value_enum, value_name = "DTYPE")]
    pub compute: Option<crate::train::Compute>,
    /// Reinforcement learning on execution results (GRPO) instead of training on given
    /// answers: each step samples --group answers to each of --questions questions of one
    /// database (--data: spider-train, or question sets as `eval` reads them, JSONL of
    /// question, db, query), runs them and rewards each by its result (1 right; 0.1 to 0.5 ran
    /// but wrong, by the share of the gold result's cells it returned; 0 failed), and moves
    /// the adapter toward the answers better than their group's mean, held near where it
    /// started by --kl. Starts from --from (default: the adapter shipped for the model, when
    /// it fits). --steps (default 100) counts updates; --batch is the examples a forward pass.
    #[arg(long)]
    pub rl: bool,
    /// With --rl: answers sampled per question (at least 2).
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = count(2, 256), requires = "rl")]
    pub group: usize,
    /// With --rl: questions a step (of one database).
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = count(1, 4096), requires = "rl")]
    pub questions: usize,
    /// With --rl: weight of the KL penalty that holds the adapter near the one it started
    /// from (0: none).
    #[arg(long, default_value_t = 0.04, value_name = "BETA", value_parser = number(0.0, false, 100.0, false), requires = "rl")]
    pub kl: f64,
    /// With --rl: softmax temperature of the sampled answers.
    #[arg(long, default_value_t = 1.0, value_name = "T", value_parser = number(0.0, true, 10.0, false), requires = "rl")]
    pub temperature: f64,
    /// Write the tokenized training examples ({"ids", "answer_start"} a line) to this file and
    /// stop: the exact sequences, for comparing with another trainer
    /// (scripts/hf-train-anchor.py).
    #[arg(long, value_name = "FILE")]
    pub dump_examples: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AdaptersCommand {
    /// List the adapters in the library.
    List,
    /// Show one adapter's configuration and metadata.
    Show { name: String },
    /// Copy a PEFT adapter directory (adapter_config.json + adapter_model.safetensors) into
    /// the library, checked against the model.
    Import {
        path: PathBuf,
        /// Name in the library (default: the directory's name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        model: ModelOpts,
    },
    /// Copy an adapter out of the library: its PEFT files into DIR, or (`--format gguf-lora`)
    /// a llama.cpp LoRA GGUF, to serve with `llama-server --lora FILE` (DIR may be the .gguf
    /// file's path, or a folder to write NAME.gguf into).
    Export {
        name: String,
        dir: PathBuf,
        #[arg(long, default_value = "peft", value_parser = ["peft", "gguf-lora"])]
        format: String,
    },
    /// Delete an adapter from the library.
    Remove { name: String },
    /// Make an adapter the default for a database: a NAME from the library, `none` (the base
    /// model) or `default` (back to what every database gets: the adapter shipped for the
    /// model, if any).
    Use {
        name: String,
        #[command(flatten)]
        db: DbOpts,
    },
}

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// `spider-dev` (the 972 Spider dev questions whose database is present) or a JSONL file
    /// with one {"question", "db", "query", "order_matters"?} object a line.
    #[arg(
        long,
        value_name = "spider-dev|FILE",
        required_unless_present = "compare"
    )]
    pub set: Option<String>,
    /// Directory holding spider/ (default: $SQLORA_EVAL_DATA, else ../shared/data).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Run at most this many questions.
    #[arg(long, value_name = "N", value_parser = count(1, 1_000_000_000))]
    pub limit: Option<usize>,
    /// Skip this many questions first.
    #[arg(long, default_value_t = 0, value_name = "K", value_parser = count(0, 1_000_000_000))]
    pub offset: usize,
    /// Write every question's predicted SQL, gold SQL and verdict to this JSON file (a plain
    /// run rewrites it every 10 s or so as it goes, with "complete": false until it ends).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// With --adapter: also run the base model and report both EX values and the flips.
    #[arg(long, requires = "set")]
    pub compare_base: bool,
    /// Questions on one database answered together, their first generations in one batch
    /// (default: 1 on a GPU with the fused decoder, 32 on one without, 8 on CPU; 1 answers them
    /// one at a time).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=512))]
    pub batch: Option<u16>,
    /// List the questions whose correctness differs between two --out reports.
    #[arg(long, num_args = 2, value_names = ["A.json", "B.json"], conflicts_with_all = ["set", "limit", "out"])]
    pub compare: Option<Vec<PathBuf>>,
    /// Simulate a user's corrections: for each N of --n, record the first N pairs of this
    /// pool on each database (gold SQL as the fix) in a new feedback store, then answer the set
    /// with them retrieved as examples. With --out, writes the report and a PNG of EX against N.
    #[arg(
        long,
        value_name = "POOL.jsonl",
        requires = "set",
        conflicts_with = "compare_base"
    )]
    pub corrections: Option<PathBuf>,
    /// Corrections per database to simulate (with --corrections).
    #[arg(
        long,
        value_name = "N,N…",
        value_delimiter = ',',
        default_value = "0,5,10,20,50"
    )]
    pub n: Vec<usize>,
    /// How the corrections help: `retrieval` (shown as examples, no training), `train` (an
    /// adapter trained on them as `train --auto` trains: each pair weighted up, Spider train
    /// replayed beside them) or `both`.
    #[arg(long, default_value = "retrieval", value_parser = ["retrieval", "train", "both"])]
    pub mode: String,
    /// Seed of the order in which the pool's pairs are recorded (0: the file's order).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub pool_seed: u64,
    #[command(flatten)]
    pub model: ModelOpts,
    #[command(flatten)]
    pub run: RunOpts,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Download a model into the cache and verify its checksum.
    Pull {
        /// Model name (see `sqlora model list`).
        #[arg(default_value = crate::hub::registry::DEFAULT_MODEL)]
        name: String,
    },
    /// Show known models and which are cached.
    List,
}

#[derive(Debug, Clone, Args)]
pub struct DbOpts {
    /// Database: postgres://USER@HOST:PORT/DB, mysql:// or mariadb://USER@HOST:PORT/DB,
    /// sqlite://PATH or a SQLite file path (default: the bundled demo database).
    // The value may hold a password: `--help` names the variable, never its value.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub db: Option<String>,
    /// PostgreSQL schemas to show the model, comma-separated, the first one the default
    /// (default: the search_path).
    #[arg(long, value_name = "NAME[,NAME]", value_delimiter = ',')]
    pub schema: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ModelOpts {
    /// Model name (qwen2.5-coder-0.5b, qwen2.5-coder-1.5b, smollm2-135m) or a GGUF file path.
    #[arg(long, env = "SQLORA_MODEL", value_name = "NAME|PATH")]
    pub model: Option<String>,
    /// Never download: fail if the model is not cached.
    #[arg(long)]
    pub offline: bool,
    /// LoRA adapter from the library (`sqlora adapters list`), or `none` for the base model
    /// (default: the database's own choice from `adapters use`, else the adapter shipped for
    /// the default model, `qwen2.5-coder-0.5b-sql`, when that model is loaded).
    #[arg(long, env = "SQLORA_ADAPTER", value_name = "NAME|none")]
    pub adapter: Option<String>,
    /// Fold the adapter into the weights: answers come at the base model's speed, memory stays
    /// that of the base on CPU, but the adapter cannot be switched or compared in this session.
    #[arg(long)]
    pub merge: bool,
    /// Where the model runs: auto (CUDA when this build has it and a GPU answers, else CPU),
    /// cpu, cuda or cuda:N.
    #[arg(
        long,
        env = "SQLORA_DEVICE",
        default_value = "auto",
        value_name = "auto|cpu|cuda[:N]"
    )]
    pub device: crate::hub::device::DeviceChoice,
    /// Where answers are generated: `local` (this process), an OpenAI-compatible completions
    /// server (`openai://HOST:PORT[/v1]`: vLLM, SGLang, llama.cpp's server) or llama.cpp's own
    /// endpoint (`llamacpp://HOST:PORT`); `+https` after the scheme for TLS. A server's API key
    /// comes from SQLORA_API_KEY. Prompts are written with the tokenizer of `--model`.
    #[arg(
        long,
        env = "SQLORA_BACKEND",
        default_value = "local",
        value_name = "local|openai://HOST:PORT|llamacpp://HOST:PORT"
    )]
    pub backend: crate::llm::remote::BackendChoice,
}

#[derive(Debug, Clone, Args)]
pub struct RunOpts {
    /// Stop reading results after this many rows.
    #[arg(long, default_value_t = 1000, value_name = "N", value_parser = count(1, MAX_ROWS as u64))]
    pub max_rows: usize,
    /// Interrupt a query after this many seconds (at most a day).
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = number(0.0, true, MAX_TIMEOUT_SECS, false))]
    pub timeout: f64,
    /// When generated SQL fails, show the model the error and let it retry this many times
    /// (at most 10).
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = count(0, 10))]
    pub repairs: usize,
    /// Token budget for the schema in the prompt: a larger schema gets, per question, the
    /// tables that matter most (with the join paths between them) instead of all of them.
    #[arg(
        long,
        default_value_t = crate::pipeline::DEFAULT_CONTEXT_TOKENS,
        value_name = "N",
        value_parser = count(64, 131_072)
    )]
    pub context_tokens: usize,
    /// Mask the model's tokens so that it can only write names of the tables it was shown,
    /// where they may stand (`off`: any text).
    #[arg(long, default_value = "on", value_name = "on|off", value_parser = on_off, action = clap::ArgAction::Set)]
    pub constrain: bool,
    /// Answers generated per question, voted on by their results: the greedy one and N−1
    /// sampled ones; the answer says how many agree (default: 8 on a GPU, 1 on a CPU).
    #[arg(long, value_name = "N", value_parser = count(1, 64))]
    pub candidates: Option<usize>,
    /// Sampling temperature of the candidates.
    #[arg(long, default_value_t = 0.8, value_name = "T", value_parser = number(0.0, true, 5.0, false))]
    pub temperature: f64,
    /// Seed of the sampled candidates: the same seed gives the same answers.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,
    /// Show the model up to K accepted or corrected answers of this database most like the
    /// question, as examples (0: none).
    #[arg(long, default_value_t = crate::pipeline::DEFAULT_EXAMPLES, value_name = "K", value_parser = count(0, 16))]
    pub examples: usize,
}

/// `on`/`off` (also true/false, yes/no, 1/0).
fn on_off(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("`{s}` is not on or off")),
    }
}

/// Where to ask, with what model, under which limits: shared by `shell` and `ask`.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    #[command(flatten)]
    pub db: DbOpts,
    #[command(flatten)]
    pub model: ModelOpts,
    #[command(flatten)]
    pub run: RunOpts,
}

/// Where answers and their verdicts are kept.
#[derive(Debug, Clone, Args)]
pub struct FeedbackOpts {
    /// Feedback store: a SQLite file, or postgres://… to pool a team's corrections
    /// (default: feedback.sqlite in the data dir).
    #[arg(
        long,
        env = "SQLORA_FEEDBACK_DB",
        hide_env_values = true,
        value_name = "PATH|URL"
    )]
    pub feedback_db: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum FeedbackCommand {
    /// Save a known-good question/SQL pair (the SQL must pass the guard and run first).
    Record {
        #[command(flatten)]
        db: DbOpts,
        #[command(flatten)]
        feedback: FeedbackOpts,
        /// The question, in plain English.
        #[arg(long)]
        question: String,
        /// The SQL that answers it.
        #[arg(long)]
        sql: String,
        /// `corrected` (default) or `accepted`.
        #[arg(long, default_value = "corrected", value_parser = ["corrected", "accepted"])]
        verdict: String,
        /// A note kept with the record.
        #[arg(long)]
        note: Option<String>,
    },
    /// List recent answers, newest first.
    List {
        #[command(flatten)]
        feedback: FeedbackOpts,
        /// Only answers about this database (its URL or path).
        #[arg(long, value_name = "URL")]
        db: Option<String>,
        /// Only this verdict: unreviewed, accepted, corrected or rejected.
        #[arg(long, value_parser = ["unreviewed", "accepted", "corrected", "rejected"])]
        verdict: Option<String>,
        /// Show at most this many.
        #[arg(long, default_value_t = 50, value_parser = count(1, 1_000_000))]
        limit: usize,
    },
    /// Write the training pairs, one JSON object a line:
    /// {"question","context","answer","db","dialect"}.
    Export {
        #[command(flatten)]
        feedback: FeedbackOpts,
        /// Output format (JSON lines).
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl"])]
        format: String,
        /// Only answers judged at or after this date or time: YYYY-MM-DD (UTC) or RFC 3339
        /// (e.g. 2026-11-01T09:30:00+01:00).
        #[arg(long, value_name = "DATE", value_parser = crate::clock::parse_since)]
        since: Option<String>,
        /// Only answers about this database (its URL or path).
        #[arg(long, value_name = "URL")]
        db: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Take answers out of examples and training for good (they stay listed, as removed).
    Remove {
        #[command(flatten)]
        feedback: FeedbackOpts,
        /// The answers' ids (see `sqlora feedback list`).
        #[arg(required = true, num_args = 1.., value_name = "ID")]
        ids: Vec<i64>,
    },
    /// Counts per database and verdict, and pairs not yet used for training.
    Stats {
        #[command(flatten)]
        feedback: FeedbackOpts,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ShellArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub feedback: FeedbackOpts,
    /// Result format in the shell.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Page long results through $PAGER (default: when the output is a terminal).
    #[arg(long, value_name = "on|off", value_parser = clap::builder::BoolishValueParser::new())]
    pub pager: Option<bool>,
    /// How NULL is shown in tables (default: empty, as in psql).
    #[arg(long, value_name = "TEXT")]
    pub null: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct AskArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub feedback: FeedbackOpts,
    /// Output format; `json` prints one object with question, sql, columns, rows, row_count,
    /// elapsed_ms.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Answer with the base model and with the adapter, and show whether the results agree.
    #[arg(long)]
    pub compare: bool,
    /// The question, in plain English.
    #[arg(required = true, num_args = 1.., value_name = "QUESTION")]
    pub question: Vec<String>,
}

/// The most `--max-rows` may be.
pub const MAX_ROWS: usize = 10_000_000;
/// The most `--timeout` may be: a day.
pub const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// A whole number from `lo` to `hi`, as clap parses it (its error names the range).
fn count(lo: u64, hi: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(lo..=hi)
}

/// A finite number from `lo` to `hi` (each bound excluded when its `open` is set), as clap
/// parses it: NaN, infinities and values out of range are refused with the range.
fn number(
    lo: f64,
    lo_open: bool,
    hi: f64,
    hi_open: bool,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let range = format!(
            "{}{lo}, {hi}{}",
            if lo_open { "(" } else { "[" },
            if hi_open { ")" } else { "]" }
        );
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("not a number (expected one in {range})"))?;
        let above = if lo_open { v > lo } else { v >= lo };
        let below = if hi_open { v < hi } else { v <= hi };
        if v.is_finite() && above && below {
            Ok(v)
        } else {
            Err(format!("{s} is not in {range}"))
        }
    }
}

impl RunOpts {
    pub fn limits(&self) -> Result<crate::db::Limits, String> {
        if !(self.timeout > 0.0 && self.timeout <= MAX_TIMEOUT_SECS) {
            return Err(format!(
                "--timeout must be a positive number of seconds, at most {MAX_TIMEOUT_SECS} (a \
                 day), got {}",
                self.timeout
            ));
        }
        if !(1..=MAX_ROWS).contains(&self.max_rows) {
            return Err(format!(
                "--max-rows must be from 1 to {MAX_ROWS}, got {}",
                self.max_rows
            ));
        }
        Ok(crate::db::Limits {
            max_rows: self.max_rows,
            timeout: std::time::Duration::from_secs_f64(self.timeout),
        })
    }

    /// The schema mask and candidates asked for (candidates 0: the device's default).
    pub fn levers(&self) -> crate::pipeline::Levers {
        crate::pipeline::Levers {
            constrain: self.constrain,
            candidates: self.candidates.unwrap_or(0),
            temperature: self.temperature as f32,
            seed: self.seed,
            ..crate::pipeline::Levers::default()
        }
    }
}

/// A `--model` value: a known name or a file.
#[derive(Debug, Clone)]
pub enum ModelChoice {
    Named(&'static crate::hub::registry::ModelSpec),
    File(PathBuf),
}

impl ModelOpts {
    /// An error when `--backend` names a server for `what`, which only the model in this
    /// process can do (training, importing an adapter against the loaded model).
    pub fn local_only(&self, what: &str) -> Result<(), String> {
        match &self.backend {
            crate::llm::remote::BackendChoice::Local => Ok(()),
            crate::llm::remote::BackendChoice::Remote(e) => Err(format!(
                "{what} needs the model in this process, not --backend {}",
                e.shown
            )),
        }
    }

    pub fn choice(&self) -> Result<ModelChoice, String> {
        use crate::hub::registry;
        let value = self.model.as_deref().unwrap_or(registry::DEFAULT_MODEL);
        if let Some(spec) = registry::find(value) {
            return Ok(ModelChoice::Named(spec));
        }
        let looks_like_path = value.contains(std::path::MAIN_SEPARATOR)
            || value.contains('/')
            || value.to_ascii_lowercase().ends_with(".gguf");
        if looks_like_path {
            Ok(ModelChoice::File(PathBuf::from(value)))
        } else {
            Err(format!(
                "unknown model `{value}`: use one of {} or a path to a .gguf file",
                registry::names()
            ))
        }
    }
}

#[cfg(test)]
mod tests;
