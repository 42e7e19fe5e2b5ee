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
        PolicySet::from_snapshot(snapshot_dir(dir))
    }

    /// Compiles what [`snapshot_dir`] read; no file is read again.
    pub(crate) fn from_snapshot(snap: DirSnapshot) -> (PolicySet, Vec<LoadError>) {
        if snap.missing {
            return (PolicySet::builtin(), Vec::new());
        }
        let mut errors = snap.errors;
        let (set, mut more) = PolicySet::from_sources(&snap.sources);
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
    ) && !is_policy_test_file(p)
}

/// `*_test.yaml` / `*_test.yml`: the cases `capcri policy test` runs,
/// kept next to the policies and never loaded as policies.
pub(crate) fn is_policy_test_file(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with("_test.yaml") || n.ends_with("_test.yml"))
}

/// A policy file larger than this is refused: policies are a few KiB, and
/// the reader must not be made to hold an arbitrary file in memory.
pub const MAX_POLICY_FILE_BYTES: u64 = 1 << 20;

/// Reads one policy file exactly once: opened without blocking (a FIFO put
/// in the directory must not hang the poller), its type checked on the
/// open fd (no check-then-use race with a file swapped between the two),
/// and its bytes read with a size cap. Symlinks are followed: Kubernetes
/// ConfigMap volumes are symlink farms whose `..data` link is swapped
/// atomically, and reading through the fd gives one consistent version.
fn read_policy_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file; a policy must be a regular YAML file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_POLICY_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_POLICY_FILE_BYTES} bytes; split the policies"),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Every policy file of a directory, each read once: what a load parses and
/// what the store fingerprints are the same bytes.
#[derive(Debug, Default)]
pub(crate) struct DirSnapshot {
    /// The directory does not exist.
    pub missing: bool,
    /// `(file, text)`, sorted by file name.
    pub sources: Vec<(String, String)>,
    pub errors: Vec<LoadError>,
}

fn io_error(p: &Path, e: std::io::Error) -> LoadError {
    LoadError {
        location: Location {
            file: p.display().to_string(),
            line: 0,
            column: 0,
        },
        kind: LoadErrorKind::Io(e.to_string()),
    }
}

pub(crate) fn snapshot_dir(dir: &Path) -> DirSnapshot {
    let mut snap = DirSnapshot::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            snap.missing = true;
            return snap;
        }
        Err(e) => {
            snap.errors.push(io_error(dir, e));
            return snap;
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) => {
                let p = e.path();
                // Anything named *.yaml is opened and its type checked on
                // the fd: a directory or FIFO there is an error (fail
                // closed), never a policy silently left out.
                if is_policy_file(&p) {
                    found.push(p);
                }
            }
            // A directory that fails while being listed (removed, unmounted)
            // is an error, never a shorter list.
            Err(e) => snap.errors.push(io_error(dir, e)),
        }
    }
    found.sort();
    for f in found {
        match read_policy_file(&f) {
            Ok(text) => snap.sources.push((f.display().to_string(), text)),
            Err(e) => snap.errors.push(io_error(&f, e)),
        }
    }
    snap
}

/// Reads policy files: each path is a file or a directory of `*.yaml` /
/// `*.yml` files. The I/O side of loading, kept apart from parsing.
pub(crate) fn read_sources(paths: &[PathBuf]) -> (Vec<(String, String)>, Vec<LoadError>) {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut snap = snapshot_dir(path);
            sources.append(&mut snap.sources);
            errors.append(&mut snap.errors);
        } else if is_policy_test_file(path) {
            // `policy check policy/*.yaml` names the cases too: they are
            // checked by `policy test`, and never loaded as policies.
            continue;
        } else {
            match read_policy_file(path) {
                Ok(text) => sources.push((path.display().to_string(), text)),
                Err(e) => errors.push(io_error(path, e)),
            }
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
