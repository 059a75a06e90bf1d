//! The interactive shell: read a line, tell a backslash command from SQL from a question, run
//! it through the pipeline, render the outcome. One bad input prints one line and the shell
//! goes on; so does a result too slow to render, which `--timeout` and Ctrl-C cover as they
//! cover the query (long values are shortened for the terminal, see [`render`]).
//!
//! The shell opens nothing itself: whoever starts it (`sqlora shell`, in the application
//! layer) opens the database, the model and the feedback store and hands them over as
//! [`Opened`], with the Ctrl-C flag, and [`Options`] for how results look. What it must reach
//! at run time above itself — the adapter library, for `\adapter` — comes as an
//! [`Adapters`]. So the shell imports only from below (the pipeline and what it is built
//! on), never the command line, the config file or the commands. The feedback commands are
//! in `review.rs`.

pub mod commands;
pub mod complete;
pub mod conversation;
pub mod input;
pub mod pager;
pub mod progress;
pub mod render;
mod review;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::Result;
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::Editor;

use crate::cancel::Cancel;
use crate::llm::Backend;
use crate::pipeline::{AskError, Pipeline};
use crate::sql::{Dialect, Outcome};
use render::Format;
use review::LastAnswer;

pub enum Flow {
    Continue,
    Quit,
}

pub struct Shell {
    pipeline: Pipeline,
    format: Format,
    timing: bool,
    cancel: Cancel,
    color: bool,
    /// How tables look: NULL (`\pset null`) and records (`\x`).
    look: render::Look,
    /// `\pager`: output taller or wider than the terminal goes through the pager.
    pager: bool,
    model_error: Option<String>,
    /// Where answers and verdicts are kept (absent when it could not be opened).
    feedback: Option<crate::feedback::Store>,
    /// The last logged answer: what `\ok`, `\fix` and `\bad` judge.
    last: Option<LastAnswer>,
    /// Answers whose verdict this session changed, newest last (for `\undo`).
    judged: Vec<i64>,
    /// Earlier turns a follow-up is asked with, and the SQL `\explain` explains.
    conversation: conversation::Conversation,
    /// Multi-line SQL, `\e`, `\o`, `\i` and the Ctrl-C hint (see [`input`]).
    input: input::State,
    /// `\adapter`: the adapter library and how an adapter is applied (see [`Adapters`]).
    adapters: Box<dyn Adapters>,
    /// The schema being read into the model at launch; taken back before the first line runs.
    warming: Option<crate::pipeline::Warming>,
}

/// What `\adapter` needs from the layer that started the shell: the adapter library and the
/// way an adapter is applied to a model are the application's, so the shell is handed them
/// as this rather than reaching up for them.
pub trait Adapters {
    /// The names of the adapters in the library (none when it cannot be read).
    fn names(&self) -> Vec<String>;
    /// Applies the adapter named `name` to `engine` (in-process: from the library; on a
    /// server: by the name it serves it under); its name when one is applied, `None` when
    /// `none` took the adapter off.
    fn apply(&self, engine: &mut dyn Backend, name: &str) -> Result<Option<String>>;
}

/// How results are shown, as the command line (or the config file) asks.
pub struct Options {
    pub format: Format,
    /// How NULL is shown (`--null`; none: empty).
    pub null: Option<String>,
    /// `--pager` (none: page when stdout is a terminal).
    pub pager: Option<bool>,
}

/// What the shell works with, opened by its caller before [`run`].
pub struct Opened {
    /// The database, with the model attached when it loaded.
    pub pipeline: Pipeline,
    /// Set by Ctrl-C (see [`LineEditor`]); the shell resets it after each input.
    pub cancel: Cancel,
    /// Why no model loaded: questions are refused with it, SQL still runs.
    pub model_error: Option<String>,
    /// Where answers and verdicts are kept (none: they are not logged this session).
    pub feedback: Option<crate::feedback::Store>,
    pub adapters: Box<dyn Adapters>,
    /// The schema being read into the model while the user types the first line.
    pub warming: Option<crate::pipeline::Warming>,
}

/// The line editor with the shell's history settings. On a terminal, making it installs
/// rustyline's own SIGINT handler: make it before the Ctrl-C handler that sets
/// [`Opened::cancel`], so that handler replaces it and Ctrl-C during a query or while a
/// result renders reaches the shell (at the prompt, Ctrl-C is a key to rustyline).
pub struct LineEditor(Editor<complete::SqlHelper, FileHistory>);

impl LineEditor {
    pub fn new() -> Result<Self> {
        let config = rustyline::Config::builder()
            .auto_add_history(false)
            .max_history_size(10_000)?
            .build();
        Ok(Self(Editor::with_config(config)?))
    }
}

/// Runs the shell until `\q` or end of input, on what `opened` holds.
pub fn run(editor: LineEditor, opened: Opened, options: Options) -> Result<()> {
    eprintln!("Type a question, SQL, or \\help. \\q quits. After an answer: \\ok, \\fix, \\bad.");
    let mut shell = Shell {
        pipeline: opened.pipeline,
        format: options.format,
        timing: false,
        cancel: opened.cancel,
        // No escape bytes unless both outputs are terminals, nor under NO_COLOR (non-empty).
        color: std::io::stdout().is_terminal()
            && std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        // NULL is empty unless `--null` (or the config) says otherwise, as in psql.
        look: render::Look {
            null: options.null.unwrap_or_default(),
            ..render::Look::default()
        },
        // Never pages anything but a terminal, whatever this says (see `page_or_print`).
        pager: options
            .pager
            .unwrap_or_else(|| std::io::stdout().is_terminal()),
        model_error: opened.model_error,
        feedback: opened.feedback,
        last: None,
        judged: Vec::new(),
        conversation: Default::default(),
        input: Default::default(),
        adapters: opened.adapters,
        warming: opened.warming,
    };
    shell.reload_examples();
    shell.repl(editor.0)
}

fn history_path() -> Option<PathBuf> {
    crate::paths::data_dir().ok().map(|d| d.join("history.txt"))
}

/// Whether `line` leaves the shell (`\q`, `\quit`, `\exit`, `exit`, `quit;`, …).
fn quits(line: &str) -> bool {
    if line.trim_start().starts_with('\\') {
        return commands::lookup(commands::split(line).0).is_some_and(|c| c.name == "q");
    }
    input::is_quit(line)
}

/// How many candidates agree with an answer, said plainly when at most half do.
pub fn confidence_line(c: &crate::pipeline::Confidence) -> String {
    if c.is_low() {
        format!("{c}: the candidates disagree; check the answer before trusting it")
    } else {
        c.to_string()
    }
}

/// True when `line` is SQL rather than a question: it starts with a statement keyword and
/// parses, and is no SHOW/DESCRIBE (English starts with those too); see [`input`] for the rule.
pub fn looks_like_sql(line: &str, dialect: Dialect) -> bool {
    input::is_sql_line(line, dialect)
}

/// What the note under a shortened result in the shell points to: for a table, the longer
/// CSV and JSON values; for those, `sqlora ask`, which prints whole values.
fn whole_values_hint(format: Format) -> String {
    match format {
        Format::Table => format!(
            "\\format csv|json shows {} characters of each, `sqlora ask --format csv|json` all",
            render::grouped(render::SHELL_VALUE_CHARS)
        ),
        Format::Csv | Format::Json => "`sqlora ask --format csv|json` prints whole values".into(),
    }
}

/// Why a result was not shown.
#[derive(Debug, PartialEq, Eq)]
enum NotShown {
    Cancelled,
    TimedOut,
    /// The worker stopped without a result (a panic while rendering).
    Failed,
}

/// Renders `o` in `format` as `look` says, fitted to `width` (the terminal's; `None`: not one)
/// on a worker thread (cells capped, CSV and JSON values at [`render::SHELL_VALUE_CHARS`])
/// and waits for it until `deadline` or until `cancel` is set, checked before each wait. On
/// either the worker is told to stop and left to finish alone: the shell does not wait for it.
fn render_within(
    o: Outcome,
    format: Format,
    look: render::Look,
    width: Option<u16>,
    deadline: Instant,
    cancel: &Cancel,
) -> std::result::Result<render::Shown, NotShown> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let chars = Some(render::SHELL_VALUE_CHARS);
            let shown = render::show_as(&o, format, &look, width, chars, &stop);
            let _ = tx.send(shown);
        });
    }
    let not_shown = loop {
        if cancel.is_set() {
            break NotShown::Cancelled;
        }
        let now = Instant::now();
        if now >= deadline {
            break NotShown::TimedOut;
        }
        match rx.recv_timeout((deadline - now).min(Duration::from_millis(25))) {
            Ok(Some(shown)) => return Ok(shown),
            // Only this function raises the flag, after the loop: the worker panicked.
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => break NotShown::Failed,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    };
    stop.store(true, Ordering::Relaxed);
    Err(not_shown)
}

impl Shell {
    /// Table and column names for completion.
    fn names(&self) -> Vec<complete::TableNames> {
        let tables = &self.pipeline.schema().tables;
        let names = tables.iter().map(|t| {
            let columns = t.columns.iter().map(|c| c.name.clone()).collect();
            (t.name.clone(), columns)
        });
        names.collect()
    }

    fn repl(&mut self, mut rl: Editor<complete::SqlHelper, FileHistory>) -> Result<()> {
        rl.set_helper(Some(complete::SqlHelper::new(
            self.names(),
            complete::color_here(),
        )));
        let hist = history_path();
        if let Some(h) = &hist {
            let _ = rl.load_history(h);
        }
        self.bind_ctrl_c(&mut rl);
        loop {
            // The adapter in use, unless it is the one every database gets by default.
            let adapter = match &self.warming {
                Some(w) => w.adapter.clone(),
                None => self.pipeline.backend().and_then(|e| e.adapter_name()),
            };
            let prompt = match adapter {
                Some(a) if a != crate::llm::lora::bundled::NAME => format!("sqlora[{a}]> "),
                _ => "sqlora> ".to_string(),
            };
            match rl.readline(&self.input.prompt(&prompt)) {
                Ok(line) => {
                    let line = line.trim();
                    // An empty line ends (discards) a buffered statement.
                    if line.is_empty() && !self.input.buffering() {
                        continue;
                    }
                    let _ = rl.add_history_entry(line);
                    if let Some(h) = &hist {
                        let _ = rl.append_history(h);
                    }
                    // Quitting does not wait for the schema read; anything else does, and
                    // Ctrl-C during that wait drops the line (it is in the history).
                    if !quits(line) && !self.finish_warming() {
                        self.cancel.reset();
                        continue;
                    }
                    self.cancel.reset();
                    if let Flow::Quit = self.handle(line) {
                        break;
                    }
                    if let Some(h) = rl.helper_mut() {
                        h.set_schema(self.names());
                    }
                }
                Err(ReadlineError::Interrupted) => self.on_interrupt(),
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Waits for the schema read started at launch (it ran while the user typed) and takes the
    /// model back; says so when it failed. False when Ctrl-C cancelled the wait.
    fn finish_warming(&mut self) -> bool {
        let Some(w) = self.warming.take() else {
            return true;
        };
        let spinner = (!w.is_finished()).then(|| {
            progress::Spinner::start(&match w.tokens {
                Some(n) => format!("reading the schema into the model ({n} tokens)"),
                None => "reading the schema into the model".into(),
            })
        });
        let result = self.pipeline.finish_warm_up(w);
        drop(spinner);
        match result {
            Ok(_) => true,
            Err(crate::pipeline::AskError::Model(crate::llm::LlmError::Cancelled)) => {
                eprintln!("cancelled; the schema will be read with the next question");
                false
            }
            Err(e) => {
                eprintln!("sqlora: {e} (the schema will be read with the question)");
                true
            }
        }
    }

    /// Handles one input line.
    pub fn handle(&mut self, line: &str) -> Flow {
        if line.starts_with('\\') {
            let (name, arg) = commands::split(line);
            return match commands::lookup(name) {
                Some(c) => (c.run)(self, arg),
                None => {
                    eprintln!("sqlora: unknown command \\{name}; \\help lists them");
                    Flow::Continue
                }
            };
        }
        // SQL (over lines until `;`), a question, or a psql habit: see [`input`].
        self.on_line(line)
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    /// Prints a result in the current format. Rendering runs on a worker thread and is
    /// waited for until what is left of `--timeout` after the query (`spent_secs`; at least
    /// a second) or Ctrl-C, whichever comes first; then one line says the result was not
    /// shown and the shell goes on. Long values are shortened (see [`render`]).
    fn print_outcome(&self, o: Outcome, spent_secs: f64) {
        let budget = self
            .pipeline
            .limits
            .timeout
            .saturating_sub(Duration::try_from_secs_f64(spent_secs).unwrap_or_default())
            .max(Duration::from_secs(1));
        let count = render::row_count_line(&o);
        let has_columns = !o.columns.is_empty();
        let size = pager::terminal_size();
        let (look, width) = (self.look.clone(), size.map(|(cols, _)| cols));
        let deadline = Instant::now() + budget;
        match render_within(o, self.format, look, width, deadline, &self.cancel) {
            // `\o FILE`: the result goes there.
            Ok(shown) if self.input.write_result(&shown.text, &count) => {}
            Ok(shown) => {
                let note = render::shortened_note(shown.shortened, &whole_values_hint(self.format));
                let mut out = String::new();
                let mut line = |s: &str| {
                    out.push_str(s);
                    out.push('\n');
                };
                match self.format {
                    Format::Table => {
                        // Expanded display of no rows is no text at all.
                        if has_columns && !shown.text.is_empty() {
                            line(&shown.text);
                        }
                        line(&self.paint("2", &count));
                        if let Some(note) = &note {
                            line(&self.paint("2", note));
                        }
                    }
                    _ => line(shown.text.trim_end()),
                }
                self.page_or_print(&out, size);
                // Kept off stdout, which holds nothing but the CSV or JSON.
                if let (Format::Csv | Format::Json, Some(note)) = (self.format, note) {
                    eprintln!("{}", self.paint("2", &note));
                }
            }
            Err(NotShown::Cancelled) => {
                eprintln!("cancelled; the result was not shown");
                self.cancel.reset();
            }
            Err(NotShown::TimedOut) => eprintln!(
                "{}",
                self.paint(
                    "31",
                    &format!(
                        "error: the result was not shown: rendering it ran past the {:?} \
                         timeout (--timeout)",
                        self.pipeline.limits.timeout
                    )
                )
            ),
            Err(NotShown::Failed) => eprintln!(
                "{}",
                self.paint("31", "error: the result was not shown: rendering it failed")
            ),
        }
    }

    /// Writes `out` to stdout: through the pager when `\pager` is on, stdout is a terminal of
    /// `size` and `out` is taller or wider than it; else (or when the pager cannot run) whole.
    fn page_or_print(&self, out: &str, size: Option<(u16, u16)>) {
        use std::io::Write;
        if let (true, Some(size)) = (self.pager, size) {
            if let Some(cmd) = pager::command().filter(|_| pager::too_big(out, size)) {
                match pager::page(out, &cmd, &self.cancel) {
                    Ok(()) => return,
                    Err(e) => eprintln!("sqlora: {e}; printing instead (\\pager off)"),
                }
            }
        }
        let mut stdout = std::io::stdout().lock();
        // A closed stdout loses the output, not the shell.
        let _ = stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush());
    }

    fn report(&self, e: &AskError) {
        // While `\i` runs a file, each failure is one line that says where.
        if let Some(at) = &self.input.location {
            eprintln!(
                "{}",
                self.paint("31", &format!("{at}: error: {}", e.one_line()))
            );
            return;
        }
        let msg = e.to_string();
        let mut lines = msg.lines();
        eprintln!(
            "{}",
            self.paint("31", &format!("error: {}", lines.next().unwrap_or("")))
        );
        // The SQL is shown as typed, but a statement of a megabyte is not shown whole.
        for l in lines {
            eprintln!("{}", self.paint("2", &crate::pipeline::clip(l)));
        }
    }

    fn ask(&mut self, question: &str) {
        if let Some(e) = &self.model_error {
            eprintln!("sqlora: no model ({e}); type SQL or use \\sql");
            return;
        }
        let previous = self.conversation.previous_for(question).to_vec();
        if let Some(first) = previous.first() {
            eprintln!(
                "{}",
                self.paint(
                    "2",
                    &format!(
                        "follow-up of \"{}\" ({} earlier; \\new starts over)",
                        first.question,
                        previous.len()
                    )
                )
            );
        }
        let result = {
            let spinner = progress::Spinner::start("answering");
            // `self.paint` would borrow the whole shell while the pipeline answers.
            let color = self.color;
            let paint = move |s: &str| {
                if color {
                    format!("\x1b[2m{s}\x1b[0m")
                } else {
                    s.to_string()
                }
            };
            let mut on = |p: crate::pipeline::Progress<'_>| match p {
                crate::pipeline::Progress::Answering { attempt, of } => {
                    spinner.detail(&format!("attempt {attempt}/{of}"))
                }
                // Each failed attempt on one line as it fails, SQL and error.
                crate::pipeline::Progress::Failed { attempt, failed } => {
                    let sql = failed.sql.split_whitespace().collect::<Vec<_>>().join(" ");
                    let error = failed
                        .error
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ");
                    spinner.println(&paint(&format!(
                        "attempt {attempt} failed: {error} — SQL: {} (repairing)",
                        crate::pipeline::clip(&sql)
                    )));
                }
            };
            self.pipeline
                .ask_in(question, &previous, &self.cancel, &mut on)
        };
        // A follow-up is logged with what it follows, so that it reads as a whole question.
        let logged = match previous.last() {
            Some(t) => format!("{} (follow-up: {})", t.question, question.trim()),
            None => question.to_string(),
        };
        self.log_answer(&logged, &result);
        self.conversation
            .record(question, !previous.is_empty(), &result);
        match result {
            Ok(a) => {
                println!("{}", self.paint("36", &a.sql));
                self.print_outcome(a.outcome, a.query_secs);
                if let Some(c) = a.confidence {
                    let code = if c.is_low() { "33" } else { "2" };
                    eprintln!("{}", self.paint(code, &confidence_line(&c)));
                }
                if self.timing {
                    let g = &a.generation;
                    eprintln!(
                        "{}",
                        self.paint(
                            "2",
                            &format!(
                                "model: prefill {} tok ({} cached) {:.0} ms, decode {} tok {:.0} ms ({:.1} tok/s); query {:.0} ms; total {:.0} ms",
                                g.prefill_tokens,
                                g.cached_tokens,
                                g.prefill_secs * 1e3,
                                g.new_tokens,
                                g.decode_secs * 1e3,
                                g.new_tokens as f64 / g.decode_secs.max(1e-9),
                                a.query_secs * 1e3,
                                a.total_secs * 1e3
                            )
                        )
                    );
                }
            }
            Err(AskError::Model(crate::llm::LlmError::Cancelled)) => eprintln!("cancelled"),
            Err(e) => self.report(&e),
        }
    }

    /// `\\compare QUESTION`: the adapter's answer and the base model's, and whether they agree.
    pub fn compare(&mut self, question: &str) {
        if question.trim().is_empty() {
            eprintln!("usage: \\compare QUESTION");
            return;
        }
        let Some((with, base)) = self.pipeline.compare(question, &self.cancel) else {
            eprintln!("sqlora: no adapter applied; \\adapter NAME first");
            self.cancel.reset();
            return;
        };
        let name = self
            .pipeline
            .backend()
            .and_then(|e| e.adapter_name())
            .unwrap_or_default();
        let agree = match (&with, &base) {
            (Ok(a), Ok(b)) => {
                crate::eval::compare::results_match(&b.outcome.rows, &a.outcome.rows, false)
            }
            _ => false,
        };
        for (label, r) in [
            (format!("adapter {name}"), with),
            ("base model".to_string(), base),
        ] {
            println!("{}", self.paint("1", &format!("== {label}")));
            match r {
                Ok(a) => {
                    println!("{}", self.paint("36", &a.sql));
                    self.print_outcome(a.outcome, a.query_secs);
                }
                Err(e) => self.report(&e),
            }
        }
        println!("results {}", if agree { "agree" } else { "differ" });
        self.cancel.reset();
    }

    /// `\\adapter [NAME|none]`: show or switch the LoRA adapter.
    pub fn adapter(&mut self, arg: &str) {
        let arg = arg.trim();
        if arg.is_empty() {
            match self.pipeline.backend().and_then(|e| e.adapter_name()) {
                Some(a) => println!("adapter: {a}"),
                None => println!("adapter: none (base model)"),
            }
            let names = self.adapters.names();
            if !names.is_empty() {
                println!("in the library: {}", names.join(", "));
            }
            return;
        }
        let Some(engine) = self.pipeline.backend_mut() else {
            eprintln!("sqlora: no model loaded");
            return;
        };
        match self.adapters.apply(engine, arg) {
            Ok(Some(name)) => eprintln!("adapter `{name}` applied; re-reading the schema into it…"),
            Ok(None) => eprintln!("base model, no adapter; re-reading the schema…"),
            Err(e) => {
                eprintln!("sqlora: {e:#}");
                return;
            }
        }
        let spinner = progress::Spinner::start("reading the schema into the model");
        let warmed = self.pipeline.warm_up(&self.cancel);
        drop(spinner);
        if let Err(e) = warmed {
            eprintln!("sqlora: {e}");
        }
        self.cancel.reset();
    }

    pub fn run_sql(&mut self, sql: &str) {
        if sql.trim().is_empty() {
            eprintln!("usage: \\sql SELECT …");
            return;
        }
        match self.pipeline.run_sql(sql, &self.cancel) {
            Ok(r) => {
                self.conversation.ran_sql(&r.sql);
                self.print_outcome(r.outcome, r.query_secs);
                if self.timing {
                    eprintln!(
                        "{}",
                        self.paint("2", &format!("query {:.1} ms", r.query_secs * 1e3))
                    );
                }
            }
            Err(e) => self.report(&e),
        }
    }

    fn print_help(&self) {
        println!("{}", commands::help_text());
    }

    fn print_tables(&self) {
        let o = Outcome {
            columns: vec!["name".into(), "kind".into(), "columns".into()],
            rows: self
                .pipeline
                .schema()
                .tables
                .iter()
                .map(|t| {
                    vec![
                        crate::sql::Value::Text(t.name.clone()),
                        crate::sql::Value::Text(match t.kind {
                            crate::schema::TableKind::Table => "table".into(),
                            crate::schema::TableKind::View => "view".into(),
                        }),
                        crate::sql::Value::Int(t.columns.len() as i64),
                    ]
                })
                .collect(),
            truncated: false,
        };
        self.print_outcome(o, 0.0);
    }

    fn print_schema(&self, table: &str) {
        if table.is_empty() {
            println!("{}", self.pipeline.context());
            return;
        }
        match self.pipeline.schema().table(table) {
            Some(t) => print!(
                "{}",
                crate::schema::render_table(t, self.pipeline.dialect())
            ),
            None => eprintln!("sqlora: no table named `{table}`; \\tables lists them"),
        }
    }

    fn print_context(&self) {
        match &self.pipeline.last_selection {
            None if self.pipeline.selects_tables() => {
                eprintln!("no question asked yet: the tables are chosen per question")
            }
            None => {
                println!("{}", self.pipeline.context());
                eprintln!(
                    "the whole schema ({} tables) fits the budget of {} tokens: the model sees \
                     all of it",
                    self.pipeline.schema().tables.len(),
                    self.pipeline.context_tokens
                );
            }
            Some(sel) => {
                println!("{}", sel.context);
                println!(
                    "-- {} of {} tables, {} of {} tokens:",
                    sel.tables.len(),
                    self.pipeline.schema().tables.len(),
                    sel.tokens,
                    self.pipeline.context_tokens
                );
                for c in &sel.tables {
                    println!("--   {:<32} {:5.2}  {}", c.table, c.score, c.why.join("; "));
                }
                if let Some(ns) = &sel.namespace {
                    println!(
                        "-- all in schema {ns}: shown to the model without it; sqlora qualifies \
                         the bare names the model writes"
                    );
                }
            }
        }
        self.print_examples();
    }

    /// The confirmed pairs the last question was shown as examples.
    fn print_examples(&self) {
        let all = self.pipeline.shots().len();
        if all == 0 {
            return;
        }
        let shown = &self.pipeline.last_examples;
        println!(
            "-- {} of this database's {all} confirmed pairs shown as examples{}",
            shown.len(),
            if shown.is_empty() { "" } else { ":" }
        );
        for s in shown.iter().rev() {
            let sql: String = s.sql.split_whitespace().collect::<Vec<_>>().join(" ");
            println!("--   #{:<5} {}  →  {}", s.id, s.question.trim(), sql);
        }
    }

    fn toggle_timing(&mut self, arg: &str) {
        self.timing = match arg.to_ascii_lowercase().as_str() {
            "on" => true,
            "off" => false,
            _ => !self.timing,
        };
        eprintln!("timing is {}", if self.timing { "on" } else { "off" });
    }

    fn set_format(&mut self, arg: &str) {
        match arg.parse::<Format>() {
            Ok(f) => {
                self.format = f;
                eprintln!("format is {arg}");
            }
            Err(e) => eprintln!("sqlora: {e}"),
        }
    }

    fn refresh(&mut self) {
        match self.pipeline.refresh() {
            Ok(()) => {
                eprintln!(
                    "schema re-read: {} tables",
                    self.pipeline.schema().tables.len()
                );
                // Pairs are kept only while their SQL fits the schema.
                self.reload_examples();
            }
            Err(e) => eprintln!("sqlora: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_versus_questions() {
        let d = Dialect::Sqlite;
        assert!(looks_like_sql("SELECT * FROM t", d));
        assert!(looks_like_sql("delete from customers", d));
        assert!(looks_like_sql("PRAGMA writable_schema=1", d));
        assert!(!looks_like_sql("delete all customers", d));
        assert!(!looks_like_sql("select the three biggest orders", d));
        assert!(!looks_like_sql("How many customers are there?", d));
        assert!(looks_like_sql("/*!KILL */ (SELECT 1)", Dialect::MySql));
        assert!(looks_like_sql("-- note\n(SELECT 1) UNION (SELECT 2)", d));
    }

    fn big() -> Outcome {
        Outcome {
            columns: vec!["big".into()],
            rows: vec![vec![crate::sql::Value::Text("x".repeat(5_000_000))]; 3],
            truncated: false,
        }
    }

    fn look() -> render::Look {
        render::Look::default()
    }

    #[test]
    fn rendering_shortens_in_time() {
        let never = Cancel::new();
        let far = Instant::now() + Duration::from_secs(60);
        let shown = render_within(big(), Format::Table, look(), None, far, &never).unwrap();
        assert_eq!(shown.shortened, 3);
        assert!(shown.text.contains("(4,999,000 more characters)"));
        for f in [Format::Csv, Format::Json] {
            let shown = render_within(big(), f, look(), None, far, &never).unwrap();
            assert_eq!(shown.shortened, 3);
            assert!(shown.text.len() < 4 * render::SHELL_VALUE_CHARS);
            assert!(shown.text.contains("(4,990,000 more characters)"));
        }
    }

    #[test]
    fn rendering_stops_at_the_deadline_and_on_ctrl_c() {
        let c = Cancel::new();
        let past = Instant::now();
        assert_eq!(
            render_within(big(), Format::Table, look(), None, past, &c),
            Err(NotShown::TimedOut)
        );
        c.set();
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(
            render_within(big(), Format::Table, look(), None, far, &c),
            Err(NotShown::Cancelled)
        );
    }
}
