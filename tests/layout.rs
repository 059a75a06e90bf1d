//! The source tree keeps the shape the README's layout section describes: imports between the
//! top-level modules only run downward (app → cli → shell → eval → pipeline, feedback, train,
//! hub → db, guard, llm → schema → sql and the small utilities), no file imports another that
//! imports it back (through any chain), `lib.rs` stays a list of modules and one dispatch, no
//! source file grows past 900 lines, and every file opens with a paragraph on what it owns.
//!
//! Reads `src/` as text (no compiler involved): a `crate::…`, `super::…` or `self::…` path
//! outside a file's `#[cfg(test)] mod tests` is an import of the file that path names. A
//! module's own parents (`super::LlmError` in `llm/engine.rs`) are not counted: a module root
//! that holds its error type and re-exports its children is one unit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module's floor: a module may import only modules on a lower floor.
const FLOORS: &[(&str, u8)] = &[
    ("sql", 0),
    ("cancel", 0),
    ("clock", 0),
    ("paths", 0),
    ("schema", 1),
    ("db", 2),
    ("guard", 2),
    ("llm", 2),
    ("pipeline", 3),
    ("feedback", 3),
    ("train", 3),
    ("hub", 3),
    ("eval", 4),
    ("shell", 5),
    ("cli", 6),
    ("app", 7),
];

type Module = Vec<String>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/` with its module path (`["llm", "cuda", "decode"]`).
fn files() -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut all = Vec::new();
    walk(&src(), &mut all);
    // `main.rs` is the binary's crate: it reaches the library as `sqlora::`, never `crate::`.
    all.into_iter()
        .filter(|p| p != &src().join("main.rs"))
        .map(|p| {
            let rel = p.strip_prefix(src()).unwrap().with_extension("");
            let mut m: Module = rel
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                m.pop();
            }
            (m, p)
        })
        .collect()
}

/// The code of a file without its unit tests and comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths a file names, each resolved against `module` (`crate::a::b`, `super::x`, and each
/// item of a `{…}` group, nested groups included).
fn paths(code: &str, module: &Module) -> Vec<Module> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let boundary = i == 0 || !is_ident(b[i - 1] as char) && b[i - 1] != b':';
        let word_end = code[i..]
            .find(|c: char| !is_ident(c))
            .map_or(b.len(), |n| i + n);
        let word = &code[i..word_end];
        if !boundary
            || !matches!(word, "crate" | "super" | "self")
            || !code[word_end..].starts_with("::")
        {
            i = if word_end > i {
                word_end
            } else {
                i + code[i..].chars().next().map_or(1, char::len_utf8)
            };
            continue;
        }
        let base: Module = match word {
            "crate" => Vec::new(),
            _ => module.clone(),
        };
        let mut prefix = base;
        if word == "super" {
            prefix.pop();
        }
        i = read_path(code, word_end, prefix, &mut out);
    }
    out
}

/// Reads `::seg::seg…` or `::{…}` at `i` after `prefix`, pushing the paths; returns where it ended.
fn read_path(code: &str, mut i: usize, mut prefix: Module, out: &mut Vec<Module>) -> usize {
    while code[i..].starts_with("::") {
        i += 2;
        if code[i..].starts_with('{') {
            // A group: each comma-separated item at depth one is a path of its own.
            i += 1;
            loop {
                while code[i..].starts_with(|c: char| c.is_whitespace() || c == ',') {
                    i += 1;
                }
                if code[i..].starts_with('}') || i >= code.len() {
                    return i + 1;
                }
                let end = code[i..]
                    .find(|c: char| !is_ident(c))
                    .map_or(code.len(), |n| i + n);
                let mut item = prefix.clone();
                let seg = &code[i..end];
                if seg == "super" {
                    item.pop();
                } else if seg != "self" && !seg.is_empty() {
                    item.push(seg.to_string());
                }
                let next = if code[end..].starts_with("::") {
                    read_path(code, end, item, out)
                } else {
                    out.push(item);
                    end.max(i + 1)
                };
                // Skip `as name` and anything else up to the item's end.
                let rest = code[next..]
                    .find([',', '}'])
                    .map_or(code.len(), |n| next + n);
                i = rest;
            }
        }
        let end = code[i..]
            .find(|c: char| !is_ident(c))
            .map_or(code.len(), |n| i + n);
        let seg = &code[i..end];
        if seg.is_empty() {
            break;
        }
        if seg == "super" {
            prefix.pop();
        } else {
            prefix.push(seg.to_string());
        }
        i = end;
    }
    out.push(prefix);
    i
}

/// Which file a path lands in: the longest prefix that is a module with a file.
fn resolve<'a>(path: &Module, files: &'a BTreeMap<Module, PathBuf>) -> Option<&'a Module> {
    (0..=path.len())
        .rev()
        .find_map(|n| files.get_key_value(&path[..n].to_vec()).map(|(k, _)| k))
}

/// The file-to-file imports of `src/`, a module's own ancestors left out.
fn imports(files: &BTreeMap<Module, PathBuf>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, path) in files {
        let set = edges.entry(m.clone()).or_default();
        for p in paths(&code(path), m) {
            if let Some(to) = resolve(&p, files) {
                let ancestor = to.len() < m.len() && m[..to.len()] == to[..];
                if to != m && !ancestor {
                    set.insert(to.clone());
                }
            }
        }
    }
    edges
}

fn floor(m: &Module) -> Option<u8> {
    let top = m.first()?;
    FLOORS.iter().find(|(n, _)| n == top).map(|(_, f)| *f)
}

#[test]
fn top_level_modules_import_only_downward() {
    let files = files();
    let mut wrong = Vec::new();
    for (from, tos) in imports(&files) {
        let Some(f) = floor(&from) else {
            assert!(
                from.is_empty(),
                "src/{} is a top-level module without a floor in tests/layout.rs",
                from.join("/")
            );
            continue;
        };
        for to in tos {
            if to.first() == from.first() {
                continue;
            }
            let t = floor(&to).unwrap_or(u8::MAX);
            if t >= f {
                wrong.push(format!("{} imports {}", from.join("::"), to.join("::")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that run up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_file_imports_itself_through_a_chain() {
    let edges = imports(&files());
    // Depth-first search for a back edge; report the cycle it closes.
    fn visit(
        m: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for to in edges.get(m).into_iter().flatten() {
            match state.get(to).copied().unwrap_or(0) {
                0 => {
                    if let Some(c) = visit(to, edges, state, stack) {
                        return Some(c);
                    }
                }
                1 => {
                    let at = stack.iter().position(|s| s == to).unwrap();
                    return Some(stack[at..].to_vec());
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in edges.keys() {
        if state.get(m).copied().unwrap_or(0) == 0 {
            if let Some(cycle) = visit(m, &edges, &mut state, &mut Vec::new()) {
                let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
                panic!("import circle: {} → back to the first", names.join(" → "));
            }
        }
    }
}

#[test]
fn files_stay_small_and_say_what_they_own() {
    let files = files();
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    assert!(
        lib.lines().count() < 150,
        "lib.rs has {} lines",
        lib.lines().count()
    );
    for path in files.values().chain([&src().join("main.rs")]) {
        let text = std::fs::read_to_string(path).unwrap();
        let name = path.strip_prefix(src()).unwrap().display().to_string();
        assert!(
            text.lines().count() <= 900,
            "src/{name} has {} lines",
            text.lines().count()
        );
        assert!(
            text.trim_start().starts_with("//!"),
            "src/{name} does not open with a paragraph on what it owns"
        );
    }
}

#[test]
fn the_path_reader_sees_groups_and_parents() {
    let m: Module = vec!["llm".into(), "cuda".into(), "decode".into()];
    let got = paths(
        "use crate::llm::{cache::KvCache, lora::{adapter::Target, params}};\nuse super::layers as l;\nlet x = crate::sql::Value::Null;",
        &m,
    );
    let want: Vec<Module> = [
        vec!["llm", "cache", "KvCache"],
        vec!["llm", "lora", "adapter", "Target"],
        vec!["llm", "lora", "params"],
        vec!["llm", "cuda", "layers"],
        vec!["sql", "Value", "Null"],
    ]
    .iter()
    .map(|v| v.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(got, want);
}
