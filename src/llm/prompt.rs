//! The one prompt builder: (question, schema context, dialect, few-shot examples) → chat text.
//!
//! Pure: no model, no database. Training (later) builds its examples with the same function,
//! so what the model is taught is exactly what it is asked. The schema context comes before the
//! question so that everything up to the question is a stable prefix whose KV state is cached.

use candle_core::quantized::gguf_file;

use crate::sql::Dialect;

/// The chat format a model was trained with, read from `tokenizer.chat_template`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>role\n…<|im_end|>` (Qwen2.5, SmolLM2).
    ChatMl,
    /// `<|start_header_id|>role<|end_header_id|>\n\n…<|eot_id|>` (Llama 3).
    Llama3,
    /// No chat markup: the instruction text alone.
    Plain,
}

impl ChatTemplate {
    pub fn from_gguf(ct: &gguf_file::Content) -> Self {
        let tpl = ct
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_default();
        Self::from_template_text(&tpl)
    }

    pub fn from_template_text(tpl: &str) -> Self {
        if tpl.contains("<|im_start|>") {
            ChatTemplate::ChatMl
        } else if tpl.contains("<|start_header_id|>") {
            ChatTemplate::Llama3
        } else {
            ChatTemplate::Plain
        }
    }

    fn turn(self, role: &str, text: &str) -> String {
        match self {
            ChatTemplate::ChatMl => format!("<|im_start|>{role}\n{text}<|im_end|>\n"),
            ChatTemplate::Llama3 => {
                format!("<|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|>")
            }
            ChatTemplate::Plain => format!("{text}\n\n"),
        }
    }

    fn open(self, role: &str) -> String {
        match self {
            ChatTemplate::ChatMl => format!("<|im_start|>{role}\n"),
            ChatTemplate::Llama3 => format!("<|start_header_id|>{role}<|end_header_id|>\n\n"),
            ChatTemplate::Plain => String::new(),
        }
    }

    fn close(self) -> &'static str {
        match self {
            ChatTemplate::ChatMl => "<|im_end|>\n",
            ChatTemplate::Llama3 => "<|eot_id|>",
            ChatTemplate::Plain => "\n",
        }
    }

    /// Text that ends the assistant's answer (appended to training targets).
    pub fn end_of_answer(self) -> &'static str {
        match self {
            ChatTemplate::ChatMl => "<|im_end|>",
            ChatTemplate::Llama3 => "<|eot_id|>",
            ChatTemplate::Plain => "",
        }
    }
}

/// A question and its known-good SQL, shown to the model before the real question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub question: String,
    pub sql: String,
}

/// A prompt split where the per-question text starts. `prefix + suffix` is the full prompt;
/// the suffix ends with [`ANSWER_START`], the opening of the answer's SQL code block, so the
/// model starts straight at the SQL (three fewer tokens to generate one at a time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub prefix: String,
    pub suffix: String,
}

/// How every answer starts: the model is given this and continues with the SQL.
pub const ANSWER_START: &str = "```sql\n";

impl Prompt {
    pub fn text(&self) -> String {
        format!("{}{}", self.prefix, self.suffix)
    }

    /// The part of the answer the prompt already holds (the model's output continues it).
    pub fn answer_start(&self) -> &'static str {
        if self.suffix.ends_with(ANSWER_START) {
            ANSWER_START
        } else {
            ""
        }
    }
}

const SYSTEM: &str = "You are an expert data analyst who writes correct, efficient SQL.";

/// What the model needs to know about each dialect to write runnable SQL.
pub fn dialect_notes(dialect: Dialect) -> &'static str {
    // Placeholders are written `<…>`: copied into an answer as they stand, they fail to parse
    // rather than pass for a column named `col` or `n`.
    match dialect {
        Dialect::Sqlite => {
            "SQLite: dates are TEXT 'YYYY-MM-DD'; use strftime('%Y', <date column>) for the year, \
             strftime('%Y-%m', <date column>) for the month, date('now'); use LIMIT <count>; \
             quote identifiers with double quotes only when needed."
        }
        Dialect::Postgres => {
            "PostgreSQL: use EXTRACT(YEAR FROM <date column>), date_trunc('month', <date column>), \
             CURRENT_DATE, ILIKE for case-insensitive matches, LIMIT <count>; quote identifiers \
             with double quotes only when needed."
        }
        Dialect::MySql => {
            "MySQL/MariaDB: use YEAR(<date column>), MONTH(<date column>), \
             DATE_FORMAT(<date column>, '%Y-%m'), CURDATE(), LIMIT <count>; quote identifiers with \
             backticks only when needed."
        }
    }
}

/// Builds the prompt for `question` over `context` (CREATE TABLE text) in `dialect`.
///
/// `examples` (confirmed pairs of this database, best last) come as earlier exchanges after the
/// schema: each one's question in the same "### Input:" form and its SQL as the assistant's
/// answer, then a new user turn for the real question. They are all in the suffix, so the
/// prefix, and the KV cache of it, is the same whatever examples a question gets.
pub fn build_prompt(
    template: ChatTemplate,
    question: &str,
    context: &str,
    dialect: Dialect,
    examples: &[Example],
) -> Prompt {
    let mut user = String::new();
    user.push_str("### Instruction:\n");
    user.push_str(&format!(
        "Write one {} query that answers the question in Input, using only the tables and \
         columns in Context. Select only the columns the question asks for. \
         Answer with the SQL query only.\n{}\n\n",
        dialect.name(),
        dialect_notes(dialect)
    ));
    user.push_str("### Context:\n");
    user.push_str(context.trim_end());
    user.push_str("\n\n");
    // Everything before the question's own words is the cached prefix.
    user.push_str("### Input:\n");
    let mut prefix = template.turn("system", SYSTEM);
    prefix.push_str(&template.open("user"));
    prefix.push_str(&user);
    let mut suffix = String::new();
    for ex in examples {
        suffix.push_str(ex.question.trim());
        suffix.push_str("\n\n### Response:\n");
        suffix.push_str(template.close());
        suffix.push_str(&template.open("assistant"));
        suffix.push_str(ANSWER_START);
        suffix.push_str(ex.sql.trim().trim_end_matches(';').trim_end());
        suffix.push_str("\n```");
        suffix.push_str(template.close());
        suffix.push_str(&template.open("user"));
        suffix.push_str("### Input:\n");
    }
    suffix.push_str(question.trim());
    suffix.push_str("\n\n### Response:\n");
    suffix.push_str(template.close());
    suffix.push_str(&template.open("assistant"));
    suffix.push_str(ANSWER_START);
    Prompt { prefix, suffix }
}

/// Extends `base` with the model's failed answer and the error it caused, asking for a fix.
/// The prefix is unchanged, so its cached KV state is reused.
pub fn build_repair_prompt(
    template: ChatTemplate,
    base: &Prompt,
    failed_sql: &str,
    error: &str,
    dialect: Dialect,
) -> Prompt {
    let mut suffix = base.suffix.clone();
    suffix.push_str(&format!("{}\n```", failed_sql.trim()));
    suffix.push_str(template.close());
    suffix.push_str(&template.open("user"));
    suffix.push_str(&format!(
        "That query failed: {}\nWrite a corrected {} query for the same question, using only the \
         tables and columns in Context. Answer with the SQL query only.",
        error.trim(),
        dialect.name()
    ));
    suffix.push_str(template.close());
    suffix.push_str(&template.open("assistant"));
    suffix.push_str(ANSWER_START);
    Prompt {
        prefix: base.prefix.clone(),
        suffix,
    }
}

/// An earlier question of the same conversation and the SQL that answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub question: String,
    pub sql: String,
}

/// Builds the prompt for a follow-up `question` asked after `previous` (oldest first): the
/// first earlier question is asked as in [`build_prompt`] and answered with its SQL, each later
/// one and then `question` come as follow-up turns. The prefix is [`build_prompt`]'s, so the
/// cached schema prefix still serves; with no previous turn this is [`build_prompt`] exactly.
pub fn build_followup_prompt(
    template: ChatTemplate,
    question: &str,
    context: &str,
    dialect: Dialect,
    examples: &[Example],
    previous: &[Turn],
) -> Prompt {
    let Some((first, later)) = previous.split_first() else {
        return build_prompt(template, question, context, dialect, examples);
    };
    let mut p = build_prompt(template, &first.question, context, dialect, examples);
    let mut answered = first;
    for turn in later.iter().chain(std::iter::once(&Turn {
        question: question.to_string(),
        sql: String::new(),
    })) {
        p.suffix.push_str(answered.sql.trim());
        p.suffix.push_str("\n```");
        p.suffix.push_str(template.close());
        p.suffix.push_str(&template.open("user"));
        p.suffix.push_str(&format!(
            "Follow-up question: {}\nWrite one {} query that answers the follow-up question: \
             change the previous query as the follow-up asks, using only the tables and columns \
             in Context. Answer with the SQL query only.",
            turn.question.trim(),
            dialect.name()
        ));
        p.suffix.push_str(template.close());
        p.suffix.push_str(&template.open("assistant"));
        p.suffix.push_str(ANSWER_START);
        answered = turn;
    }
    p
}

/// Builds the prompt that asks the model to explain `sql` in plain sentences: after the same
/// cached schema prefix, the question it answered (when there is one, as it was asked) and the
/// SQL as the answer, then the request. The model's answer is prose, not a code block.
pub fn build_explain_prompt(
    template: ChatTemplate,
    question: Option<&str>,
    sql: &str,
    context: &str,
    dialect: Dialect,
) -> Prompt {
    const ASK: &str = "Explain in two or three plain sentences what this query does, for \
                       someone who does not read SQL. Do not write SQL.";
    match question.map(str::trim).filter(|q| !q.is_empty()) {
        Some(q) => {
            let mut p = build_prompt(template, q, context, dialect, &[]);
            p.suffix.push_str(sql.trim());
            p.suffix.push_str("\n```");
            p.suffix.push_str(template.close());
            p.suffix.push_str(&template.open("user"));
            p.suffix.push_str(ASK);
            p.suffix.push_str(template.close());
            p.suffix.push_str(&template.open("assistant"));
            p
        }
        None => {
            let mut p = build_prompt(template, "", context, dialect, &[]);
            p.suffix = format!(
                "{ASK}\n```sql\n{}\n```\n\n### Response:\n{}{}",
                sql.trim(),
                template.close(),
                template.open("assistant")
            );
            p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);";

    #[test]
    fn chatml_prompt_has_roles_in_order_and_ends_at_assistant() {
        let p = build_prompt(
            ChatTemplate::ChatMl,
            "How many t?",
            CTX,
            Dialect::Sqlite,
            &[],
        );
        let text = p.text();
        let sys = text.find("<|im_start|>system\n").unwrap();
        let user = text.find("<|im_start|>user\n").unwrap();
        let ctx = text.find(CTX).unwrap();
        let q = text.find("### Input:\nHow many t?").unwrap();
        assert!(sys < user && user < ctx && ctx < q);
        assert!(text.ends_with("### Response:\n<|im_end|>\n<|im_start|>assistant\n```sql\n"));
        assert!(
            p.prefix.ends_with("### Input:\n"),
            "the fixed label is cached"
        );
        assert!(p.suffix.starts_with("How many t?\n"));
        assert!(text.contains("SQLite"));
    }

    #[test]
    fn prefix_is_stable_across_questions() {
        let a = build_prompt(ChatTemplate::ChatMl, "q one", CTX, Dialect::Sqlite, &[]);
        let b = build_prompt(ChatTemplate::ChatMl, "another q", CTX, Dialect::Sqlite, &[]);
        assert_eq!(a.prefix, b.prefix);
        assert_ne!(a.suffix, b.suffix);
        assert!(!a.prefix.contains("q one"));
    }

    #[test]
    fn dialect_changes_the_prefix_and_examples_only_the_suffix() {
        let ex = [
            Example {
                question: "How many rows?".into(),
                sql: "SELECT COUNT(*) FROM t;".into(),
            },
            Example {
                question: "Names?".into(),
                sql: "SELECT name FROM t".into(),
            },
        ];
        let a = build_prompt(ChatTemplate::ChatMl, "q", CTX, Dialect::Sqlite, &ex);
        let plain = build_prompt(ChatTemplate::ChatMl, "q", CTX, Dialect::Sqlite, &[]);
        let b = build_prompt(ChatTemplate::ChatMl, "q", CTX, Dialect::Postgres, &[]);
        assert_eq!(
            a.prefix, plain.prefix,
            "examples never change the cached prefix"
        );
        assert_eq!(
            a.suffix,
            "How many rows?\n\n### Response:\n<|im_end|>\n<|im_start|>assistant\n```sql\n\
             SELECT COUNT(*) FROM t\n```<|im_end|>\n<|im_start|>user\n### Input:\n\
             Names?\n\n### Response:\n<|im_end|>\n<|im_start|>assistant\n```sql\n\
             SELECT name FROM t\n```<|im_end|>\n<|im_start|>user\n### Input:\n\
             q\n\n### Response:\n<|im_end|>\n<|im_start|>assistant\n```sql\n"
        );
        assert!(a.suffix.ends_with(&plain.suffix));
        assert!(b.prefix.contains("PostgreSQL"));
        assert!(!b.prefix.contains("SQLite"));
    }

    #[test]
    fn question_whitespace_is_trimmed() {
        let p = build_prompt(ChatTemplate::Plain, "  hi \n", CTX, Dialect::Sqlite, &[]);
        assert!(p.prefix.ends_with("### Input:\n"));
        assert!(p.suffix.starts_with("hi\n\n### Response:"));
    }

    #[test]
    fn repair_prompt_keeps_prefix_and_shows_sql_and_error() {
        let base = build_prompt(ChatTemplate::ChatMl, "q", CTX, Dialect::Sqlite, &[]);
        let r = build_repair_prompt(
            ChatTemplate::ChatMl,
            &base,
            "SELECT nme FROM t",
            "no such column: nme",
            Dialect::Sqlite,
        );
        assert_eq!(r.prefix, base.prefix);
        assert!(r.suffix.starts_with(&base.suffix));
        let tail = &r.suffix[base.suffix.len()..];
        // The base suffix already opened the code block the failed SQL was written in.
        assert!(r
            .suffix
            .contains("```sql\nSELECT nme FROM t\n```<|im_end|>\n<|im_start|>user\n"));
        assert!(tail.contains("no such column: nme"));
        assert!(tail.ends_with("<|im_start|>assistant\n```sql\n"));
    }

    #[test]
    fn template_detection() {
        assert_eq!(
            ChatTemplate::from_template_text("{% for m in messages %}<|im_start|>{{m.role}}"),
            ChatTemplate::ChatMl
        );
        assert_eq!(
            ChatTemplate::from_template_text("<|start_header_id|>"),
            ChatTemplate::Llama3
        );
        assert_eq!(ChatTemplate::from_template_text(""), ChatTemplate::Plain);
    }

    /// A placeholder the model copies must fail to parse, not pass for a column (`col`, `n`).
    #[test]
    fn dialect_notes_hold_no_placeholder_that_reads_as_a_name() {
        for d in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
            let notes = dialect_notes(d);
            for bare in ["col)", "col,", "(col", "LIMIT n", " x)", " d)"] {
                assert!(!notes.contains(bare), "{notes}");
            }
            assert!(notes.contains("<date column>") && notes.contains("LIMIT <count>"));
        }
    }

    /// The single-question prompt, byte for byte: `eval` and `ask` send this, and measured
    /// accuracy depends on it not moving.
    #[test]
    fn single_question_prompt_is_unchanged() {
        let p = build_prompt(
            ChatTemplate::ChatMl,
            "How many t?",
            CTX,
            Dialect::Sqlite,
            &[],
        );
        let expected = "<|im_start|>system\nYou are an expert data analyst who writes correct, \
            efficient SQL.<|im_end|>\n<|im_start|>user\n### Instruction:\nWrite one SQLite query \
            that answers the question in Input, using only the tables and columns in Context. \
            Select only the columns the question asks for. Answer with the SQL query only.\n\
            SQLite: dates are TEXT 'YYYY-MM-DD'; use strftime('%Y', <date column>) for the year, \
            strftime('%Y-%m', <date column>) for the month, date('now'); use LIMIT <count>; \
            quote identifiers with double quotes only when needed.\n\n### Context:\nCREATE TABLE t (id INTEGER \
            PRIMARY KEY, name TEXT);\n\n### Input:\nHow many t?\n\n### Response:\n<|im_end|>\n\
            <|im_start|>assistant\n```sql\n";
        assert_eq!(p.text(), expected);
        assert_eq!(
            build_followup_prompt(
                ChatTemplate::ChatMl,
                "How many t?",
                CTX,
                Dialect::Sqlite,
                &[],
                &[]
            ),
            p,
            "no previous turn: the very same prompt"
        );
    }

    #[test]
    fn followup_prompt_puts_the_previous_turn_after_the_schema_prefix() {
        let prev = [Turn {
            question: "List the names of t".into(),
            sql: "SELECT name FROM t".into(),
        }];
        let single = build_prompt(
            ChatTemplate::ChatMl,
            "and only id 3?",
            CTX,
            Dialect::Sqlite,
            &[],
        );
        let f = build_followup_prompt(
            ChatTemplate::ChatMl,
            "and only id 3?",
            CTX,
            Dialect::Sqlite,
            &[],
            &prev,
        );
        // The schema prefix is the one every question shares: its KV cache still serves.
        assert_eq!(f.prefix, single.prefix);
        assert!(!f.prefix.contains("List the names"));
        let s = &f.suffix;
        let q0 = s.find("List the names of t\n\n### Response:\n").unwrap();
        let sql0 = s
            .find("```sql\nSELECT name FROM t\n```<|im_end|>\n")
            .unwrap();
        let q1 = s.find("Follow-up question: and only id 3?\n").unwrap();
        assert!(q0 == 0 && q0 < sql0 && sql0 < q1);
        assert!(s.ends_with("<|im_end|>\n<|im_start|>assistant\n```sql\n"));
        assert_eq!(f.answer_start(), ANSWER_START);
        // A repair of a follow-up extends it and keeps the prefix.
        let r = build_repair_prompt(
            ChatTemplate::ChatMl,
            &f,
            "SELECT x",
            "no x",
            Dialect::Sqlite,
        );
        assert_eq!(r.prefix, f.prefix);
        assert!(r.suffix.starts_with(&f.suffix));
    }

    #[test]
    fn followup_chain_keeps_every_turn_in_order() {
        let prev = [
            Turn {
                question: "q one".into(),
                sql: "SELECT 1".into(),
            },
            Turn {
                question: "and q two".into(),
                sql: "SELECT 2".into(),
            },
        ];
        let f = build_followup_prompt(
            ChatTemplate::Plain,
            "q three",
            CTX,
            Dialect::Sqlite,
            &[],
            &prev,
        );
        let s = &f.suffix;
        let at = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle} in {s}"));
        assert!(at("q one") < at("SELECT 1"));
        assert!(at("SELECT 1") < at("Follow-up question: and q two"));
        assert!(at("Follow-up question: and q two") < at("SELECT 2"));
        assert!(at("SELECT 2") < at("Follow-up question: q three"));
        assert!(s.ends_with(ANSWER_START));
    }

    #[test]
    fn explain_prompt_shows_the_sql_and_asks_for_prose() {
        let base = build_prompt(ChatTemplate::ChatMl, "q", CTX, Dialect::Sqlite, &[]);
        for question in [Some("List the names of t"), None] {
            let p = build_explain_prompt(
                ChatTemplate::ChatMl,
                question,
                "SELECT name FROM t",
                CTX,
                Dialect::Sqlite,
            );
            assert_eq!(p.prefix, base.prefix, "the cached schema prefix serves");
            assert!(p.suffix.contains("```sql\nSELECT name FROM t\n```"));
            assert!(p.suffix.contains("plain sentences"));
            assert!(p.suffix.ends_with("<|im_start|>assistant\n"));
            assert_eq!(
                p.answer_start(),
                "",
                "the answer is prose, not a code block"
            );
            if let Some(q) = question {
                assert!(p.suffix.starts_with(q));
            }
        }
    }
}
