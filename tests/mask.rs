//! The schema mask as the decoding loop applies it, with the real model's tokenizer: the gold
//! SQL of the first 200 Spider dev questions, tokenized as the model would write it after the
//! answer's opening fence, is allowed token by token (teacher-forced through
//! `pipeline::SqlMask`, every gold token must pass), and a made-up column is refused. Prints
//! the mask's cost per token; asserts no timing.
//!
//! Needs the default model (for its tokenizer) and `../shared/data/spider`.

mod common;

use std::time::Instant;

use candle_core::quantized::gguf_file;
use sqlora::llm::prompt::ANSWER_START;
use sqlora::llm::{Constraint, TextTokenizer};
use sqlora::pipeline::SqlMask;
use sqlora::sql::Dialect;

fn tokenizer() -> TextTokenizer {
    let path = common::model_path();
    let mut f = std::fs::File::open(&path).unwrap();
    let ct = gguf_file::Content::read(&mut f).unwrap();
    TextTokenizer::from_gguf(&ct).unwrap()
}

/// The first token of `answer` (after the fence) the mask refuses, with the text before it.
fn refused(mask: &SqlMask, tok: &TextTokenizer, answer: &str) -> Option<(String, String)> {
    let ids = tok.encode(answer).unwrap();
    for k in 0..ids.len() {
        let text = format!("{ANSWER_START}{}", tok.decode(&ids[..k]).unwrap());
        if let Some(test) = mask.next(&text) {
            if !test(tok.token_bytes(ids[k])) {
                return Some((
                    text,
                    String::from_utf8_lossy(tok.token_bytes(ids[k])).into(),
                ));
            }
        }
    }
    None
}

#[test]
fn gold_tokens_pass_the_mask_and_made_up_names_do_not() {
    let data = common::shared_data().join("spider");
    let dev: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(data.join("derived/dev_without_wta_1.json")).unwrap(),
    )
    .unwrap();
    let tok = tokenizer();
    let mut schemas = std::collections::HashMap::new();
    let (mut tokens, mut spent, mut caught) = (0usize, 0f64, 0usize);
    for (i, q) in dev.iter().take(200).enumerate() {
        let db = q["db_id"].as_str().unwrap();
        let gold = q["query"].as_str().unwrap();
        let schema = schemas.entry(db.to_string()).or_insert_with(|| {
            let path = data.join("database").join(db).join(format!("{db}.sqlite"));
            sqlora::db::open(&path.to_string_lossy())
                .unwrap()
                .introspect()
                .unwrap()
        });
        let tables: Vec<&sqlora::schema::Table> = schema.tables.iter().collect();
        // Every rule on, the FROM rule of an answer's last round included.
        let mask = SqlMask::new(
            sqlora::guard::constrain::Names::new(&tables, Dialect::Sqlite).covering_from(),
        );
        let answer = format!("{gold}\n```");
        let t = Instant::now();
        let bad = refused(&mask, &tok, &answer);
        spent += t.elapsed().as_secs_f64();
        tokens += tok.encode(&answer).unwrap().len();
        assert!(
            bad.is_none(),
            "question {i} ({db}): gold `{gold}` refused at {bad:?}"
        );
        // The same query with its first column of the first table made up is refused.
        let col = &schema.tables[0].columns[0].name;
        let fake = format!("SELECT {col}zzq FROM {} \n```", schema.tables[0].name);
        caught += usize::from(refused(&mask, &tok, &fake).is_some());
    }
    assert_eq!(caught, 200, "a made-up column got through the mask");
    println!(
        "200 gold queries, {tokens} tokens: every token allowed; {:.3} ms per token (state and test)",
        spent * 1e3 / tokens as f64
    );
}

#[test]
fn token_bytes_spell_what_the_tokenizer_decodes() {
    let tok = tokenizer();
    let text = "SELECT T1.name, count(*) FROM \"Order Details\" AS T1 WHERE x = 'é中'\n```";
    let ids = tok.encode(text).unwrap();
    let bytes: Vec<u8> = ids
        .iter()
        .flat_map(|&i| tok.token_bytes(i).to_vec())
        .collect();
    assert_eq!(String::from_utf8(bytes).unwrap(), text);
}
