//! Backslash commands: one static table; `\help` and completion are generated from it.

use super::{Flow, Shell};

pub struct MetaCommand {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub args: &'static str,
    pub help: &'static str,
    pub run: fn(&mut Shell, &str) -> Flow,
}

pub const COMMANDS: &[MetaCommand] = &[
    MetaCommand {
        name: "help",
        aliases: &["?", "h"],
        args: "",
        help: "show this help",
        run: |sh, _| {
            sh.print_help();
            Flow::Continue
        },
    },
    MetaCommand {
        name: "q",
        aliases: &["quit", "exit"],
        args: "",
        help: "quit (Ctrl-D also quits)",
        run: |_, _| Flow::Quit,
    },
    MetaCommand {
        name: "tables",
        aliases: &["dt"],
        args: "",
        help: "list tables and views",
        run: |sh, _| {
            sh.print_tables();
            Flow::Continue
        },
    },
    MetaCommand {
        name: "d",
        aliases: &[],
        args: "[TABLE]",
        help: "list tables, or a table's columns, types, nullability and keys",
        run: |sh, arg| {
            sh.describe(arg);
            Flow::Continue
        },
    },
    MetaCommand {
        name: "e",
        aliases: &["edit"],
        args: "",
        help: "edit the last SQL or question in $VISUAL/$EDITOR, then run it",
        run: |sh, _| sh.edit_last(),
    },
    MetaCommand {
        name: "o",
        aliases: &["out"],
        args: "[FILE]",
        help: "send results to FILE; no FILE: back to stdout",
        run: |sh, arg| {
            sh.set_output(arg);
            Flow::Continue
        },
    },
    MetaCommand {
        name: "i",
        aliases: &["include"],
        args: "FILE",
        help: "run each statement and question of FILE in turn",
        run: |sh, arg| sh.include(arg),
    },
    MetaCommand {
        name: "schema",
        aliases: &[],
        args: "[TABLE]",
        help: "show the CREATE TABLE context the model sees (all tables, or one)",
        run: |sh, arg| {
            sh.print_schema(arg);
            Flow::Continue
        },
    },
    MetaCommand {
        name: "context",
        aliases: &[],
        args: "",
        help: "what the model was given for the last question: its tables, why each was chosen, \
               and the confirmed pairs shown as examples",
        run: |sh, _| {
            sh.print_context();
            Flow::Continue
        },
    },
    MetaCommand {
        name: "sql",
        aliases: &[],
        args: "SQL",
        help: "run your own SQL (through the same read-only guard)",
        run: |sh, arg| {
            sh.run_sql(arg);
            Flow::Continue
        },
    },
    MetaCommand {
        name: "timing",
        aliases: &[],
        args: "[on|off]",
        help: "show model and query timings after each answer",
        run: |sh, arg| {
            sh.toggle_timing(arg);
            Flow::Continue
        },
    },
    MetaCommand {
        name: "format",
        aliases: &[],
        args: "table|csv|json",
        help: "how results are printed",
        run: |sh, arg| {
            sh.set_format(arg);
            Flow::Continue
        },
    },
    MetaCommand {
        name: "x",
        aliases: &[],
        args: "[on|off|auto]",
        help: "expanded display: each row as a record (auto: when the table is too wide)",
        run: |sh, arg| {
            set_expanded(sh, arg);
            Flow::Continue
        },
    },
    MetaCommand {
        name: "pager",
        aliases: &[],
        args: "[on|off]",
        help: "page output taller or wider than the terminal ($SQLORA_PAGER, $PAGER, less -SRFX)",
        run: |sh, arg| {
            set_pager(sh, arg);
            Flow::Continue
        },
    },
    MetaCommand {
        name: "pset",
        aliases: &[],
        args: "null [TEXT]",
        help: "how NULL shows in tables (empty by default); also pset expanded|pager|format",
        run: |sh, arg| {
            pset(sh, arg);
            Flow::Continue
        },
    },
    MetaCommand {
        name: "ok",
        aliases: &[],
        args: "",
        help: "accept the last answer (it becomes a training pair)",
        run: |sh, _| {
            sh.accept();
            Flow::Continue
        },
    },
    MetaCommand {
        name: "fix",
        aliases: &[],
        args: "[SQL]",
        help: "correct the last answer: SQL given, or $EDITOR, or typed lines",
        run: |sh, arg| {
            sh.fix(arg);
            Flow::Continue
        },
    },
    MetaCommand {
        name: "bad",
        aliases: &[],
        args: "[NOTE]",
        help: "reject the last answer (never used for training)",
        run: |sh, arg| {
            sh.reject(arg);
            Flow::Continue
        },
    },
    MetaCommand {
        name: "history",
        aliases: &[],
        args: "[N]",
        help: "recent questions and their verdicts",
        run: |sh, arg| {
            sh.history(arg);
            Flow::Continue
        },
    },
    MetaCommand {
        name: "undo",
        aliases: &[],
        args: "",
        help: "revert the last verdict given in this session",
        run: |sh, _| {
            sh.undo();
            Flow::Continue
        },
    },
    MetaCommand {
        name: "adapter",
        aliases: &[],
        args: "[NAME|none]",
        help: "show or switch the LoRA adapter",
        run: |sh, arg| {
            sh.adapter(arg);
            Flow::Continue
        },
    },
    MetaCommand {
        name: "compare",
        aliases: &[],
        args: "QUESTION",
        help: "answer with the adapter and with the base model, side by side",
        run: |sh, arg| {
            sh.compare(arg);
            Flow::Continue
        },
    },
    MetaCommand {
        name: "new",
        aliases: &[],
        args: "",
        help: "start over: the next question is not a follow-up of earlier ones",
        run: |sh, _| {
            sh.new_conversation();
            Flow::Continue
        },
    },
    MetaCommand {
        name: "explain",
        aliases: &[],
        args: "[plan]",
        help: "the last SQL in plain words (no SQL runs), or the database's plan for it",
        run: |sh, arg| {
            sh.explain(arg);
            Flow::Continue
        },
    },
    MetaCommand {
        name: "refresh",
        aliases: &[],
        args: "",
        help: "re-read the database schema",
        run: |sh, _| {
            sh.refresh();
            Flow::Continue
        },
    },
];

/// `\x [on|off|auto]`, in psql's words; no argument toggles on and off.
fn set_expanded(sh: &mut Shell, arg: &str) {
    use super::render::Expanded;
    sh.look.expanded = match arg.trim() {
        "" if sh.look.expanded == Expanded::Off => Expanded::On,
        "" => Expanded::Off,
        arg => match arg.parse() {
            Ok(x) => x,
            Err(e) => return eprintln!("sqlora: {e}"),
        },
    };
    eprintln!(
        "Expanded display is {}.",
        match sh.look.expanded {
            Expanded::On => "on",
            Expanded::Off => "off",
            Expanded::Auto => "used automatically",
        }
    );
}

/// `\pager [on|off]`; no argument toggles. Says when the environment leaves no pager.
fn set_pager(sh: &mut Shell, arg: &str) {
    sh.pager = match arg.trim().to_ascii_lowercase().as_str() {
        "" => !sh.pager,
        "on" | "true" | "1" => true,
        "off" | "false" | "0" => false,
        other => return eprintln!("sqlora: unknown pager setting `{other}` (on, off)"),
    };
    match (sh.pager, super::pager::command()) {
        (false, _) => eprintln!("Pager usage is off."),
        (true, None) => {
            eprintln!("Pager is on, but SQLORA_PAGER or PAGER is set empty: output is not paged.")
        }
        (true, Some(cmd)) => eprintln!("Pager ({cmd}) is used for long or wide output."),
    }
}

/// The text of `\pset null '(null)'`: one pair of matching quotes around it is dropped.
fn unquote(s: &str) -> &str {
    let s = s.trim();
    for q in ['\'', '"'] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

/// `\pset null [TEXT]` (no TEXT: show it), and psql's `\pset expanded|x|pager|format`
/// spelled as sqlora's own commands; other options are one line saying so.
fn pset(sh: &mut Shell, arg: &str) {
    let (option, value) = split(arg);
    match option.to_ascii_lowercase().as_str() {
        "null" if value.is_empty() => eprintln!("Null display is \"{}\".", sh.look.null),
        "null" => {
            sh.look.null = unquote(value).to_string();
            eprintln!("Null display is \"{}\".", sh.look.null);
        }
        "expanded" | "x" => set_expanded(sh, value),
        "pager" => set_pager(sh, value),
        "format" => sh.set_format(value),
        "" => eprintln!("usage: \\pset null [TEXT] (also expanded, pager, format)"),
        other => {
            eprintln!("sqlora: \\pset {other} is not supported (null, expanded, pager, format are)")
        }
    }
}

/// Finds a command by name or alias (case-insensitive).
pub fn lookup(name: &str) -> Option<&'static MetaCommand> {
    COMMANDS.iter().find(|c| {
        c.name.eq_ignore_ascii_case(name) || c.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    })
}

/// Splits `\name rest` into the command and its argument text.
pub fn split(line: &str) -> (&str, &str) {
    let body = line.trim_start().trim_start_matches('\\');
    match body.find(char::is_whitespace) {
        Some(i) => (&body[..i], body[i..].trim()),
        None => (body.trim(), ""),
    }
}

/// The generated `\help` text.
pub fn help_text() -> String {
    let mut s = String::from("Type a question in plain English, or SQL, or one of:\n");
    for c in COMMANDS {
        let names = std::iter::once(c.name)
            .chain(c.aliases.iter().copied())
            .map(|n| format!("\\{n}"))
            .collect::<Vec<_>>()
            .join(" ");
        let usage = if c.args.is_empty() {
            names
        } else {
            format!("{names} {}", c.args)
        };
        s.push_str(&format!("  {usage:<28} {}\n", c.help));
    }
    s.push_str(
        "A question that starts with \"and\", \"only\", \"what about\"… or points back \
         (\"those\", \"them\") is a follow-up:\nit is asked with the earlier questions and \
         their SQL until \\new.\n",
    );
    s.push_str("Ctrl-C cancels a running answer or query; Ctrl-D quits.");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_table_lists_every_command() {
        let readme = include_str!("../../README.md");
        let table: Vec<&str> = readme
            .lines()
            .skip_while(|l| !l.starts_with("| command | what it does |"))
            .take_while(|l| l.starts_with('|'))
            .collect();
        assert!(!table.is_empty(), "README.md has no command table");
        for c in COMMANDS {
            assert!(
                table
                    .iter()
                    .any(|row| row.contains(&format!("`\\{}", c.name))),
                "README.md's command table does not list \\{}",
                c.name
            );
        }
    }

    #[test]
    fn lookup_and_split() {
        assert_eq!(lookup("Q").unwrap().name, "q");
        assert_eq!(lookup("quit").unwrap().name, "q");
        assert_eq!(lookup("?").unwrap().name, "help");
        assert!(lookup("nope").is_none());
        assert_eq!(split("\\sql SELECT 1 ;"), ("sql", "SELECT 1 ;"));
        assert_eq!(split("\\tables"), ("tables", ""));
        assert_eq!(split("\\schema  orders "), ("schema", "orders"));
    }

    #[test]
    fn pset_values_lose_one_pair_of_quotes() {
        assert_eq!(unquote("(null)"), "(null)");
        assert_eq!(unquote("'(null)'"), "(null)");
        assert_eq!(unquote("\"∅\""), "∅");
        assert_eq!(unquote("''"), "");
        assert_eq!(unquote("'a"), "'a");
    }

    #[test]
    fn help_lists_every_command_once() {
        let h = help_text();
        for c in COMMANDS {
            assert!(
                h.matches(&format!("\\{} ", c.name)).count()
                    + h.matches(&format!("\\{}\n", c.name)).count()
                    >= 1,
                "{}",
                c.name
            );
        }
        let mut names: Vec<&str> = COMMANDS
            .iter()
            .flat_map(|c| std::iter::once(c.name).chain(c.aliases.iter().copied()))
            .collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate command names");
    }
}
