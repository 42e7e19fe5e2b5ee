//! Building a [`PolicySet`]: from text (pure), from a directory (the only
//! file reading of this module, in [`PolicySet::load_dir`]), or built in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cel::Env;

use super::compile::{CompiledPolicy, Compiler};
use super::document::PolicyDocument;
use super::error::{LoadError, LoadErrorKind, Location};

/// The default policy directory.
pub const DEFAULT_POLICY_DIR: &str = "/etc/capcri/policies";

/// The loaded, compiled policies. Policies apply in order of
/// `metadata.name` (byte order), rules in file order; see
/// [`PolicySet::evaluate`] for the merge rules.
pub struct PolicySet {
    pub(crate) env: Arc<Env>,
    pub(crate) policies: Vec<CompiledPolicy>,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

impl Default for PolicySet {
    fn default() -> Self {
        PolicySet::builtin()
    }
}

/// Splits a YAML stream into documents at `---` lines, keeping each one's
/// 1-based starting line so that error positions refer to the whole file.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            if !current.trim().is_empty() {
                docs.push((start, std::mem::take(&mut current)));
            }
            current.clear();
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    let only_comments = current
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if !only_comments {
        docs.push((start, current));
    }
    docs
}

impl PolicySet {
    /// No policy files: behave exactly like containerd (see `evaluate`).
    pub fn builtin() -> PolicySet {
        PolicySet {
            env: Arc::new(Env::stdlib()),
            policies: Vec::new(),
        }
    }

    /// Names of the loaded policies, in application order.
    pub fn policy_names(&self) -> Vec<&str> {
        self.policies.iter().map(|p| p.name.as_str()).collect()
    }

    /// `(policy name, file)` of the loaded policies, in application order.
    pub fn policy_sources(&self) -> Vec<(&str, &str)> {
        self.policies
            .iter()
            .map(|p| (p.name.as_str(), p.file.as_str()))
            .collect()
    }

    /// Parses and compiles policy sources `(file name, text)`. Pure: the
    /// caller reads the files. A policy with any error is left out and its
    /// errors returned; the others are loaded.
    pub fn from_sources(sources: &[(String, String)]) -> (PolicySet, Vec<LoadError>) {
        let mut set = PolicySet::builtin();
        let mut errors = Vec::new();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (file, text) in sources {
            let env = Arc::clone(&set.env);
            let mut compiler = Compiler::new(&env, file, text);
            for (start, doc_text) in split_documents(text) {
                compiler.doc_line = start;
                let doc: PolicyDocument = match serde_norway::from_str(&doc_text) {
                    Ok(d) => d,
                    Err(e) => {
                        let (line, column) = e
                            .location()
                            .map(|l| (l.line() + start - 1, l.column()))
                            .unwrap_or((start, 1));
                        compiler.errors.push(LoadError {
                            location: Location {
                                file: file.clone(),
                                line,
                                column,
                            },
                            kind: LoadErrorKind::Yaml(e.to_string()),
                        });
                        continue;
                    }
                };
                let Some(policy) = compiler.policy(&doc) else {
                    continue;
                };
                let (line, _) = super::compile::locate(text, &policy.name, start);
                let here = format!("{file}:{line}");
                if let Some(other) = seen.get(&policy.name) {
                    compiler.errors.push(LoadError {
                        location: Location {
                            file: file.clone(),
                            line,
                            column: 1,
                        },
                        kind: LoadErrorKind::DuplicateName {
                            policy: policy.name.clone(),
                            other: other.clone(),
                        },
                    });
                    continue;
                }
                seen.insert(policy.name.clone(), here);
                set.policies.push(policy);
            }
            errors.append(&mut compiler.errors);
        }
        set.policies.sort_by(|a, b| a.name.cmp(&b.name));
        (set, errors)
    }

    /// Loads every `*.yaml`/`*.yml` file of `dir` (sorted by file name).
    /// A missing directory is no policies: the built-in behaviour.
    pub fn load_dir(dir: &Path) -> (PolicySet, Vec<LoadError>) {
        if !dir.exists() {
            return (PolicySet::builtin(), Vec::new());
        }
        let (sources, mut errors) = read_sources(&[dir.to_path_buf()]);
        let (set, mut more) = PolicySet::from_sources(&sources);
        errors.append(&mut more);
        (set, errors)
    }

    /// Like [`load_dir`](Self::load_dir), but a directory with any invalid
    /// file is rejected whole, so a typo never runs with half a policy set.
    pub fn load_dir_strict(dir: &Path) -> Result<PolicySet, Vec<LoadError>> {
        let (set, errors) = PolicySet::load_dir(dir);
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }
}

fn is_policy_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

/// Reads policy files: each path is a file or a directory of `*.yaml` /
/// `*.yml` files. The I/O side of loading, kept apart from parsing.
pub(crate) fn read_sources(paths: &[PathBuf]) -> (Vec<(String, String)>, Vec<LoadError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let io_error = |p: &Path, e: std::io::Error| LoadError {
        location: Location {
            file: p.display().to_string(),
            line: 0,
            column: 0,
        },
        kind: LoadErrorKind::Io(e.to_string()),
    };
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.is_file() && is_policy_file(p))
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(e) => errors.push(io_error(path, e)),
            }
        } else if path.exists() || path.is_symlink() {
            files.push(path.clone());
        } else {
            errors.push(io_error(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            ));
        }
    }
    let mut sources = Vec::new();
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(text) => sources.push((f.display().to_string(), text)),
            Err(e) => errors.push(io_error(&f, e)),
        }
    }
    (sources, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn policy_set_is_shareable_between_tasks() {
        assert_send_sync::<PolicySet>();
    }

    #[test]
    fn splits_documents_keeping_lines() {
        let docs = split_documents("# c\na: 1\n---\nb: 2\n---\n# only comment\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].0, 4);
    }
}
