//! The module map's promise, checked on the source: each top-level module of
//! `src/` uses only modules of its own layer or the layers below it, and no
//! top-level modules import each other in a cycle. The layers are the ones
//! CONTRIBUTING.md describes; a new module must be placed in one here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom.
const LAYERS: &[&[&str]] = &[
    &["daemon", "demo", "origin"],
    &["listeners", "listener", "command", "admin", "web", "health"],
    &["l4", "l7", "rules"],
    &["connect", "eject", "net"],
    &["runtime", "balancers"],
    &[
        "config", "server", "stats", "tls", "sessions", "table", "limits", "fdlimit", "shutdown",
    ],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its unit tests and comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules `text` names through `crate::` paths (also inside
/// `use crate::{a, b::c}` groups).
fn uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphanumeric() || c == '_') => {
                        found.insert(ident(&group[j..]).to_string());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest).to_string());
        }
    }
    found
}

/// Each top-level module and the other top-level modules it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let module = |p: &Path| {
        let first = p.strip_prefix(&root).unwrap().components().next().unwrap();
        let name = first.as_os_str().to_str().unwrap();
        name.strip_suffix(".rs").unwrap_or(name).to_string()
    };
    let all: BTreeSet<String> = files
        .iter()
        .map(|p| module(p))
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in &files {
        let m = module(p);
        if !all.contains(&m) {
            continue;
        }
        let used = uses(&code(&std::fs::read_to_string(p).unwrap()));
        let entry = g.entry(m.clone()).or_default();
        entry.extend(used.into_iter().filter(|u| *u != m && all.contains(u)));
    }
    g
}

#[test]
fn every_module_has_a_layer_and_uses_only_its_own_and_lower_ones() {
    let layer = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let mut wrong = Vec::new();
    for (m, used) in graph() {
        let Some(mine) = layer(&m) else {
            wrong.push(format!("{m} has no layer in tests/layers.rs"));
            continue;
        };
        for u in used {
            match layer(&u) {
                Some(theirs) if theirs >= mine => {}
                _ => wrong.push(format!("{m} (layer {}) uses {u}", mine + 1)),
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn no_top_level_modules_import_each_other_in_a_cycle() {
    let g = graph();
    // Depth-first search with colours: reaching a module still on the path
    // closes a cycle.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for u in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(u, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        let cycle = visit(m, &g, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap().join(" -> ")
        );
    }
}

#[test]
fn the_scanner_sees_paths_and_groups_but_not_comments_or_tests() {
    let text = "use crate::a::X;\nuse crate::{b, c::{D, E}, d::F};\n// crate::gone\nfn f() { crate::e::g(); }\n#[cfg(test)]\nmod tests { use crate::t; }\n";
    let got: Vec<String> = uses(&code(text)).into_iter().collect();
    assert_eq!(got, ["a", "b", "c", "d", "e"]);
}
