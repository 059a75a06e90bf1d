//! Tests of the command line: what clap accepts and refuses, and the values it gives.
use super::*;
use clap::CommandFactory;

#[test]
fn cli_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn ask_takes_words_and_format() {
    let cli = Cli::try_parse_from(["sqlora", "ask", "--format", "json", "how", "many?"]).unwrap();
    match cli.command {
        Some(Command::Ask(a)) => {
            assert_eq!(a.question.join(" "), "how many?");
            assert_eq!(a.format, Format::Json);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn eval_needs_a_set_or_two_reports() {
    assert!(Cli::try_parse_from(["sqlora", "eval"]).is_err());
    assert!(Cli::try_parse_from(["sqlora", "eval", "--compare", "a.json"]).is_err());
    let cli = Cli::try_parse_from(["sqlora", "eval", "--compare", "a.json", "b.json"]).unwrap();
    assert!(
        matches!(cli.command, Some(Command::Eval(EvalArgs { compare: Some(ref v), .. })) if v.len() == 2)
    );
    let cli = Cli::try_parse_from([
        "sqlora",
        "eval",
        "--set",
        "spider-dev",
        "--limit",
        "20",
        "--offset",
        "5",
    ])
    .unwrap();
    match cli.command {
        Some(Command::Eval(a)) => {
            assert_eq!(
                (a.set.as_deref(), a.limit, a.offset),
                (Some("spider-dev"), Some(20), 5)
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn numeric_options_refuse_nonsense() {
    let parse = |args: &[&str]| Cli::try_parse_from([&["sqlora"], args].concat());
    // Each of these after `train --data d --out o`.
    let train: Vec<Vec<&str>> = [
        "--lr NaN",
        "--lr 0",
        "--lr inf",
        "--steps 0",
        "--batch 0",
        "--grad-accum 0",
        "--max-len 0",
        "--rank 0",
        "--rank 100000",
        "--alpha 0",
        "--alpha=-inf",
        "--dropout 1",
        "--dropout=-0.1",
        "--dropout NaN",
        "--epochs 0",
        "--epochs 1e300",
        "--eval-split 1",
        "--weight-decay=-1",
        "--clip NaN",
        "--limit 0",
    ]
    .iter()
    .map(|opt| {
        let mut args = vec!["train", "--data", "d", "--out", "o"];
        args.extend(opt.split_whitespace());
        args
    })
    .collect();
    for args in [
        &["ask", "--timeout", "1e20", "q"][..],
        &["ask", "--timeout", "NaN", "q"],
        &["ask", "--timeout", "inf", "q"],
        &["ask", "--timeout=-1", "q"],
        &["ask", "--timeout", "0", "q"],
        &["ask", "--max-rows", "0", "q"],
        &["ask", "--max-rows", "18446744073709551615", "q"],
        &["ask", "--max-rows=-3", "q"],
        &["ask", "--repairs", "1000000", "q"],
        &["ask", "--context-tokens", "0", "q"],
        &["shell", "--context-tokens", "99999999999"],
        &["eval", "--set", "s", "--limit", "0"],
        &["eval", "--set", "s", "--offset", "18446744073709551615"],
        &["eval", "--set", "s", "--batch", "0"],
        &["feedback", "list", "--limit", "0"],
        &["ask", "--examples", "17", "q"],
        &["feedback", "export", "--since", "notadate"],
        &["train", "--auto", "--eval-limit", "0"],
    ]
    .into_iter()
    .chain(train.iter().map(Vec::as_slice))
    {
        let e = parse(args).expect_err(&args.join(" "));
        assert!(e.to_string().contains("invalid value"), "{args:?}: {e}");
    }
    // The defaults, and sensible values, pass.
    for args in [
        &[
            "ask",
            "--timeout",
            "86400",
            "--max-rows",
            "10",
            "--repairs",
            "0",
            "q",
        ][..],
        &["ask", "--timeout", "0.5", "q"],
        &["train", "--data", "d", "--out", "o"],
        &[
            "train",
            "--data",
            "d",
            "--out",
            "o",
            "--lr",
            "1e-3",
            "--dropout",
            "0",
            "--clip",
            "0",
            "--eval-split",
            "0",
            "--steps",
            "5",
            "--rank",
            "8",
        ],
        &["feedback", "export", "--since", "2026-11-01"],
        &["eval", "--set", "s", "--limit", "3", "--offset", "0"],
        &[
            "eval",
            "--set",
            "t.jsonl",
            "--corrections",
            "p.jsonl",
            "--n",
            "0,5,20",
            "--examples",
            "2",
        ],
        &[
            "ask",
            "--examples",
            "0",
            "--feedback-db",
            "f.sqlite",
            "how many?",
        ],
        &["feedback", "remove", "3", "4"],
    ] {
        parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    }
    let e = RunOpts {
        max_rows: 10,
        timeout: 1e20,
        repairs: 0,
        context_tokens: 2048,
        constrain: true,
        candidates: None,
        temperature: 0.8,
        seed: 0,
        examples: 4,
    }
    .limits()
    .unwrap_err();
    assert!(e.contains("at most 86400"), "{e}");
}

/// Parses and resolves `args`, with `files` the paths that exist.
fn resolve(args: &[&str], files: &[&str]) -> Result<Command, String> {
    let cli = Cli::try_parse_from([&["sqlora"], args].concat()).map_err(|e| e.to_string())?;
    cli.resolve(|p| files.contains(&p))
}

#[test]
fn a_database_positional_opens_the_shell() {
    match resolve(&["chinook.sqlite"], &["chinook.sqlite"]).unwrap() {
        Command::Shell(s) => assert_eq!(s.common.db.db.as_deref(), Some("chinook.sqlite")),
        other => panic!("{other:?}"),
    }
    match resolve(&["--format", "csv", "postgres://u@h/db"], &[]).unwrap() {
        Command::Shell(s) => {
            assert_eq!(s.common.db.db.as_deref(), Some("postgres://u@h/db"));
            assert_eq!(s.format, Format::Csv);
        }
        other => panic!("{other:?}"),
    }
    // Nothing at all: the shell on --db or the default.
    assert!(matches!(resolve(&[], &[]).unwrap(), Command::Shell(s) if s.common.db.db.is_none()));
    // A missing file that reads as one is a typo, not a question.
    let e = resolve(&["chinok.sqlite"], &[]).unwrap_err();
    assert!(e.contains("no database file `chinok.sqlite`"), "{e}");
    assert!(resolve(&["./data/x"], &[]).is_err());
}

#[test]
fn other_words_are_a_question() {
    match resolve(&["How many customers?"], &[]).unwrap() {
        Command::Ask(a) => {
            assert_eq!(a.question, ["How many customers?"]);
            assert!(a.common.db.db.is_none());
        }
        other => panic!("{other:?}"),
    }
    match resolve(&["--format", "json", "how", "many", "albums"], &[]).unwrap() {
        Command::Ask(a) => {
            assert_eq!(a.question.join(" "), "how many albums");
            assert_eq!(a.format, Format::Json);
        }
        other => panic!("{other:?}"),
    }
    // A database first, then the question.
    match resolve(&["demo.db", "how many?"], &["demo.db"]).unwrap() {
        Command::Ask(a) => {
            assert_eq!(a.common.db.db.as_deref(), Some("demo.db"));
            assert_eq!(a.question, ["how many?"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn subcommand_names_win_over_the_positional() {
    assert!(matches!(
        resolve(&["model", "list"], &[]).unwrap(),
        Command::Model(ModelCommand::List)
    ));
    assert!(matches!(
        resolve(&["config", "path"], &[]).unwrap(),
        Command::Config(ConfigCommand::Path)
    ));
    assert!(matches!(
        resolve(&["completions", "zsh"], &[]).unwrap(),
        Command::Completions {
            shell: clap_complete::Shell::Zsh
        }
    ));
    match resolve(&["ask", "--db", "x.sqlite", "how", "many"], &["x.sqlite"]).unwrap() {
        Command::Ask(a) => assert_eq!(a.common.db.db.as_deref(), Some("x.sqlite")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        resolve(&["shell"], &[]).unwrap(),
        Command::Shell(_)
    ));
    // Shell options and a subcommand do not mix (nor make a question of its name).
    let e = resolve(&["--format", "csv", "ask", "q"], &[]).unwrap_err();
    assert!(e.contains("`ask` is a command"), "{e}");
    assert!(resolve(&["completions", "tcsh"], &[]).is_err());
}

#[test]
fn database_urls() {
    for u in [
        "postgres://a@b/c",
        "POSTGRESQL://x",
        "mysql://h/d",
        "mariadb://h/d",
        "sqlite:x.db",
    ] {
        assert!(is_database_url(u), "{u}");
    }
    for u in ["how many?", "x.sqlite", "http://x"] {
        assert!(!is_database_url(u), "{u}");
    }
}

#[test]
fn model_choice() {
    let m = |s: &str| {
        ModelOpts {
            model: Some(s.into()),
            offline: false,
            adapter: None,
            merge: false,
            device: crate::hub::device::DeviceChoice::Auto,
            backend: crate::llm::remote::BackendChoice::Local,
        }
        .choice()
    };
    assert!(matches!(m("smollm2-135m"), Ok(ModelChoice::Named(_))));
    assert!(
        matches!(m("./x.gguf"), Ok(ModelChoice::File(p)) if p == std::path::Path::new("./x.gguf"))
    );
    assert!(m("gpt4").unwrap_err().contains("unknown model"));
}

#[test]
fn levers_parse_and_refuse_bad_values() {
    let cli = Cli::try_parse_from([
        "sqlora",
        "ask",
        "--constrain",
        "off",
        "--candidates",
        "4",
        "q",
    ])
    .unwrap();
    let Some(Command::Ask(a)) = cli.command else {
        panic!("not ask")
    };
    let l = a.common.run.levers();
    assert!(!l.constrain);
    assert_eq!(l.candidates, 4);
    for bad in [
        &["sqlora", "ask", "--constrain", "maybe", "q"][..],
        &["sqlora", "ask", "--candidates", "0", "q"],
        &["sqlora", "ask", "--temperature", "0", "q"],
    ] {
        assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
    }
}
