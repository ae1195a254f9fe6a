//! The workspace's shape, checked from its sources: which crate may depend on which, no import
//! cycles between modules, and no oversized source files.
//!
//! The import graph has one node per module file. `A → B` when code in `A` (outside its
//! `#[cfg(test)]` module) names an item of `B`: through `crate::…`, `super::…`, `self::…`, or a
//! child module's bare name. A module naming its own ancestors is not an edge (a child sees its
//! parent's items by Rust's scoping; the parent owns it), but a parent naming its children is, so
//! `auth/mod.rs → auth/api_keys.rs → files.rs → quotas.rs → auth/mod.rs` is a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The crates whose module graphs are checked, by source directory.
const CRATES: &[&str] = &["types/src", "platform/src", "domain/src", "api/src", "scheduler/src", "gpu-runner/src", "gpu-runner/fp4/src", "gpu-runner/c10d/src", "cli/src", "tests/src"];

/// Module path (`["auth", "api_keys"]`) → its file, for one crate; `src/bin` holds other crates' roots.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(src.to_path_buf(), Vec::<String>::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                if !(prefix.is_empty() && name == "bin") {
                    let mut child = prefix.clone();
                    child.push(name);
                    stack.push((path, child));
                }
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut module = prefix.clone();
                if !matches!(stem, "mod" | "lib" | "main") {
                    module.push(stem.to_string());
                } else if prefix.is_empty() && stem == "main" && src.join("lib.rs").exists() {
                    continue; // the binary beside a library is another crate
                }
                out.insert(module, path);
            }
        }
    }
    out
}

/// The source without comments and without the trailing `#[cfg(test)]` module.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") && lines.peek().is_some_and(|next| next.trim_start().starts_with("mod ")) {
            // `mod tests;` (a file of its own) is skipped; an inline `mod tests { … }` ends the module.
            if lines.next().is_some_and(|next| next.trim_end().ends_with('{')) {
                break;
            }
            continue;
        }
        let line = match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The `::`-separated identifiers starting at `text` (`a::b::{c, d::e}` gives `[a, b]` and then the
/// group's members as separate continuations).
fn paths_at(text: &str) -> Vec<Vec<String>> {
    let mut segments = Vec::new();
    let mut rest = text;
    loop {
        let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        segments.push(rest[..end].to_string());
        rest = &rest[end..];
        match rest.strip_prefix("::") {
            Some(after) => rest = after,
            None => return vec![segments],
        }
    }
    // A group: `{x::y, z}`, each member continuing the path so far.
    let Some(group) = rest.strip_prefix('{') else { return vec![segments] };
    let mut depth = 0;
    let mut members = Vec::new();
    let mut start = 0;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                members.push(&group[start..i]);
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                members.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for member in members {
        for tail in paths_at(member.trim()) {
            let mut full = segments.clone();
            full.extend(tail);
            out.push(full);
        }
    }
    if out.is_empty() {
        out.push(segments);
    }
    out
}

/// Every module path `source` names (absolute, from the crate root).
fn references(source: &[String], children: &BTreeSet<String>, text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("::") {
        // The identifier just before `::` starts the path; skip paths that continue an earlier one.
        let head_start = text[..at].rfind(|c: char| !is_ident(c)).map_or(0, |i| i + 1);
        if head_start >= at || text[..head_start].ends_with("::") {
            continue;
        }
        let head = &text[head_start..at];
        let base: Vec<String> = match head {
            "crate" => Vec::new(),
            "self" => source.to_vec(),
            "super" => {
                let mut base = source.to_vec();
                let mut rest = &text[head_start..];
                while let Some(after) = rest.strip_prefix("super::") {
                    base.pop();
                    rest = after;
                }
                for path in paths_at(rest) {
                    let mut full = base.clone();
                    full.extend(path);
                    out.push(full);
                }
                continue;
            }
            child if children.contains(child) => source.to_vec(),
            _ => continue,
        };
        let start = if matches!(head, "crate" | "self") { at + 2 } else { head_start };
        for path in paths_at(&text[start..]) {
            let mut full = base.clone();
            full.extend(path);
            out.push(full);
        }
    }
    out
}

fn children(modules: &BTreeMap<Vec<String>, PathBuf>, module: &[String]) -> BTreeSet<String> {
    modules.keys().filter(|m| m.len() == module.len() + 1 && m.starts_with(module)).map(|m| m.last().unwrap().clone()).collect()
}

/// What a module re-exports (`pub use queue::JobQueue;`): item name → the path it comes from.
fn reexports(module: &[String], children: &BTreeSet<String>, text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for statement in text.split(';') {
        // The statement runs from its `pub use` to the `;` (what precedes it ends another item).
        let Some(at) = ["pub use ", "pub(crate) use "].iter().filter_map(|k| statement.rfind(k).map(|i| i + k.len())).max() else { continue };
        let rest = statement[at..].trim();
        // A path naming a child directly (`pub use queue::JobQueue`) counts as that child's.
        let rest = if rest.split("::").next().is_some_and(|head| children.contains(head)) { format!("self::{rest}") } else { rest.to_string() };
        for path in references(module, children, &rest) {
            if let Some(name) = path.last() {
                out.insert(name.clone(), path);
            }
        }
    }
    out
}

/// The module a path names: its longest prefix that is a module, followed through re-exports of the
/// modules it passes (so `crate::JobQueue`, re-exported by lib.rs from `queue`, names `queue`).
fn resolve(modules: &BTreeMap<Vec<String>, PathBuf>, reexported: &BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>, path: &[String]) -> Option<Vec<String>> {
    let mut path = path.to_vec();
    for _ in 0..8 {
        let target = (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains_key(p))?;
        match path.get(target.len()).and_then(|item| reexported.get(&target)?.get(item)) {
            Some(origin) if *origin != path[..=target.len()] => {
                let mut next = origin.clone();
                next.extend_from_slice(&path[target.len() + 1..]);
                path = next;
            }
            _ => return Some(target),
        }
    }
    None
}

/// The crate's import graph: module file → module files it names (ancestors excluded).
fn graph(modules: &BTreeMap<Vec<String>, PathBuf>) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let sources: BTreeMap<_, _> = modules.iter().map(|(module, file)| (module.clone(), (code(file), children(modules, module)))).collect();
    let reexported: BTreeMap<_, _> = sources.iter().map(|(module, (text, children))| (module.clone(), reexports(module, children, text))).collect();
    let mut edges = BTreeMap::new();
    for (module, (text, children)) in &sources {
        let mut targets = BTreeSet::new();
        for path in references(module, children, text) {
            let Some(target) = resolve(modules, &reexported, &path) else { continue };
            if !module.starts_with(&target) {
                targets.insert(target);
            }
        }
        edges.insert(module.clone(), targets);
    }
    edges
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        found: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.edges[v] {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut state = State { edges, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on_stack: BTreeSet::new(), found: Vec::new() };
    for v in edges.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn name(module: &[String]) -> String {
    if module.is_empty() { "crate".into() } else { module.join("::") }
}

#[test]
fn no_module_import_cycles() {
    let mut found = Vec::new();
    for krate in CRATES {
        let modules = modules(&workspace().join(krate));
        for component in cycles(&graph(&modules)) {
            found.push(format!("{krate}: {}", component.iter().map(|m| name(m)).collect::<Vec<_>>().join(" ↔ ")));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

/// The checker itself sees a cycle through a parent module, a child's bare name and a re-export.
#[test]
fn the_cycle_check_finds_cycles() {
    let dir = tempfile_dir();
    let write = |path: &str, text: &str| {
        std::fs::create_dir_all(dir.join(path).parent().unwrap()).unwrap();
        std::fs::write(dir.join(path), text).unwrap();
    };
    write("lib.rs", "mod auth;\nmod files;\nmod quotas;\nmod leaf;\npub use quotas::Quota;\n");
    write("auth/mod.rs", "mod api_keys;\npub fn check() { api_keys::verify(); }\n");
    write("auth/api_keys.rs", "use crate::{files::{self, File}, leaf};\npub fn verify() { super::super::leaf::x(); }\n");
    write("files.rs", "pub fn f() { crate::Quota::new(); }\n// crate::leaf::ignored\n");
    write("quotas.rs", "use crate::auth::check;\npub struct Quota;\n#[cfg(test)]\nmod tests;\nfn g() {}\n#[cfg(test)]\nmod more {\n    use crate::files::f;\n}\n");
    write("leaf.rs", "pub fn x() {}\n");
    let edges = graph(&modules(&dir));
    let edge = |from: &str, to: &str| edges[&from.split("::").filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>()].contains(&to.split("::").filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>());
    assert!(edge("auth", "auth::api_keys") && edge("auth::api_keys", "files") && edge("auth::api_keys", "leaf"));
    assert!(edge("files", "quotas") && edge("quotas", "auth") && !edge("files", "leaf") && !edge("quotas", "files"));
    let found = cycles(&edges);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].len(), 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moetune-structure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The dependencies a crate's manifest names, without the optional ones (features a user opts into).
fn dependencies(manifest: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(workspace().join(manifest)).unwrap();
    let mut section = String::new();
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[dependencies]" {
            if let Some((name, spec)) = line.split_once('=') {
                if !spec.contains("optional = true") {
                    out.insert(name.trim().to_string());
                }
            }
        }
    }
    out
}

#[test]
fn crates_depend_only_downwards() {
    let api = dependencies("api/Cargo.toml");
    assert!(!api.contains("moetune-scheduler"), "the api must not depend on the scheduler daemon");
    assert!(api.contains("moetune-domain"));
    assert!(!dependencies("scheduler/Cargo.toml").contains("moetune-api"), "the scheduler must not depend on the api");
    let runner_manifest = std::fs::read_to_string(workspace().join("gpu-runner/Cargo.toml")).unwrap();
    assert!(
        runner_manifest.lines().any(|l| l.starts_with("moetune-domain") && l.contains("default-features = false")),
        "the runner takes the job domain without its Postgres half"
    );
    let runner = dependencies("gpu-runner/Cargo.toml");
    for forbidden in ["sqlx", "actix-web", "redis", "moetune-scheduler", "moetune-api"] {
        assert!(!runner.contains(forbidden), "the runner must not depend on {forbidden}: it uses the job domain's queue client");
    }
    assert!(runner.contains("moetune-domain"));
    let types = dependencies("types/Cargo.toml");
    let runtime = ["tokio", "sqlx", "redis", "actix-web", "aws-sdk-s3", "reqwest", "tch"];
    assert!(types.iter().all(|d| !runtime.contains(&d.as_str())), "the wire types carry no runtime: {types:?}");
    // Only the Postgres mapping of ids and statuses may be opted into.
    let optional: Vec<_> = std::fs::read_to_string(workspace().join("types/Cargo.toml")).unwrap().lines().filter(|l| l.contains("optional = true")).map(|l| l.split('=').next().unwrap().trim().to_string()).collect();
    assert_eq!(optional, ["sqlx"], "the wire types' optional dependencies");
    let domain = dependencies("domain/Cargo.toml");
    for forbidden in ["actix-web", "tch", "reqwest", "moetune-api", "moetune-scheduler"] {
        assert!(!domain.contains(forbidden), "the job domain must not depend on {forbidden}");
    }
}

#[test]
fn no_source_file_is_oversized() {
    let mut oversized = Vec::new();
    let mut stack = vec![workspace()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                if !name.starts_with('.') && !matches!(name.as_str(), "target" | "node_modules") {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                let lines = std::fs::read_to_string(&path).unwrap().lines().count();
                if lines > 600 {
                    oversized.push(format!("{} ({lines} lines)", path.strip_prefix(workspace()).unwrap().display()));
                }
            }
        }
    }
    assert!(oversized.is_empty(), "source files over 600 lines: {oversized:?}");
}
