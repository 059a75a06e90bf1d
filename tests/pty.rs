//! The real `sqlora shell` in a pseudo-terminal, as a user at a terminal has it: a 100 MB
//! value is shortened with a note and the next prompt comes within seconds, Ctrl-C cancels a
//! running query, an English question is answered by the real model, Ctrl-C at the prompt
//! keeps the shell and Ctrl-D leaves it with status 0; on a database the model has not read,
//! the prompt comes before the schema is read and the first question waits for that read.
//!
//! Uses the real model cache (`sqlora model pull` first) and a temporary database and data
//! directory; never touches the user's history or feedback. Output is read as it comes, each
//! wait with its own deadline, so a hang fails the test instead of stalling it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use rexpect::process::WaitStatus;
use rexpect::session::{spawn_with_options, Options, PtySession};

/// Reads the shell's output until `needle` appears, at most `within`; returns what came
/// before it (escape codes stripped; rexpect reads bytes, so only ASCII needles match).
/// One shell at a time: each loads the model, and the timing checks (Ctrl-C back to the prompt
/// within a second) would measure the other sessions on a 2-core machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Presses Ctrl-C while something runs and checks that it is cancelled and the prompt is back
/// within a second, the shell alive.
fn ctrl_c_back_within_a_second(s: &mut PtySession, what: &str) {
    let pressed = Instant::now();
    s.send_control('c').unwrap();
    let _ = expect(s, "cancelled", Duration::from_secs(5), what);
    let _ = expect(
        s,
        "sqlora> ",
        Duration::from_secs(5),
        "the prompt after Ctrl-C",
    );
    let took = pressed.elapsed();
    eprintln!("{what}: prompt back {:.2} s after it", took.as_secs_f64());
    assert!(took < Duration::from_secs(1), "{what} took {took:?}");
}

fn expect(s: &mut PtySession, needle: &str, within: Duration, what: &str) -> String {
    let deadline = Instant::now() + within;
    let mut seen = String::new();
    loop {
        match s.try_read() {
            Some(c) => {
                seen.push(c);
                if seen.ends_with(needle) {
                    seen.truncate(seen.len() - needle.len());
                    return seen;
                }
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
        if Instant::now() >= deadline {
            let tail: String = {
                let chars: Vec<char> = seen.chars().collect();
                chars[chars.len().saturating_sub(2000)..].iter().collect()
            };
            panic!("{what}: no `{needle}` within {within:?}; the last output was:\n{tail}");
        }
    }
}

#[test]
fn a_huge_value_is_shortened_and_the_shell_goes_on() {
    let _serial = serial();
    let model = common::model_path();
    let (_db_dir, db) = common::demo_db();
    let data = tempfile::tempdir().unwrap();
    // A terminal has a size: give the pseudo-terminal one before the shell starts.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("stty cols 120 rows 40 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_sqlora"))
        .args(["shell", "--offline", "--model"])
        .arg(&model)
        .arg("--db")
        .arg(&db)
        .env("SQLORA_DATA_DIR", data.path())
        .env("TERM", "xterm")
        .env_remove("DATABASE_URL")
        .env_remove("SQLORA_MODEL")
        .env_remove("SQLORA_FEEDBACK_DB")
        .env_remove("NO_COLOR")
        // Results are printed, never paged: nothing here presses q.
        .env("SQLORA_PAGER", "");
    let options = Options::new()
        .timeout_ms(Some(10_000))
        .strip_ansi_escape_codes(true);
    let mut s = spawn_with_options(cmd, options).expect("start sqlora in a pseudo-terminal");

    // Loading the model and reading the schema into it takes a while on a small CPU.
    let started = Instant::now();
    expect(
        &mut s,
        "sqlora> ",
        Duration::from_secs(240),
        "the first prompt",
    );
    eprintln!(
        "first prompt after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // 100 MB of hex in one value: shortened, noted, and the prompt back in seconds.
    let sent = Instant::now();
    s.send_line("SELECT hex(randomblob(50000000)) AS big")
        .unwrap();
    let limit = Duration::from_secs(5);
    let table = expect(&mut s, "shortened for display", limit, "the big value");
    let _ = expect(
        &mut s,
        "sqlora> ",
        limit.saturating_sub(sent.elapsed()),
        "the prompt",
    );
    let took = sent.elapsed();
    eprintln!(
        "100 MB value: prompt back {:.2} s after sending",
        took.as_secs_f64()
    );
    assert!(took < limit, "{took:?}");
    // The cell shows its start and how much was left out: 100,000,000 hex digits, 1,000 shown.
    assert!(
        table.contains("(99,999,000 more characters)"),
        "no count of what was left out in:\n{table}"
    );
    assert!(table.contains("big") && table.contains("1 row"), "{table}");
    assert!(table.len() < 20_000, "{} characters printed", table.len());

    // Ctrl-C while a query runs cancels it and keeps the shell (the signal reaches sqlora's
    // handler, not the line editor's).
    s.send_line(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000000000) \
         SELECT count(*) FROM n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    ctrl_c_back_within_a_second(&mut s, "Ctrl-C in a query");

    // An ordinary question, answered by the real model.
    let customers: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM customers", [], |r| r.get(0))
        .unwrap();
    s.send_line("How many customers are there?").unwrap();
    let answer = expect(&mut s, "1 row", Duration::from_secs(120), "the answer");
    assert!(!answer.contains("error:"), "{answer}");
    assert!(answer.to_uppercase().contains("COUNT"), "{answer}");
    assert!(
        answer
            .split(|c: char| !c.is_ascii_digit())
            .any(|w| w == customers.to_string()),
        "{customers} not in:\n{answer}"
    );
    let _ = expect(
        &mut s,
        "sqlora> ",
        Duration::from_secs(10),
        "the prompt after the answer",
    );

    // Ctrl-C at the prompt keeps the shell: it still runs SQL afterwards.
    s.send_control('c').unwrap();
    let _ = expect(
        &mut s,
        "sqlora> ",
        Duration::from_secs(10),
        "the prompt after Ctrl-C",
    );
    s.send_line("\\sql SELECT 40 + 2 AS answer").unwrap();
    let out = expect(&mut s, "1 row", Duration::from_secs(10), "SQL after Ctrl-C");
    assert!(out.contains("42"), "{out}");
    let _ = expect(&mut s, "sqlora> ", Duration::from_secs(10), "the prompt");

    // Ctrl-D at an empty prompt leaves the shell cleanly.
    s.send_control('d').unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match s.process().status() {
            Some(WaitStatus::StillAlive) | None if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => break other,
        }
    };
    assert!(
        matches!(status, Some(WaitStatus::Exited(_, 0))),
        "after Ctrl-D: {status:?}"
    );
}

/// `sqlora shell` on `db` in a 120×40 pseudo-terminal, waited for until its first prompt.
fn conversation_shell(db: &std::path::Path, data: &std::path::Path) -> PtySession {
    let (s, start) = start_shell(model_shell(db, data));
    // The start-up spinner said what it waited for (stderr is the terminal here).
    assert!(
        start.contains("reading the schema into the model ("),
        "no schema spinner in:\n{start}"
    );
    s
}

/// `sqlora shell` with the real model on `db`, its data in `data`, at a 120×40 terminal.
fn model_shell(db: &std::path::Path, data: &std::path::Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("stty cols 120 rows 40 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_sqlora"))
        .args(["shell", "--offline", "--model"])
        .arg(common::model_path())
        .arg("--db")
        .arg(db)
        .env("SQLORA_DATA_DIR", data)
        .env("TERM", "xterm")
        .env_remove("DATABASE_URL")
        .env_remove("SQLORA_MODEL")
        .env_remove("SQLORA_FEEDBACK_DB")
        .env_remove("NO_COLOR")
        // Results are printed, never paged: nothing here presses q.
        .env("SQLORA_PAGER", "");
    cmd
}

/// Starts `cmd` in a pseudo-terminal and waits for the first prompt; returns what came before.
fn start_shell(cmd: Command) -> (PtySession, String) {
    let options = Options::new()
        .timeout_ms(Some(10_000))
        .strip_ansi_escape_codes(true);
    let mut s = spawn_with_options(cmd, options).expect("start sqlora in a pseudo-terminal");
    let start = expect(
        &mut s,
        "sqlora> ",
        Duration::from_secs(240),
        "the first prompt",
    );
    (s, start)
}

/// The first line of `out` that holds SQL, from its `SELECT` on (the shell prints the
/// answer's SQL first; the spinner is cleared with a carriage return, not a new line).
fn sql_line(out: &str) -> String {
    out.lines()
        .find_map(|l| l.find("SELECT").map(|i| l[i..].trim().to_string()))
        .unwrap_or_else(|| panic!("no SQL in:\n{out}"))
}

#[test]
fn a_follow_up_builds_on_the_last_answer_and_explain_tells_what_it_does() {
    let _serial = serial();
    let (_db_dir, db) = common::demo_db();
    let data = tempfile::tempdir().unwrap();
    let mut s = conversation_shell(&db, data.path());

    // A question, then a follow-up that only makes sense with it.
    s.send_line("How many customers are there?").unwrap();
    let first = expect(&mut s, "1 row", Duration::from_secs(120), "the answer");
    assert!(
        first.contains("answering"),
        "no spinner while answering in:\n{first}"
    );
    let first = sql_line(&first);
    let _ = expect(&mut s, "sqlora> ", Duration::from_secs(10), "the prompt");
    s.send_line("and only those in Canada?").unwrap();
    let out = expect(&mut s, "1 row", Duration::from_secs(120), "the follow-up");
    assert!(
        out.contains("follow-up of \"How many customers are there?\""),
        "{out}"
    );
    let second = sql_line(&out);
    assert_ne!(first, second);
    assert!(second.contains("Canada"), "{second}");
    assert!(second.to_uppercase().contains("COUNT"), "{second}");
    let canadians: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM customers WHERE country = 'Canada'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        out.split(|c: char| !c.is_ascii_digit())
            .any(|w| w == canadians.to_string()),
        "{canadians} not in:\n{out}"
    );
    let _ = expect(&mut s, "sqlora> ", Duration::from_secs(10), "the prompt");

    // `\explain`: prose about the last SQL, no SQL run.
    // The line editor redraws the prompt with each key typed: the output starts after the
    // line ends.
    s.send_line("\\explain").unwrap();
    let _ = expect(&mut s, "\n", Duration::from_secs(10), "the command line");
    let prose = expect(&mut s, "sqlora> ", Duration::from_secs(60), "\\explain");
    assert!(!prose.contains("error"), "{prose}");
    assert!(
        prose
            .split_whitespace()
            .filter(|w| w.chars().all(char::is_alphabetic))
            .count()
            >= 8,
        "no sentences in:\n{prose}"
    );
    eprintln!("\\explain said:{prose}");

    // `\explain plan`: SQLite's query plan for it, through the guard.
    s.send_line("\\explain plan").unwrap();
    let _ = expect(&mut s, "\n", Duration::from_secs(10), "the command line");
    let plan = expect(
        &mut s,
        "sqlora> ",
        Duration::from_secs(10),
        "\\explain plan",
    );
    assert!(plan.contains("EXPLAIN QUERY PLAN SELECT"), "{plan}");
    assert!(plan.contains("detail") && plan.contains("SCAN"), "{plan}");

    // `\new`: the same words no longer follow anything.
    s.send_line("\\new").unwrap();
    let _ = expect(&mut s, "\n", Duration::from_secs(10), "the command line");
    let forgot = expect(&mut s, "sqlora> ", Duration::from_secs(10), "\\new");
    assert!(
        forgot.contains("new conversation (2 earlier questions forgotten)"),
        "{forgot}"
    );

    // Ctrl-C while the model answers stops it between tokens; the spinner goes, the shell stays.
    s.send_line("List every product with its supplier and category names")
        .unwrap();
    let _ = expect(&mut s, "answering", Duration::from_secs(10), "the spinner");
    std::thread::sleep(Duration::from_millis(800));
    ctrl_c_back_within_a_second(&mut s, "Ctrl-C while answering");
    s.send_control('d').unwrap();
}

/// `sqlora shell` on `db` for the input tests, `$VISUAL` set to `visual`, waited for until
/// its first prompt.
fn input_shell(
    db: &std::path::Path,
    data: &std::path::Path,
    visual: &std::path::Path,
) -> PtySession {
    let model = common::model_path();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("stty cols 120 rows 40 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_sqlora"))
        .args(["shell", "--offline", "--model"])
        .arg(&model)
        .arg("--db")
        .arg(db)
        .current_dir(data)
        .env("SQLORA_DATA_DIR", data)
        .env("TERM", "xterm")
        .env("VISUAL", visual)
        .env_remove("DATABASE_URL")
        .env_remove("SQLORA_MODEL")
        .env_remove("SQLORA_FEEDBACK_DB")
        .env_remove("NO_COLOR")
        // Results are printed, never paged: nothing here presses q.
        .env("SQLORA_PAGER", "");
    let options = Options::new()
        .timeout_ms(Some(10_000))
        .strip_ansi_escape_codes(true);
    let mut s = spawn_with_options(cmd, options).expect("start sqlora in a pseudo-terminal");
    let _ = expect(
        &mut s,
        "sqlora> ",
        Duration::from_secs(240),
        "the first prompt",
    );
    s
}

#[test]
fn psql_habits_multi_line_sql_and_questions_that_start_like_sql() {
    let _serial = serial();
    let (_db_dir, db) = common::demo_db();
    let data = tempfile::tempdir().unwrap();
    // An "editor" that writes a statement into the file it is given.
    let visual = data.path().join("visual.sh");
    std::fs::write(&visual, "#!/bin/sh\necho 'SELECT 5 * 5 AS sq' > \"$1\"\n").unwrap();
    std::fs::set_permissions(&visual, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut s = input_shell(&db, data.path(), &visual);
    // The line editor redraws the prompt (after a `\r`) as a line is typed; a fresh prompt
    // comes after a newline. Lines typed before it would be lost: wait for it each time.
    let prompt = |s: &mut PtySession, what: &str| {
        let mut seen = String::new();
        loop {
            seen.push_str(&expect(s, "sqlora> ", Duration::from_secs(10), what));
            if seen
                .rsplit('\n')
                .next()
                .is_some_and(|l| l.trim().is_empty())
            {
                return seen;
            }
            seen.push_str("sqlora> ");
        }
    };
    let upto = |s: &mut PtySession, needle: &str, what: &str| {
        let out = expect(s, needle, Duration::from_secs(10), what);
        let _ = prompt(s, what);
        out
    };

    // SQL over two lines runs once, at the `;`, after a continuation prompt.
    s.send_line("SELECT first_name, email").unwrap();
    let _ = expect(
        &mut s,
        "sqlora-> ",
        Duration::from_secs(10),
        "the continuation prompt",
    );
    s.send_line("FROM customers WHERE customer_id = 1;")
        .unwrap();
    let out = expect(
        &mut s,
        "1 row",
        Duration::from_secs(10),
        "the two-line statement",
    );
    assert!(out.contains("first_name") && out.contains('@'), "{out}");
    let _ = prompt(&mut s, "the prompt after the two-line statement");

    // An empty line discards a buffered statement.
    s.send_line("SELECT *").unwrap();
    let _ = expect(
        &mut s,
        "sqlora-> ",
        Duration::from_secs(10),
        "the continuation prompt",
    );
    s.send_line("").unwrap();
    let _ = expect(
        &mut s,
        "query buffer cleared",
        Duration::from_secs(10),
        "the discard",
    );
    let _ = prompt(&mut s, "the prompt after the discard");

    // SHOW TABLES and \d TABLE are the shell's own listings, not refused SQL.
    s.send_line("SHOW TABLES").unwrap();
    let out = upto(&mut s, " rows", "SHOW TABLES");
    assert!(!out.contains("refused") && !out.contains("error"), "{out}");
    assert!(out.contains("customers") && out.contains("orders"), "{out}");
    s.send_line("\\d customers").unwrap();
    let out = upto(&mut s, " rows", "\\d customers");
    for w in ["customer_id", "signup_date", "PK", "TEXT", "nullable"] {
        assert!(out.contains(w), "no {w} in:\n{out}");
    }

    // Ctrl-C at an empty prompt says how to quit, and does not.
    s.send_control('c').unwrap();
    let _ = expect(&mut s, "Ctrl-D", Duration::from_secs(10), "the Ctrl-C hint");
    let _ = prompt(&mut s, "the prompt after Ctrl-C");

    // \o FILE takes the results; \o brings them back.
    let file = data.path().join("out.txt");
    s.send_line(&format!("\\o {}", file.display())).unwrap();
    let _ = upto(&mut s, "results go to", "\\o FILE");
    s.send_line("SELECT 6 * 7 AS answer;").unwrap();
    let out = prompt(&mut s, "SQL into the file");
    assert!(!out.contains("42"), "{out}");
    s.send_line("\\o").unwrap();
    let _ = upto(&mut s, "results go to stdout", "\\o");
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(
        written.contains("42") && written.contains("1 row"),
        "{written}"
    );

    // \i FILE runs each statement in turn; a failure is one line and the rest still runs.
    let script = data.path().join("script.sql");
    std::fs::write(
        &script,
        "-- two statements and a bad one\nSELECT 11 AS eleven;\nSELECT nope\n  FROM customers;\nSELECT 12\n  AS twelve;\n",
    )
    .unwrap();
    s.send_line(&format!("\\i {}", script.display())).unwrap();
    let out = expect(&mut s, "twelve", Duration::from_secs(10), "\\i FILE");
    let out = out + &upto(&mut s, "1 row", "\\i FILE");
    assert!(out.contains("11") && out.contains("12"), "{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{out}");
    assert!(errors[0].contains("script.sql:3"), "{out}");

    // \e: what the editor saved runs.
    s.send_line("\\e").unwrap();
    let out = expect(&mut s, "1 row", Duration::from_secs(10), "\\e");
    assert!(out.contains("25"), "{out}");
    let _ = prompt(&mut s, "the prompt after \\e");

    // A question that starts with "Show" goes to the model: SQL shown, rows, not refused.
    s.send_line("Show me the 3 newest customers").unwrap();
    let out = expect(
        &mut s,
        "3 rows",
        Duration::from_secs(120),
        "the model's answer",
    );
    assert!(!out.contains("refused"), "{out}");
    assert!(out.to_uppercase().contains("SELECT"), "{out}");
    let _ = prompt(&mut s, "the prompt after the answer");

    // `exit` quits with status 0.
    s.send_line("exit").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match s.process().status() {
            Some(WaitStatus::StillAlive) | None if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => break other,
        }
    };
    assert!(
        matches!(status, Some(WaitStatus::Exited(_, 0))),
        "after exit: {status:?}"
    );
}

/// `sqlora shell` on a fresh demo database without a model (it starts in a moment: SQL still
/// runs), in a `cols`×`rows` pseudo-terminal that does not turn LF into CRLF, with `env`;
/// waited for until its first prompt. Escape codes are kept, to be looked for.
fn shell_without_model(
    cols: u16,
    rows: u16,
    env: &[(&str, &str)],
) -> (PtySession, tempfile::TempDir, tempfile::TempDir) {
    let (db_dir, db) = common::demo_db();
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "stty cols {cols} rows {rows} -onlcr && exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_sqlora"))
        .args(["shell", "--offline", "--model"])
        .arg(data.path().join("no-model.gguf"))
        .arg("--db")
        .arg(&db)
        .env("SQLORA_DATA_DIR", data.path())
        .env_remove("DATABASE_URL")
        .env_remove("SQLORA_MODEL")
        .env_remove("SQLORA_FEEDBACK_DB")
        .env_remove("SQLORA_PAGER")
        .env_remove("PAGER")
        .env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let options = Options::new()
        .timeout_ms(Some(10_000))
        .strip_ansi_escape_codes(false);
    let mut s = spawn_with_options(cmd, options).expect("start sqlora in a pseudo-terminal");
    let _ = expect(
        &mut s,
        "sqlora> ",
        Duration::from_secs(30),
        "the first prompt",
    );
    (s, db_dir, data)
}

/// Sends `line` and returns what the shell printed up to its next prompt.
fn run_line(s: &mut PtySession, line: &str) -> String {
    s.send_line(line).unwrap();
    expect(s, "sqlora> ", Duration::from_secs(10), line)
}

#[test]
fn records_null_display_csv_and_no_color_at_a_terminal() {
    let _serial = serial();
    // A dumb terminal: the line editor moves no cursor, so every escape byte would be sqlora's.
    let (mut s, _db, _data) = shell_without_model(
        80,
        40,
        &[("TERM", "dumb"), ("NO_COLOR", "1"), ("SQLORA_PAGER", "")],
    );
    let mut session = String::new();

    let out = run_line(&mut s, "\\x");
    assert!(out.contains("Expanded display is on."), "{out}");
    session += &out;
    let out = run_line(&mut s, "\\sql SELECT 1 AS a, 'two words' AS bee");
    assert!(out.contains("-[ RECORD 1 ]"), "{out}");
    assert!(out.contains("\na   | 1\nbee | two words\n1 row"), "{out}");
    session += &out;

    let out = run_line(&mut s, "\\x off");
    assert!(out.contains("Expanded display is off."), "{out}");
    session += &out;
    let out = run_line(&mut s, "\\pset null (null)");
    assert!(out.contains("Null display is \"(null)\"."), "{out}");
    session += &out;
    let out = run_line(&mut s, "\\sql SELECT NULL AS n, 'NULL' AS t");
    // The NULL shows as set; the text 'NULL' as itself, in its own column.
    let row = out
        .lines()
        .find(|l| l.contains("(null)"))
        .unwrap_or_else(|| panic!("no (null) in:\n{out}"));
    assert!(row.contains("NULL"), "{out}");
    session += &out;

    let out = run_line(&mut s, "\\format csv");
    session += &out;
    let out = run_line(
        &mut s,
        "\\sql SELECT 1 AS a, 'x' AS b UNION ALL SELECT 2, NULL",
    );
    let csv = &out[out
        .find("a,b")
        .unwrap_or_else(|| panic!("no CSV in:\n{out:?}"))..];
    assert!(csv.starts_with("a,b\n1,x\n2,\n"), "{csv:?}");
    assert!(!csv.contains('\r'), "CR in CSV: {csv:?}");
    session += &out;

    let out = run_line(&mut s, "\\format json");
    session += &out;
    let out = run_line(&mut s, "\\sql SELECT 1 AS count, 2 AS count");
    assert!(out.contains("{\"count\": 1, \"count_2\": 2}"), "{out}");
    session += &out;

    s.send_line("\\q").unwrap();
    session += &s.exp_eof().unwrap_or_default();
    assert!(
        !session.contains('\x1b'),
        "an escape byte under NO_COLOR:\n{session:?}"
    );
}

#[test]
fn long_output_goes_through_the_pager_until_it_is_off() {
    let _serial = serial();
    let rows = "\\sql WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
                WHERE i < 12) SELECT i FROM n";
    let (mut s, _db, _data) =
        shell_without_model(60, 10, &[("TERM", "dumb"), ("PAGER", "sed s/^/paged:/")]);
    // Short output is printed as it is.
    let out = run_line(&mut s, "\\sql SELECT 42 AS answer");
    assert!(out.contains("42") && !out.contains("paged:"), "{out}");
    // 12 rows in a 10-row terminal: through $PAGER, footer included.
    let out = run_line(&mut s, rows);
    // (Output is read byte by byte: only ASCII is compared.)
    let paged = |l: &str| l.starts_with("paged:") && l.contains(" 12 ");
    assert!(out.lines().any(paged), "{out}");
    let footer = |l: &str| l.starts_with("paged:") && l.contains("12 rows");
    assert!(out.lines().any(footer), "{out}");
    let out = run_line(&mut s, "\\pager off");
    assert!(out.contains("Pager usage is off."), "{out}");
    let out = run_line(&mut s, rows);
    assert!(out.contains("12 rows") && !out.contains("paged:"), "{out}");
    s.send_line("\\q").unwrap();
    let _ = s.exp_eof();
}

/// Tab completes a table name after FROM in a real terminal, and the completed SQL runs
/// (colored as typed: the escape codes are stripped here, the text must survive them).
#[test]
fn tab_completes_table_names() {
    let _serial = serial();
    let (_db_dir, db) = common::demo_db();
    let data = tempfile::tempdir().unwrap();
    // An empty config file: the user's own [defaults] stay out of the test.
    std::fs::write(data.path().join("config.toml"), "").unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("stty cols 120 rows 40 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_sqlora"))
        .arg(&db)
        // No model: questions are off, SQL and completion work.
        .args(["--model", "/nonexistent/m.gguf"])
        .env("SQLORA_DATA_DIR", data.path())
        .env("SQLORA_CONFIG", data.path().join("config.toml"))
        .env("TERM", "xterm")
        .env_remove("DATABASE_URL")
        .env_remove("NO_COLOR")
        .env("SQLORA_PAGER", "");
    let options = Options::new()
        .timeout_ms(Some(10_000))
        .strip_ansi_escape_codes(true);
    let mut s = spawn_with_options(cmd, options).expect("start sqlora in a pseudo-terminal");
    expect(
        &mut s,
        "sqlora> ",
        Duration::from_secs(30),
        "the first prompt",
    );
    s.send("SELECT count(*) AS n FROM categ").unwrap();
    s.send("\t").unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.send_line(" WHERE 1 = 1").unwrap();
    let out = expect(
        &mut s,
        "1 row",
        Duration::from_secs(10),
        "the completed query",
    );
    assert!(!out.contains("error"), "{out}");
    let _ = expect(&mut s, "sqlora> ", Duration::from_secs(10), "the prompt");
    s.send_line("\\q").unwrap();
}

/// A database the model has not read: the prompt comes at once while the schema is read in the
/// background (no prefix state is on disk yet when it shows), and the first question, typed
/// straight away, waits for that read and is answered.
#[test]
fn the_schema_is_read_while_the_first_question_is_typed() {
    let _serial = serial();
    let (_db_dir, db) = common::demo_db();
    let data = tempfile::tempdir().unwrap();
    // A cache folder of its own, so that no earlier run's prefix state is found; the converted
    // weights are shared with the real cache when it has them (or converted here).
    let cache = tempfile::tempdir().unwrap();
    if let Ok(real) = sqlora::paths::cache_dir() {
        if real.join("weights").is_dir() {
            std::os::unix::fs::symlink(real.join("weights"), cache.path().join("weights")).unwrap();
        }
    }
    let kv = cache.path().join("kv");
    let mut cmd = model_shell(&db, data.path());
    cmd.env("SQLORA_CACHE_DIR", cache.path());
    let (mut s, start) = start_shell(cmd);
    let unread = std::fs::read_dir(&kv).map_or(0, |d| d.count());
    assert!(
        start.contains("reading the schema into the model (") && start.contains("while you type"),
        "{start}"
    );
    assert_eq!(
        unread, 0,
        "the schema was read before the prompt came:\n{start}"
    );
    s.send_line("How many customers are there?").unwrap();
    let out = expect(
        &mut s,
        "1 row",
        Duration::from_secs(120),
        "the first answer",
    );
    assert!(sql_line(&out).to_uppercase().contains("COUNT"), "{out}");
    assert!(!out.contains("sqlora: "), "an error on the way:\n{out}");
    let _ = expect(&mut s, "sqlora> ", Duration::from_secs(10), "the prompt");
    assert_eq!(
        std::fs::read_dir(&kv).map_or(0, |d| d.count()),
        1,
        "the schema read in the background was not kept for the next start"
    );
    s.send_control('d').unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(s.process().status(), Some(WaitStatus::StillAlive) | None) {
        assert!(
            Instant::now() < deadline,
            "the shell did not leave after Ctrl-D"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
