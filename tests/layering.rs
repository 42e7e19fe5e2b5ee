//! The dependency rule (docs/ARCHITECTURE.md): modules depend one way.
//!
//! Parses every `crate::...`, `super::...` and child-module path in `src/`
//! (comments stripped), builds the module graph at two granularities and
//! fails on any import cycle, printing it with the lines that make it:
//!
//! - top-level modules (`src/node/**` is `node`, `src/image/**` is `image`);
//! - files, where a folder's `mod.rs` is its facade: the edges from it into
//!   its own children are the module tree (`mod x; pub use x::Y;`), not a
//!   dependency, and are not counted.
//!
//! Run it alone with `cargo test --test layering -- --nocapture`. No
//! privileges, no build of the crate needed beyond the test itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Cycles that still exist, as sorted member lists; the test fails when a
/// new one appears and when one listed here is gone (so the list shrinks
/// as they are broken).
///
/// At the start of issue 14: one module cycle (container, error, events,
/// metrics, network, node, runtime, sandbox: 24 edges) and five file
/// cycles (the seven files around node.rs, and four pairs). Now: none, and
/// it stays so.
const KNOWN_MODULE_CYCLES: &[&[&str]] = &[];
const KNOWN_FILE_CYCLES: &[&[&str]] = &[];

/// The layers a cycle check alone does not pin (docs/ARCHITECTURE.md):
/// which top-level modules each one must not import. `util` is the leaf
/// and imports nothing of the crate (checked apart).
const FORBIDDEN: &[(&str, &[&str])] = &[
    // Kernel plumbing both processes use: neither process's code.
    ("host", &DAEMON_AND_MONITOR),
    // The protocol and the daemon's client: never the monitor itself.
    ("monitor_api", &DAEMON_AND_MONITOR),
    // The monitor is forked from a template and outlives the daemon: it
    // links none of the daemon's state.
    ("monitor", &DAEMON),
    // Pure: facts in, decision or spec out.
    ("capabilities", &DAEMON_AND_MONITOR),
    ("spec", &DAEMON_AND_MONITOR),
    ("state", &DAEMON_AND_MONITOR),
];
const DAEMON: [&str; 12] = [
    "admin",
    "container",
    "cri",
    "error",
    "events",
    "image",
    "metrics",
    "network",
    "node",
    "pod",
    "server",
    "stream",
];
const DAEMON_AND_MONITOR: [&str; 14] = [
    "admin",
    "container",
    "cri",
    "error",
    "events",
    "image",
    "metrics",
    "monitor",
    "network",
    "node",
    "pod",
    "server",
    "stream",
    "monitor_api",
];

/// A module path from the crate root: `["runtime", "client"]`.
type ModPath = Vec<String>;

struct SourceFile {
    rel: String,
    module: ModPath,
    text: String,
}

fn collect(dir: &Path, root: &Path, out: &mut Vec<SourceFile>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            // src/bin/* are binaries: they use the library by its name.
            if p.file_name().unwrap() != "bin" || dir != root {
                collect(&p, root, out);
            }
            continue;
        }
        if p.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel == "main.rs" {
            continue;
        }
        let mut module: ModPath = rel
            .trim_end_matches(".rs")
            .split('/')
            .map(str::to_string)
            .collect();
        if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
            module.pop();
        }
        let text = strip_comments(&std::fs::read_to_string(&p).unwrap());
        out.push(SourceFile { rel, module, text });
    }
}

/// Removes `//` and `/* */` comments (doc links name modules they do not
/// depend on), keeping line breaks so line numbers stay right. String
/// literals are skipped over so a `//` inside one is not a comment.
fn strip_comments(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            // A plain string literal: copy it as blanks (raw strings in
            // this tree hold no quote that would end it early).
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                if i < b.len() && b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push(' ');
        } else {
            let ch = src[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Expands the path starting at `start` (`a::b::{c, d::e}`) into full
/// paths of segments.
fn parse_path(b: &[u8], mut i: usize) -> Vec<Vec<String>> {
    let mut segs = Vec::new();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'{' {
            // A group: split at top-level commas.
            let mut out = Vec::new();
            let mut depth = 0;
            let mut item_start = i + 1;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'{' => depth += 1,
                    b'}' | b',' if depth == 1 => {
                        for tail in parse_path(b, item_start) {
                            let mut p = segs.clone();
                            p.extend(tail);
                            out.push(p);
                        }
                        item_start = j + 1;
                        if b[j] == b'}' {
                            break;
                        }
                    }
                    b'}' => depth -= 1,
                    _ => {}
                }
                j += 1;
            }
            return out;
        }
        let s = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        if s == i {
            break;
        }
        segs.push(String::from_utf8_lossy(&b[s..i]).into_owned());
        if b.get(i) == Some(&b':') && b.get(i + 1) == Some(&b':') {
            i += 2;
        } else {
            break;
        }
    }
    vec![segs]
}

/// Every module path a file refers to, with the line it is on.
fn references(f: &SourceFile, modules: &BTreeSet<ModPath>) -> Vec<(ModPath, usize)> {
    let b = f.text.as_bytes();
    let mut out = Vec::new();
    let children: BTreeSet<&str> = modules
        .iter()
        .filter(|m| m.len() == f.module.len() + 1 && m.starts_with(&f.module))
        .map(|m| m.last().unwrap().as_str())
        .collect();
    let line_of = |i: usize| b[..i].iter().filter(|&&c| c == b'\n').count() + 1;
    let mut i = 0;
    while i < b.len() {
        let at_word = i == 0 || !(is_ident(b[i - 1]) || b[i - 1] == b':');
        if !at_word || !is_ident(b[i]) {
            i += 1;
            continue;
        }
        let s = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        let word = &f.text[s..i];
        let is_path_start = b.get(i) == Some(&b':') && b.get(i + 1) == Some(&b':');
        let base: Option<ModPath> = match word {
            "crate" if is_path_start => Some(Vec::new()),
            "super" if is_path_start => {
                let mut m = f.module.clone();
                m.pop();
                Some(m)
            }
            // `use child::X` / `child::f()` in a module with that child.
            w if is_path_start && children.contains(w) => Some(f.module.clone()),
            _ => None,
        };
        let Some(base) = base else { continue };
        let from = if word == "crate" || word == "super" {
            i + 2
        } else {
            s
        };
        for tail in parse_path(b, from) {
            let mut tail = tail.into_iter().skip_while(|t| t == "super");
            let mut full = base.clone();
            full.extend(&mut tail);
            // The deepest module the path names (the rest is an item).
            while !full.is_empty() && !modules.contains(&full) {
                full.pop();
            }
            out.push((full, line_of(s)));
        }
    }
    out
}

type Graph = BTreeMap<String, BTreeMap<String, (String, usize)>>;

/// Tarjan's strongly connected components with more than one member.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct St<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(st: &mut St<'a>, v: &'a str) {
        st.index.insert(v, st.next);
        st.low.insert(v, st.next);
        st.next += 1;
        st.stack.push(v);
        st.on.insert(v);
        if let Some(es) = st.g.get(v) {
            for w in es.keys() {
                let w = w.as_str();
                if !st.index.contains_key(w) {
                    visit(st, w);
                    let l = st.low[w].min(st.low[v]);
                    st.low.insert(v, l);
                } else if st.on.contains(w) {
                    let l = st.index[w].min(st.low[v]);
                    st.low.insert(v, l);
                }
            }
        }
        if st.low[v] == st.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = st.stack.pop().unwrap();
                st.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                st.out.push(comp);
            }
        }
    }
    let mut st = St {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !st.index.contains_key(v.as_str()) {
            visit(&mut st, v);
        }
    }
    st.out.sort();
    st.out
}

/// The edges inside one component, with where each comes from.
fn describe(g: &Graph, comp: &[String]) -> String {
    let mut s = format!("cycle among {}:\n", comp.join(", "));
    for a in comp {
        for (b, (file, line)) in &g[a] {
            if comp.contains(b) {
                s += &format!("  {a} -> {b}   ({file}:{line})\n");
            }
        }
    }
    s
}

fn graphs() -> (Graph, Graph) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    let modules: BTreeSet<ModPath> = files.iter().map(|f| f.module.clone()).collect();
    let file_of: BTreeMap<&ModPath, &str> =
        files.iter().map(|f| (&f.module, f.rel.as_str())).collect();
    let mut by_module = Graph::new();
    let mut by_file = Graph::new();
    for f in &files {
        by_file.entry(f.rel.clone()).or_default();
        if let Some(top) = f.module.first() {
            by_module.entry(top.clone()).or_default();
        }
        for (target, line) in references(f, &modules) {
            let evidence = (f.rel.clone(), line);
            if let (Some(a), Some(b)) = (f.module.first(), target.first())
                && a != b
            {
                by_module
                    .entry(a.clone())
                    .or_default()
                    .entry(b.clone())
                    .or_insert(evidence.clone());
            }
            // A facade's edges into its own subtree are the module tree.
            if target.starts_with(&f.module) || target.is_empty() {
                continue;
            }
            by_file
                .entry(f.rel.clone())
                .or_default()
                .entry(file_of[&target].to_string())
                .or_insert(evidence);
        }
    }
    (by_module, by_file)
}

fn check(name: &str, g: &Graph, known: &[&[&str]]) -> Vec<String> {
    let found = cycles(g);
    let known: Vec<Vec<String>> = known
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .collect();
    let mut errors = Vec::new();
    println!("{name}: {} cycle(s)", found.len());
    for c in &found {
        println!("{}", describe(g, c));
        if !known.contains(c) {
            errors.push(format!("new {name} {}", describe(g, c)));
        }
    }
    for k in &known {
        if !found.contains(k) {
            errors.push(format!(
                "the {name} cycle {k:?} is gone: remove it from tests/layering.rs's known list"
            ));
        }
    }
    errors
}

#[test]
fn no_import_cycles() {
    let (by_module, by_file) = graphs();
    let mut errors = check("module", &by_module, KNOWN_MODULE_CYCLES);
    errors.extend(check("file", &by_file, KNOWN_FILE_CYCLES));
    assert!(
        errors.is_empty(),
        "import cycles (docs/ARCHITECTURE.md, the dependency rule):\n{}",
        errors.join("\n")
    );
}

#[test]
fn the_parser_sees_grouped_and_relative_paths() {
    let b = b"a::{b::C, d, e::{f, g::H}};";
    let paths = parse_path(b, 0);
    let flat: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(flat, ["a::b::C", "a::d", "a::e::f", "a::e::g::H"]);
    assert_eq!(
        strip_comments("x // crate::a\n/* crate::b */ y \"crate::c\""),
        "x \n y   "
    );
}

#[test]
fn layers_point_down() {
    let (by_module, _) = graphs();
    let mut errors = Vec::new();
    for (module, forbidden) in FORBIDDEN {
        for (target, (file, line)) in by_module.get(*module).into_iter().flatten() {
            if forbidden.contains(&target.as_str()) {
                errors.push(format!("{module} -> {target} ({file}:{line})"));
            }
        }
    }
    for (target, (file, line)) in by_module.get("util").into_iter().flatten() {
        errors.push(format!("util (the leaf) -> {target} ({file}:{line})"));
    }
    assert!(
        errors.is_empty(),
        "imports against the layers (docs/ARCHITECTURE.md):\n{}",
        errors.join("\n")
    );
}

/// The monitor is the only libcontainer caller (libcontainer clones from
/// its caller; in the multi-threaded daemon that can deadlock on a malloc
/// lock held by another thread).
#[test]
fn only_the_monitor_calls_libcontainer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    let callers: Vec<&str> = files
        .iter()
        .filter(|f| !f.rel.starts_with("monitor/") && f.text.contains("libcontainer::"))
        .map(|f| f.rel.as_str())
        .collect();
    assert!(
        callers.is_empty(),
        "libcontainer used outside src/monitor/: {callers:?}"
    );
}

/// Privileged tests have one gate, `tests/support/mod.rs` (root and
/// CAPCRI_PRIVILEGED_TESTS): no test file reads the variable or the euid
/// itself.
#[test]
fn privileged_tests_have_one_gate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut stack = vec![root.clone()];
    let mut own_gates = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|e| e.to_str()) != Some("rs")
                || p == root.join("support/mod.rs")
                || p == root.join("layering.rs")
            {
                continue;
            }
            let raw = std::fs::read_to_string(&p).unwrap();
            // String literals are blanked by strip_comments: the variable
            // is looked for in the raw text, as a call's argument.
            let reads_the_variable = [
                "var_os(\"CAPCRI_PRIVILEGED_TESTS\")",
                "var(\"CAPCRI_PRIVILEGED_TESTS\")",
            ]
            .iter()
            .any(|call| raw.contains(call));
            if reads_the_variable || strip_comments(&raw).contains("geteuid") {
                own_gates.push(p.strip_prefix(&root).unwrap().display().to_string());
            }
        }
    }
    own_gates.sort();
    assert!(
        own_gates.is_empty(),
        "gate privileged tests with tests/support (support::privileged), not by hand: {own_gates:?}"
    );
}
