//! The real `sqlora shell` in a pseudo-terminal, as a user at a terminal has it: a 100 MB
//! value is shortened with a note and the next prompt comes within seconds, Ctrl-C cancels a
//! running query, an English question is answered by the real model, Ctrl-C at the prompt
//! keeps the shell and Ctrl-D leaves it with status 0.
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
        .env_remove("NO_COLOR");
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
    let pressed = Instant::now();
    s.send_control('c').unwrap();
    let _ = expect(
        &mut s,
        "cancelled",
        Duration::from_secs(5),
        "Ctrl-C in a query",
    );
    let _ = expect(
        &mut s,
        "sqlora> ",
        Duration::from_secs(5),
        "the prompt after Ctrl-C",
    );
    eprintln!(
        "Ctrl-C in a query: prompt back {:.2} s after it",
        pressed.elapsed().as_secs_f64()
    );

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
