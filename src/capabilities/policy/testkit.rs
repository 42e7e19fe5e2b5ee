//! `capcri policy test DIR`: table-driven cases an admin writes next to
//! the policies (`*_test.yaml`, never loaded as policies), the way OPA
//! (`*_test.rego`) and Kyverno (`kyverno-test.yaml`) users test theirs.
//!
//! A case gives facts (pod, container, image, node, and the image's files
//! for the entrypoint resolution) and the expected decision; only the
//! fields written under `expect` are compared. Parsing and running are
//! pure ([`run_cases`]); [`cli_test`] reads the directory.
//!
//! ```yaml
//! apiVersion: capcri.dev/v1alpha1
//! kind: CapabilityPolicyTest
//! cases:
//!   - name: non-root nginx gets NET_BIND_SERVICE as ambient
//!     container:
//!       name: nginx
//!       command: [/usr/sbin/nginx]
//!       user: {uid: 101, gid: 101}
//!       capabilities: {add: [NET_BIND_SERVICE]}
//!     files:
//!       /usr/sbin/nginx: {}
//!     expect:
//!       allowed: true
//!       ambient: [NET_BIND_SERVICE]
//!       execPath: dmz
//!       sysctls: {net.ipv4.ip_unprivileged_port_start: "0"}
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::decision::{Decision, ExecPath};
use super::facts::{ContainerFacts, Facts, ImageFacts, NodeFacts, PodFacts};
use super::load::{PolicySet, is_policy_test_file, snapshot_dir};
use super::preflight::{MemoryRootfs, SetIdBits};
use super::sysctls::SysctlOutcome;
use crate::capabilities::kernel::{CapList, CapSet, FileCaps};

pub const TEST_KIND: &str = "CapabilityPolicyTest";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TestFile {
    api_version: String,
    kind: String,
    cases: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TestCase {
    name: String,
    #[serde(default)]
    pod: PodFacts,
    #[serde(default)]
    container: ContainerFacts,
    #[serde(default)]
    image: ImageFacts,
    #[serde(default)]
    node: NodeFacts,
    /// The image's files the entrypoint resolution sees: path → spec.
    #[serde(default)]
    files: BTreeMap<String, FileSpec>,
    /// Symlinks: path → target.
    #[serde(default)]
    links: BTreeMap<String, String>,
    expect: Expectation,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct FileSpec {
    /// Permitted file capabilities (`security.capability`).
    file_caps: Vec<String>,
    /// The file capabilities' effective bit (default true, as `setcap +ep`).
    effective: Option<bool>,
    /// Set-uid: the owner's uid.
    setuid: Option<u32>,
    /// Set-gid: the group's gid.
    setgid: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct Expectation {
    allowed: Option<bool>,
    deny_message_contains: Option<String>,
    bounding: Option<Vec<String>>,
    effective: Option<Vec<String>>,
    permitted: Option<Vec<String>>,
    inheritable: Option<Vec<String>>,
    ambient: Option<Vec<String>>,
    /// The user process's effective set after its execve (the prediction).
    effective_after_exec: Option<Vec<String>>,
    exec_path: Option<ExecPath>,
    preflight_failed: Option<bool>,
    /// The sysctls written into the pod's network namespace (applied
    /// ones), exactly.
    sysctls: Option<BTreeMap<String, String>>,
    warnings_contain: Vec<String>,
}

/// One failed case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFailure {
    pub file: String,
    pub case: String,
    /// `(field, expected, actual)`.
    pub diffs: Vec<(String, String, String)>,
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct TestReport {
    pub passed: usize,
    pub failures: Vec<CaseFailure>,
    /// Files that could not be read or parsed.
    pub errors: Vec<String>,
}

impl TestReport {
    pub fn ok(&self) -> bool {
        self.failures.is_empty() && self.errors.is_empty() && self.passed > 0
    }

    /// `--- expected` / `+++ actual` per field, then a summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for e in &self.errors {
            let _ = writeln!(out, "ERROR {e}");
        }
        for f in &self.failures {
            let _ = writeln!(out, "FAIL {}: {}", f.file, f.case);
            for (field, want, got) in &f.diffs {
                let _ = writeln!(out, "  {field}:");
                let _ = writeln!(out, "    --- expected {want}");
                let _ = writeln!(out, "    +++ actual   {got}");
            }
        }
        let _ = writeln!(
            out,
            "{} passed, {} failed{}",
            self.passed,
            self.failures.len(),
            if self.errors.is_empty() {
                String::new()
            } else {
                format!(", {} file error(s)", self.errors.len())
            }
        );
        out
    }
}

fn caps_of(names: &[String]) -> Result<CapSet, String> {
    CapList::parse(names)
        .map(CapList::expanded)
        .map_err(|e| e.to_string())
}

fn show(set: CapSet) -> String {
    format!(
        "[{}]",
        crate::capabilities::kernel::canonical_names(set).join(", ")
    )
}

/// The facts and rootfs of a case; `nonRoot` follows the uid, as the
/// daemon computes it.
fn build(case: &TestCase) -> Result<(Facts, MemoryRootfs), String> {
    let mut facts = Facts {
        pod: case.pod.clone(),
        container: case.container.clone(),
        image: case.image.clone(),
        node: case.node.clone(),
    };
    facts.container.user.non_root = facts.container.user.uid != 0;
    let mut fs = MemoryRootfs::from_file_caps(&facts.image.file_caps);
    for (path, spec) in &case.files {
        let caps = if spec.file_caps.is_empty() {
            None
        } else {
            Some(FileCaps {
                permitted: caps_of(&spec.file_caps).map_err(|e| format!("files {path}: {e}"))?,
                inheritable: CapSet::empty(),
                effective: spec.effective.unwrap_or(true),
                rootid: None,
            })
        };
        if let Some(c) = caps {
            facts.image.file_caps.insert(path.clone(), c);
        }
        fs = fs.file(path, caps);
        if spec.setuid.is_some() || spec.setgid.is_some() {
            fs = fs.set_id(
                path,
                SetIdBits {
                    setuid: spec.setuid,
                    setgid: spec.setgid,
                },
            );
        }
    }
    for (path, target) in &case.links {
        fs = fs.link(path, target);
    }
    Ok((facts, fs))
}

/// Compares `d` with what the case expects.
fn compare(e: &Expectation, d: &Decision) -> Result<Vec<(String, String, String)>, String> {
    let mut diffs = Vec::new();
    let mut diff = |field: &str, want: String, got: String| {
        if want != got {
            diffs.push((field.to_string(), want, got));
        }
    };
    if let Some(a) = e.allowed
        && a != d.allowed
    {
        // The deny message says why, where one was denied.
        let got = match &d.deny_message {
            Some(why) => format!("{} ({why})", d.allowed),
            None => d.allowed.to_string(),
        };
        diff("allowed", a.to_string(), got);
    }
    if let Some(text) = &e.deny_message_contains {
        let got = d.deny_message.clone().unwrap_or_default();
        if !got.contains(text.as_str()) {
            diff(
                "denyMessage",
                format!("contains {text:?}"),
                format!("{got:?}"),
            );
        }
    }
    let sets = [
        ("bounding", &e.bounding, d.caps.bounding),
        ("effective", &e.effective, d.caps.effective),
        ("permitted", &e.permitted, d.caps.permitted),
        ("inheritable", &e.inheritable, d.caps.inheritable),
        ("ambient", &e.ambient, d.caps.ambient),
    ];
    for (field, want, got) in sets {
        if let Some(w) = want {
            diff(
                field,
                show(caps_of(w).map_err(|e| format!("expect.{field}: {e}"))?),
                show(got),
            );
        }
    }
    if let Some(w) = &e.effective_after_exec {
        let want = show(caps_of(w).map_err(|e| format!("expect.effectiveAfterExec: {e}"))?);
        let got = match d.prediction {
            Some(p) => show(p.effective),
            None => "(not predictable)".to_string(),
        };
        diff("effectiveAfterExec", want, got);
    }
    if let Some(p) = e.exec_path {
        diff("execPath", p.to_string(), d.exec_path.to_string());
    }
    if let Some(p) = e.preflight_failed {
        diff(
            "preflightFailed",
            p.to_string(),
            d.preflight_failed.to_string(),
        );
    }
    if let Some(want) = &e.sysctls {
        let got: BTreeMap<&str, &str> = d
            .sysctls
            .iter()
            .filter(|s| s.outcome == SysctlOutcome::Applied)
            .map(|s| (s.key.as_str(), s.value.as_str()))
            .collect();
        let want: BTreeMap<&str, &str> =
            want.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        diff("sysctls", format!("{want:?}"), format!("{got:?}"));
    }
    for w in &e.warnings_contain {
        if !d.warnings.iter().any(|x| x.contains(w.as_str())) {
            diff(
                "warnings",
                format!("one containing {w:?}"),
                format!("{:?}", d.warnings),
            );
        }
    }
    Ok(diffs)
}

/// Runs the cases of one test file against `set`. Pure.
pub fn run_cases(set: &PolicySet, file: &str, text: &str, report: &mut TestReport) {
    let parsed: TestFile = match serde_norway::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            let at = e
                .location()
                .map(|l| format!("{file}:{}:{}", l.line(), l.column()))
                .unwrap_or_else(|| file.to_string());
            report.errors.push(format!(
                "{at}: invalid test file: {e}; fix the YAML (unknown keys are rejected)"
            ));
            return;
        }
    };
    if parsed.api_version != super::API_VERSION || parsed.kind != TEST_KIND {
        report.errors.push(format!(
            "{file}: apiVersion/kind are {:?}/{:?}, expected {:?}/{TEST_KIND:?}",
            parsed.api_version,
            parsed.kind,
            super::API_VERSION
        ));
        return;
    }
    for case in &parsed.cases {
        let result = build(case).and_then(|(facts, fs)| {
            let mut d = set.evaluate(&facts, &fs);
            d.sysctls = set.evaluate_pod(&facts.pod, &facts.node).sysctls;
            compare(&case.expect, &d)
        });
        match result {
            Ok(diffs) if diffs.is_empty() => report.passed += 1,
            Ok(diffs) => report.failures.push(CaseFailure {
                file: file.to_string(),
                case: case.name.clone(),
                diffs,
            }),
            Err(e) => report
                .errors
                .push(format!("{file}: case {:?}: {e}", case.name)),
        }
    }
}

/// `capcri policy test DIR`: loads DIR's policies (any invalid one is an
/// error: a test of half a set proves nothing) and runs every
/// `*_test.yaml` in it. The report and whether everything passed.
pub fn cli_test(dir: &Path) -> (String, bool) {
    let snap = snapshot_dir(dir);
    let mut report = TestReport::default();
    if snap.missing {
        report
            .errors
            .push(format!("{}: no such directory", dir.display()));
        return (report.render(), false);
    }
    let (set, mut errors) = PolicySet::from_sources(&snap.sources);
    errors.extend(snap.errors);
    if !errors.is_empty() {
        let mut out = String::new();
        for e in &errors {
            let _ = writeln!(out, "{e}");
        }
        let _ = writeln!(
            out,
            "{} policy error(s): fix them first (capcri policy check)",
            errors.len()
        );
        return (out, false);
    }
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_policy_test_file(p))
            .collect(),
        Err(e) => {
            report.errors.push(format!("{}: {e}", dir.display()));
            return (report.render(), false);
        }
    };
    files.sort();
    if files.is_empty() {
        report.errors.push(format!(
            "{}: no *_test.yaml files; write cases next to the policies",
            dir.display()
        ));
    }
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(text) => run_cases(&set, &f.display().to_string(), &text, &mut report),
            Err(e) => report.errors.push(format!("{}: {e}", f.display())),
        }
    }
    let ok = report.ok();
    (report.render(), ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"apiVersion: capcri.dev/v1alpha1
kind: CapabilityPolicy
metadata: {name: p}
spec:
  match: "container.user.nonRoot"
  rules:
    - ambientExpression: "container.capabilities.add"
    - deny:
        condition: "'SYS_ADMIN' in granted.bounding"
        message: no SYS_ADMIN
"#;

    fn set() -> PolicySet {
        let (set, errors) = PolicySet::from_sources(&[("p.yaml".into(), POLICY.into())]);
        assert!(errors.is_empty(), "{errors:?}");
        set
    }

    fn run(text: &str) -> TestReport {
        let mut r = TestReport::default();
        run_cases(&set(), "t_test.yaml", text, &mut r);
        r
    }

    const HEAD: &str = "apiVersion: capcri.dev/v1alpha1\nkind: CapabilityPolicyTest\ncases:\n";

    #[test]
    fn passing_and_failing_cases_with_a_diff() {
        let r = run(&format!(
            r#"{HEAD}  - name: promoted
    container:
      command: [/bin/app]
      user: {{uid: 1000, gid: 1000}}
      capabilities: {{add: [net_bind_service]}}
    files:
      /bin/app: {{}}
    expect:
      allowed: true
      ambient: [CAP_NET_BIND_SERVICE]
      effectiveAfterExec: [NET_BIND_SERVICE]
      execPath: direct
  - name: wrong on purpose
    container:
      command: [/bin/app]
      user: {{uid: 1000}}
      capabilities: {{add: [SYS_ADMIN]}}
    files:
      /bin/app: {{}}
    expect:
      allowed: true
      ambient: []
"#
        ));
        assert_eq!(r.passed, 1, "{}", r.render());
        assert_eq!(r.failures.len(), 1);
        let text = r.render();
        assert!(
            text.contains("FAIL t_test.yaml: wrong on purpose"),
            "{text}"
        );
        assert!(text.contains("--- expected true"), "{text}");
        assert!(
            text.contains("+++ actual   false (policy p rule 2: no SYS_ADMIN)"),
            "{text}"
        );
        assert!(text.contains("+++ actual   [SYS_ADMIN]"), "{text}");
        assert!(!r.ok());
    }

    #[test]
    fn set_uid_files_and_links_reach_the_prediction() {
        let r = run(&format!(
            r#"{HEAD}  - name: setuid root entrypoint through a link
    container:
      command: [app]
      user: {{uid: 1000, gid: 1000}}
    links:
      /usr/bin/app: /bin/real
    files:
      /bin/real: {{setuid: 0}}
    image:
      env: [PATH=/usr/bin]
    expect:
      effectiveAfterExec: [CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP]
"#
        ));
        assert!(r.ok(), "{}", r.render());
    }

    #[test]
    fn malformed_files_are_errors() {
        let r = run(&format!(
            "{HEAD}  - name: x\n    contaner: {{}}\n    expect: {{}}\n"
        ));
        assert!(
            r.errors[0].contains("unknown field `contaner`"),
            "{:?}",
            r.errors
        );
        let r = run("apiVersion: v1\nkind: CapabilityPolicyTest\ncases: []\n");
        assert!(r.errors[0].contains("expected"), "{:?}", r.errors);
        let r = run(&format!(
            "{HEAD}  - name: x\n    expect:\n      ambient: [NOPE]\n"
        ));
        assert!(
            r.errors[0].contains("unknown capability \"NOPE\""),
            "{:?}",
            r.errors
        );
    }
}
