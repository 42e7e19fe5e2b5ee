//! Golden decision tables, the auto-vs-direct invariance table, malformed
//! inputs, and the recommended policy set of `policy/`.

use std::path::PathBuf;

use capcri::capabilities::kernel::{
    CapSet, Capability, FileCaps, ThreadCaps, docker_default_capabilities,
};
use capcri::capabilities::policy::{
    ExecPath, Facts, ImageFacts, LoadErrorKind, MemoryRootfs, PolicySet, PreflightMode,
    auto_allows_dmz, cli_check, cli_eval, cli_test, predict_paths,
};

use Capability::*;

fn set<const N: usize>(c: [Capability; N]) -> CapSet {
    CapSet::from_iter(c)
}

fn fcap(p: CapSet, effective: bool) -> FileCaps {
    FileCaps {
        permitted: p,
        inheritable: CapSet::empty(),
        effective,
        rootid: None,
    }
}

fn policies(yaml: &[&str]) -> PolicySet {
    let sources: Vec<(String, String)> = yaml
        .iter()
        .enumerate()
        .map(|(i, y)| (format!("p{i}.yaml"), y.to_string()))
        .collect();
    let (set, errors) = PolicySet::from_sources(&sources);
    assert!(errors.is_empty(), "{errors:?}");
    set
}

fn recommended() -> PolicySet {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policy");
    match PolicySet::load_dir_strict(&dir) {
        Ok(s) => s,
        Err(e) => panic!("recommended set invalid: {e:?}"),
    }
}

fn facts(uid: u32, add: &[&str], cmd: &str) -> Facts {
    let mut f = Facts::default();
    f.pod.name = "web".into();
    f.pod.namespace = "default".into();
    f.container.name = "app".into();
    f.container.command = vec![cmd.to_string()];
    f.container.user.uid = uid;
    f.container.user.gid = uid;
    f.container.user.non_root = uid != 0;
    f.container.capabilities.add = add.iter().map(|s| s.to_string()).collect();
    f
}

fn fs_plain() -> MemoryRootfs {
    MemoryRootfs::new()
        .file("/bin/app", None)
        .file("/bin/sh", None)
}

#[test]
fn builtin_equals_containerd() {
    let d = PolicySet::builtin().evaluate(&facts(1000, &["NET_ADMIN"], "/bin/app"), &fs_plain());
    assert!(d.allowed);
    let mut want = docker_default_capabilities();
    want.insert(NetAdmin);
    assert_eq!(d.caps, ThreadCaps::runtime_default(want));
    assert_eq!(d.exec_path, ExecPath::Direct);
    assert_eq!(d.preflight, PreflightMode::Off);
    // Non-root, no ambient: the kernel leaves nothing after execve.
    assert_eq!(d.prediction.map(|p| p.effective), Some(CapSet::empty()));
    assert!(
        d.reasons
            .iter()
            .any(|r| r.subject == "bounding:CAP_AUDIT_WRITE" && r.source == "built-in default")
    );
    assert!(
        d.reasons
            .iter()
            .any(|r| r.subject == "bounding:CAP_NET_ADMIN"
                && r.source == "container securityContext")
    );
    assert!(
        d.reasons
            .iter()
            .any(|r| r.subject == "exec_path" && r.source == "built-in default")
    );
}

struct Golden {
    name: &'static str,
    facts: Facts,
    rootfs: MemoryRootfs,
    allowed: bool,
    bounding: CapSet,
    ambient: CapSet,
    exec_path: ExecPath,
    effective_after: Option<CapSet>,
    reason: Option<(&'static str, &'static str)>,
    message_has: &'static [&'static str],
}

#[test]
fn golden_recommended_decisions() {
    let dflt = docker_default_capabilities();
    let nbs = set([NetBindService]);
    let privileged = {
        let mut f = facts(1000, &["NET_BIND_SERVICE"], "/bin/app");
        f.container.privileged = true;
        f
    };
    let ping_outside = MemoryRootfs::new()
        .file("/bin/busybox", Some(fcap(set([NetAdmin, NetRaw]), true)))
        .link("/bin/ping", "busybox")
        .file("/sbin/other", Some(fcap(set([SysAdmin]), false)));
    let coredns_nnp = {
        let mut f = facts(65532, &["NET_BIND_SERVICE"], "/coredns");
        f.container.no_new_privs = true;
        f
    };
    let cases = vec![
        Golden {
            name: "nginx as uid 101 asking NET_BIND_SERVICE gets it ambient, dmz",
            facts: facts(101, &["NET_BIND_SERVICE"], "/bin/app"),
            rootfs: fs_plain(),
            allowed: true,
            bounding: dflt,
            ambient: nbs,
            exec_path: ExecPath::Direct,
            effective_after: Some(nbs),
            reason: Some((
                "ambient:CAP_NET_BIND_SERVICE",
                "policy 10-ambient-non-root rule 1 (promote-explicit-adds)",
            )),
            message_has: &[],
        },
        Golden {
            name: "root container: nothing ambient, dmz is safe",
            facts: facts(0, &[], "/bin/app"),
            rootfs: fs_plain(),
            allowed: true,
            bounding: dflt,
            ambient: CapSet::empty(),
            exec_path: ExecPath::Dmz,
            effective_after: Some(dflt),
            reason: Some((
                "exec_path",
                "policy 20-exec-path-and-preflight rule 1 (exec-path)",
            )),
            message_has: &[],
        },
        Golden {
            name: "coredns with file caps under no_new_privs: direct, caps kept",
            facts: coredns_nnp,
            rootfs: MemoryRootfs::new().file("/coredns", Some(fcap(nbs, true))),
            allowed: true,
            bounding: dflt,
            ambient: nbs,
            exec_path: ExecPath::Direct,
            effective_after: Some(nbs),
            reason: Some(("ambient", "kernel rule")),
            message_has: &[],
        },
        Golden {
            name: "ping with cap_net_admin outside bounding: denied with both fixes",
            facts: facts(1000, &[], "ping"),
            rootfs: ping_outside,
            allowed: false,
            bounding: dflt,
            ambient: CapSet::empty(),
            exec_path: ExecPath::Direct,
            effective_after: None,
            reason: None,
            message_has: &[
                "/bin/ping",
                "CAP_NET_ADMIN",
                "capabilities.add",
                "setcap -r /bin/busybox",
            ],
        },
        Golden {
            name: "privileged: all caps, no promotion",
            facts: privileged,
            rootfs: fs_plain(),
            allowed: true,
            bounding: CapSet::all(),
            ambient: CapSet::empty(),
            exec_path: ExecPath::Direct,
            effective_after: Some(CapSet::empty()),
            reason: Some(("bounding", "container securityContext")),
            message_has: &[],
        },
    ];
    let ps = recommended();
    for case in cases {
        let d = ps.evaluate(&case.facts, &case.rootfs);
        assert_eq!(
            d.allowed, case.allowed,
            "{}: {:?}",
            case.name, d.deny_message
        );
        assert_eq!(d.caps.bounding, case.bounding, "{}", case.name);
        assert_eq!(d.caps.ambient, case.ambient, "{}", case.name);
        assert!(
            d.caps.ambient.is_subset(d.caps.inheritable),
            "{}",
            case.name
        );
        assert_eq!(d.exec_path, case.exec_path, "{}", case.name);
        assert_eq!(
            d.prediction.map(|p| p.effective),
            case.effective_after,
            "{}",
            case.name
        );
        if let Some((subject, source)) = case.reason {
            assert!(
                d.reasons
                    .iter()
                    .any(|r| r.subject == subject && r.source == source),
                "{}: missing reason {subject} from {source}: {:#?}",
                case.name,
                d.reasons
            );
        }
        for needle in case.message_has {
            let msg = d.deny_message.clone().unwrap_or_default();
            assert!(
                msg.contains(needle),
                "{}: {needle:?} not in {msg}",
                case.name
            );
        }
    }
}

#[test]
fn first_case_uses_dmz_when_ambient_equals_everything() {
    // uid 101 with NET_BIND_SERVICE ambient: permitted (the default 14) is
    // larger than ambient, so dmz would change permitted: direct.
    let d = recommended().evaluate(&facts(101, &["NET_BIND_SERVICE"], "/bin/app"), &fs_plain());
    assert_eq!(d.exec_path, ExecPath::Direct);
    let r = d
        .reasons
        .iter()
        .find(|r| r.subject == "exec_path")
        .map(|r| r.text.clone());
    assert!(r.unwrap_or_default().contains("auto chose direct"));
}

#[test]
fn preflight_warn_and_other_binaries() {
    let ps = policies(&[r#"
apiVersion: capcri.dev/v1alpha1
kind: CapabilityPolicy
metadata: {name: warn}
spec:
  match: "true"
  rules:
    - preflight: warn
"#]);
    let fs = MemoryRootfs::new()
        .file("/bin/ping", Some(fcap(set([NetAdmin]), true)))
        .file("/sbin/tool", Some(fcap(set([SysAdmin]), false)));
    let d = ps.evaluate(&facts(1000, &[], "/bin/ping"), &fs);
    assert!(d.allowed);
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("/bin/ping") && w.contains("CAP_NET_ADMIN"))
    );
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("/sbin/tool") && w.contains("CAP_SYS_ADMIN"))
    );
    // Off: nothing.
    let d = PolicySet::builtin().evaluate(&facts(1000, &[], "/bin/ping"), &fs);
    assert!(d.allowed && d.warnings.is_empty(), "{:?}", d.warnings);
}

#[test]
fn deny_wins_and_never_promotes_outside_bounding() {
    let ps = policies(&[
        r#"
apiVersion: capcri.dev/v1alpha1
kind: CapabilityPolicy
metadata: {name: a}
spec:
  match: "true"
  rules:
    - add: [NET_ADMIN]
      ambient: [SYS_TIME]
    - drop: [NET_RAW]
"#,
        r#"
apiVersion: capcri.dev/v1alpha1
kind: CapabilityPolicy
metadata: {name: b}
spec:
  match: "pod.namespace == 'default'"
  rules:
    - name: no-net-admin-in-default
      deny:
        condition: "container.capabilities.add.exists(c, c == 'NET_ADMIN')"
        message: "NET_ADMIN is not allowed in default"
    - ambientRequests: refuse
"#,
    ]);
    let mut f = facts(1000, &[], "/bin/app");
    f.container.capabilities.add_ambient = vec!["KILL".into()];
    let d = ps.evaluate(&f, &fs_plain());
    assert!(d.allowed);
    assert!(d.caps.bounding.contains(NetAdmin));
    assert!(!d.caps.bounding.contains(NetRaw));
    assert!(d.caps.ambient.is_empty());
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("CAP_SYS_TIME") && w.contains("not in the bounding set"))
    );
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("CAP_KILL") && w.contains("refused"))
    );

    let d = ps.evaluate(&facts(1000, &["NET_ADMIN"], "/bin/app"), &fs_plain());
    assert!(!d.allowed);
    let msg = d.deny_message.unwrap_or_default();
    assert!(
        msg.contains("policy b rule 1 (no-net-admin-in-default)"),
        "{msg}"
    );
}

#[test]
fn cri_ambient_request_is_a_promotion() {
    let mut f = facts(1000, &["NET_BIND_SERVICE"], "/bin/app");
    f.container.capabilities.add_ambient = vec!["NET_BIND_SERVICE".into()];
    let d = PolicySet::builtin().evaluate(&f, &fs_plain());
    assert_eq!(d.caps.ambient, set([NetBindService]));
    assert_eq!(d.caps.inheritable, set([NetBindService]));
}

#[test]
fn runtime_cel_errors_fail_closed() {
    let ps = policies(&[r#"
apiVersion: capcri.dev/v1alpha1
kind: CapabilityPolicy
metadata: {name: needs-label}
spec:
  match: "pod.labels['team'] == 'x'"
  rules:
    - execPath: dmz
"#]);
    let d = ps.evaluate(&facts(0, &[], "/bin/app"), &fs_plain());
    assert!(!d.allowed);
    let msg = d.deny_message.unwrap_or_default();
    assert!(
        msg.contains("policy needs-label") && msg.contains("fail closed"),
        "{msg}"
    );
}

/// The exec-path invariance table: whatever `auto` chooses, the user
/// process ends with exactly what `direct` would give it.
#[test]
fn auto_never_changes_the_outcome_of_direct() {
    let dflt = docker_default_capabilities();
    let nbs = set([NetBindService]);
    let file_options = [
        None,
        Some(fcap(nbs, true)),
        Some(fcap(set([NetRaw]), false)),
        Some(fcap(set([SysAdmin]), true)),
    ];
    let mut checked = 0;
    let mut dmz = 0;
    for uid in [0u32, 1000] {
        for nnp in [false, true] {
            for file in &file_options {
                for promote in [false, true] {
                    for all_ambient in [false, true] {
                        let mut caps =
                            ThreadCaps::runtime_default(if all_ambient { nbs } else { dflt });
                        if promote || all_ambient {
                            caps.ambient = nbs;
                            caps.inheritable = nbs;
                        }
                        let p = predict_paths(&caps, file.as_ref(), uid, nnp);
                        if auto_allows_dmz(&caps, file.as_ref(), uid, nnp) {
                            dmz += 1;
                            assert_eq!(
                                p.dmz, p.direct,
                                "uid {uid} nnp {nnp} file {file:?} promote {promote}"
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 64);
    assert!(dmz > 0, "auto never chose dmz");

    // The same through the engine with the recommended set.
    let ps = recommended();
    for uid in [0u32, 1000] {
        for nnp in [false, true] {
            for file in &file_options {
                for add in [&[][..], &["NET_BIND_SERVICE"][..]] {
                    let mut f = facts(uid, add, "/bin/app");
                    f.container.no_new_privs = nnp;
                    let fs = MemoryRootfs::new().file("/bin/app", *file);
                    let d = ps.evaluate(&f, &fs);
                    let p = predict_paths(&d.caps, file.as_ref(), uid, nnp);
                    let chosen = match d.exec_path {
                        ExecPath::Direct => &p.direct,
                        ExecPath::Dmz => &p.dmz,
                    };
                    assert_eq!(
                        chosen, &p.direct,
                        "uid {uid} nnp {nnp} file {file:?} add {add:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn all_ambient_non_root_gets_dmz() {
    let mut f = facts(1000, &[], "/bin/app");
    f.container.capabilities.drop = vec!["ALL".into()];
    let d = recommended().evaluate(&f, &fs_plain());
    assert_eq!(d.caps.bounding, CapSet::empty());
    assert_eq!(d.exec_path, ExecPath::Dmz);
}

fn load_error(yaml: &str) -> LoadErrorKind {
    let (set, errors) = PolicySet::from_sources(&[("bad.yaml".into(), yaml.into())]);
    assert!(set.policy_names().is_empty(), "a bad policy was loaded");
    match errors.into_iter().next() {
        Some(e) => {
            assert_eq!(e.location.file, "bad.yaml");
            assert!(e.location.line >= 1, "{e}");
            e.kind
        }
        None => panic!("no error for {yaml}"),
    }
}

const HEAD: &str = "apiVersion: capcri.dev/v1alpha1\nkind: CapabilityPolicy\nmetadata: {name: x}\n";

#[test]
fn malformed_policies_are_errors() {
    assert!(matches!(load_error("a: [b"), LoadErrorKind::Yaml(_)));
    assert!(matches!(
        load_error(&format!("{HEAD}spec:\n  match: 'true'\n  rules:\n    - exec: dmz\n")),
        LoadErrorKind::Yaml(m) if m.contains("unknown field")
    ));
    assert!(matches!(
        load_error(&format!("{HEAD}spec:\n  match: 'true'\n  rules:\n    - add: [NET_RAWW]\n")),
        LoadErrorKind::UnknownCapability { name, .. } if name == "NET_RAWW"
    ));
    assert!(matches!(
        load_error(&format!(
            "{HEAD}spec:\n  match: 'true &&'\n  rules:\n    - execPath: dmz\n"
        )),
        LoadErrorKind::CelCompile { .. }
    ));
    assert!(matches!(
        load_error(&format!(
            "{HEAD}spec:\n  match: \"pod.name\"\n  rules:\n    - execPath: dmz\n"
        )),
        LoadErrorKind::CelType { .. }
    ));
    assert!(matches!(
        load_error(&format!(
            "{HEAD}spec:\n  match: 'true'\n  rules:\n    - ambientExpression: \"1 + 1\"\n"
        )),
        LoadErrorKind::CelType { .. }
    ));
    assert!(matches!(
        load_error(&format!(
            "{HEAD}spec:\n  match: 'pdo.name == \"x\"'\n  rules:\n    - execPath: dmz\n"
        )),
        LoadErrorKind::CelUnknownVariable { .. }
    ));
    assert!(matches!(
        load_error(&format!(
            "{HEAD}spec:\n  match: 'true'\n  rules:\n    - name: nothing\n"
        )),
        LoadErrorKind::Schema { .. }
    ));
    assert!(matches!(
        load_error(
            "apiVersion: v1\nkind: CapabilityPolicy\nmetadata: {name: x}\nspec:\n  match: 'true'\n  rules:\n    - execPath: dmz\n"
        ),
        LoadErrorKind::Header { .. }
    ));
    assert!(matches!(
        load_error(&format!(
            "{HEAD}spec:\n  match: 'true'\n  rules:\n    - execPath: sometimes\n"
        )),
        LoadErrorKind::Yaml(_)
    ));
}

#[test]
fn error_positions_point_at_the_expression() {
    let yaml = format!(
        "{HEAD}spec:\n  match: 'true'\n  rules:\n    - when: 'container.user.uid =='\n      execPath: dmz\n"
    );
    let (_, errors) = PolicySet::from_sources(&[("f.yaml".into(), yaml)]);
    let text = errors.first().map(|e| e.to_string()).unwrap_or_default();
    assert!(text.starts_with("f.yaml:7:14:"), "{text}");
    assert!(text.contains("container.user.uid =="), "{text}");
}

#[test]
fn duplicate_names_and_strict_directory() {
    let p = format!("{HEAD}spec:\n  match: 'true'\n  rules:\n    - execPath: dmz\n");
    let (ps, errors) =
        PolicySet::from_sources(&[("a.yaml".into(), p.clone()), ("b.yaml".into(), p.clone())]);
    assert_eq!(ps.policy_names(), vec!["x"]);
    assert!(matches!(
        errors.first().map(|e| &e.kind),
        Some(LoadErrorKind::DuplicateName { .. })
    ));

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("good.yaml"), &p).unwrap_or_else(|e| panic!("{e}"));
    assert!(PolicySet::load_dir_strict(dir.path()).is_ok());
    std::fs::write(dir.path().join("bad.yaml"), "nope: [").unwrap_or_else(|e| panic!("{e}"));
    assert!(PolicySet::load_dir_strict(dir.path()).is_err());
    let (lenient, errors) = PolicySet::load_dir(dir.path());
    assert_eq!(lenient.policy_names(), vec!["x"]);
    assert_eq!(errors.len(), 1);
    let (report, ok) = cli_check(&[dir.path().to_path_buf()]);
    assert!(!ok);
    assert!(report.contains("bad.yaml:1:"), "{report}");
}

#[test]
fn recommended_set_passes_check() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policy");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    assert!(files.len() >= 2);
    for f in files {
        let (report, ok) = cli_check(std::slice::from_ref(&f));
        assert!(ok, "{}: {report}", f.display());
    }
}

#[test]
fn cli_eval_with_crictl_json() {
    let pod = r#"{"metadata": {"name": "nginx-sandbox", "namespace": "default", "uid": "u1", "attempt": 1},
                 "linux": {}, "log_directory": "/tmp"}"#;
    let ctr = r#"{"metadata": {"name": "nginx"}, "image": {"image": "nginx"},
                 "command": ["/usr/sbin/nginx"],
                 "linux": {"security_context": {"run_as_user": {"value": 101},
                   "capabilities": {"add_capabilities": ["NET_BIND_SERVICE"]}}}}"#;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policy");
    let mut image = ImageFacts::default();
    image
        .file_caps
        .insert("/usr/sbin/nginx".into(), fcap(CapSet::empty(), false));
    let table = cli_eval(Some(&dir), pod, ctr, Some(image.clone()), false)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        table.contains("ambient      CAP_NET_BIND_SERVICE"),
        "{table}"
    );
    assert!(table.contains("decision     ALLOWED"), "{table}");
    let json = cli_eval(Some(&dir), pod, ctr, Some(image), true).unwrap_or_else(|e| panic!("{e}"));
    let d: capcri::capabilities::policy::Decision =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.caps.ambient, set([NetBindService]));
    assert!(cli_eval(Some(&dir), "{", ctr, None, false).is_err());
}

/// The example deny policy of `policy/`, enabled.
fn deny_sys_admin_enabled() -> String {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policy/90-example-deny-sys-admin.yaml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
    assert!(text.contains("match: \"false\""));
    text.replace("match: \"false\"", "match: \"true\"")
}

/// Issue 12 item 5: every spelling that puts CAP_SYS_ADMIN in the sets the
/// kernel gets is denied by the example policy, and every decision the
/// policy allows leaves CAP_SYS_ADMIN out of every set.
#[test]
fn deny_holds_for_every_spelling() {
    let ps = policies(&[&deny_sys_admin_enabled()]);
    // (name, add, drop, privileged, policy add, denied)
    #[allow(clippy::type_complexity)]
    let cases: &[(&str, &[&str], &[&str], bool, bool)] = &[
        ("canonical", &["SYS_ADMIN"], &[], false, true),
        ("prefixed", &["CAP_SYS_ADMIN"], &[], false, true),
        ("lower", &["sys_admin"], &[], false, true),
        ("lower prefixed", &["cap_sys_admin"], &[], false, true),
        ("mixed case", &["Sys_Admin"], &[], false, true),
        ("leading space", &[" SYS_ADMIN"], &[], false, true),
        ("trailing space", &["SYS_ADMIN "], &[], false, true),
        ("tab and newline", &["\tcap_sys_admin\n"], &[], false, true),
        ("ALL", &["ALL"], &[], false, true),
        ("all", &["all"], &[], false, true),
        ("spaced all", &[" All "], &[], false, true),
        (
            "drop ALL then add lower",
            &["sys_admin"],
            &["ALL"],
            false,
            true,
        ),
        ("drop all then add ALL", &["ALL"], &["all"], false, false),
        (
            "ALL minus sys_admin",
            &["ALL"],
            &["sys_admin"],
            false,
            false,
        ),
        (
            "add then drop spelled apart",
            &["SYS_ADMIN"],
            &[" cap_sys_admin"],
            false,
            false,
        ),
        ("privileged", &[], &[], true, true),
        ("nothing", &["NET_ADMIN"], &[], false, false),
    ];
    for (name, add, drop, privileged, denied) in cases {
        let mut f = facts(0, add, "/bin/app");
        f.container.capabilities.drop = drop.iter().map(|s| s.to_string()).collect();
        f.container.privileged = *privileged;
        let d = ps.evaluate(&f, &fs_plain());
        assert_eq!(!d.allowed, *denied, "{name}: {:?}", d.deny_message);
        if d.allowed {
            for s in [
                d.caps.bounding,
                d.caps.effective,
                d.caps.permitted,
                d.caps.ambient,
            ] {
                assert!(!s.contains(SysAdmin), "{name}: {s}");
            }
        } else {
            let msg = d.deny_message.unwrap_or_default();
            assert!(
                msg.contains("no-sys-admin-outside-kube-system"),
                "{name}: {msg}"
            );
        }
    }
    // A policy action that adds it, in any spelling, is denied too.
    for spelling in ["sys_admin", "CAP_SYS_ADMIN", "ALL"] {
        let adder = format!(
            "apiVersion: capcri.dev/v1alpha1\nkind: CapabilityPolicy\nmetadata: {{name: adder}}\nspec:\n  match: 'true'\n  rules:\n    - add: [\"{spelling}\"]\n"
        );
        let ps = policies(&[&adder, &deny_sys_admin_enabled()]);
        let d = ps.evaluate(&facts(0, &[], "/bin/app"), &fs_plain());
        assert!(!d.allowed, "policy add {spelling:?}");
    }
    // kube-system keeps it.
    let mut f = facts(0, &["sys_admin"], "/bin/app");
    f.pod.namespace = "kube-system".into();
    let d = ps.evaluate(&f, &fs_plain());
    assert!(d.allowed && d.caps.bounding.contains(SysAdmin));
}

/// CEL sees canonical names (ALL expanded, addAll/dropAll flags), so even a
/// rule written on the request instead of `granted` matches every spelling.
#[test]
fn cel_sees_canonical_names() {
    let ps = policies(&[r#"
apiVersion: capcri.dev/v1alpha1
kind: CapabilityPolicy
metadata: {name: on-request}
spec:
  match: "true"
  rules:
    - deny:
        condition: "'SYS_ADMIN' in container.capabilities.add && !('SYS_ADMIN' in container.capabilities.drop)"
        message: "no SYS_ADMIN"
    - deny:
        condition: "container.capabilities.add.exists(c, c.startsWith('CAP_') || !c.matches('^[A-Z_]+$') || c.matches('^ALL$'))"
        message: "a non-canonical name reached CEL"
    - deny:
        condition: "container.capabilities.addAll && size(container.capabilities.add) != 41"
        message: "ALL was not expanded"
"#]);
    for add in [
        &["sys_admin"][..],
        &[" CAP_SYS_ADMIN "],
        &["all"],
        &["ALL", "net_admin"],
    ] {
        let d = ps.evaluate(&facts(0, add, "/bin/app"), &fs_plain());
        let msg = d.deny_message.unwrap_or_default();
        assert!(msg.contains("no SYS_ADMIN"), "{add:?}: {msg}");
        assert!(
            !msg.contains("non-canonical") && !msg.contains("not expanded"),
            "{add:?}: {msg}"
        );
    }
    let mut f = facts(0, &["ALL"], "/bin/app");
    f.container.capabilities.drop = vec!["Sys_Admin".into()];
    assert!(ps.evaluate(&f, &fs_plain()).allowed);
}

/// `granted` is known only after the sets: reading it anywhere but a deny
/// condition is a load error, and a deny on it sees the final sets.
#[test]
fn granted_is_for_deny_conditions_only() {
    for field in [
        "match: \"'KILL' in granted.bounding\"\n  rules:\n    - execPath: dmz",
        "match: 'true'\n  rules:\n    - when: \"size(granted.ambient) > 0\"\n      execPath: dmz",
        "match: 'true'\n  rules:\n    - ambientExpression: \"granted.bounding\"",
    ] {
        let kind = load_error(&format!("{HEAD}spec:\n  {field}\n"));
        assert!(
            matches!(kind, LoadErrorKind::GrantedOutsideDeny { .. }),
            "{kind}"
        );
    }
    let ps = policies(&[r#"
apiVersion: capcri.dev/v1alpha1
kind: CapabilityPolicy
metadata: {name: g}
spec:
  match: "true"
  rules:
    - drop: [NET_RAW]
    - deny:
        condition: "'NET_RAW' in granted.bounding || !('CHOWN' in granted.effective) || size(granted.ambient) != 0"
        message: "granted is wrong"
"#]);
    assert!(
        ps.evaluate(&facts(0, &["net_raw"], "/bin/app"), &fs_plain())
            .allowed
    );
}

/// An unknown name is the one error on every path: policy check, policy
/// eval and the engine (the CRI path refuses it first with the same text).
#[test]
fn unknown_capability_is_one_error_everywhere() {
    let want = |text: &str| {
        assert!(
            text.contains("\"SYS_WIZARD\"")
                && text.contains("CAP_ prefix")
                && text.contains("SYS_ADMIN"),
            "{text}"
        )
    };
    for list in ["add", "drop", "ambient"] {
        let kind = load_error(&format!(
            "{HEAD}spec:\n  match: 'true'\n  rules:\n    - {list}: [SYS_WIZARD]\n"
        ));
        assert!(
            matches!(&kind, LoadErrorKind::UnknownCapability { name, .. } if name == "SYS_WIZARD")
        );
        want(&kind.to_string());
    }
    for list in ["add", "drop", "add_ambient"] {
        let mut f = facts(0, &[], "/bin/app");
        match list {
            "add" => f.container.capabilities.add = vec!["SYS_WIZARD".into()],
            "drop" => f.container.capabilities.drop = vec!["SYS_WIZARD".into()],
            _ => f.container.capabilities.add_ambient = vec!["SYS_WIZARD".into()],
        }
        let d = PolicySet::builtin().evaluate(&f, &fs_plain());
        assert!(!d.allowed, "{list}");
        want(&d.deny_message.unwrap_or_default());
    }
    let pod = r#"{"metadata": {"name": "p", "namespace": "default", "uid": "u1"}, "linux": {}}"#;
    let ctr = r#"{"metadata": {"name": "c"}, "image": {"image": "x"}, "command": ["/bin/app"],
                 "linux": {"security_context": {"capabilities": {"drop_capabilities": ["SYS_WIZARD"]}}}}"#;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policy");
    let err = cli_eval(Some(&dir), pod, ctr, None, false).unwrap_err();
    want(&err.to_string());
}

/// The typed CEL environment (issue 17 item 2): a field the facts do not
/// have, a wrong type and a capability name that does not exist are load
/// errors at the offending node's file:line:column, naming the valid
/// fields (or the nearest one), instead of a rule that denies every
/// container at run time.
#[test]
fn typed_check_refuses_with_the_position_and_the_fix() {
    let cases: &[(&str, usize, usize, &str)] = &[
        // (yaml after HEAD, line, column, text); the column is the node's:
        // the `.` of a selection, the operator, the literal (as cel-go).
        (
            "spec:\n  match: \"container.nme == 'web'\"\n  rules:\n    - execPath: dmz\n",
            5,
            20,
            "container has no field `nme`; did you mean container.name?",
        ),
        (
            "spec:\n  match: 'true'\n  rules:\n    - when: \"container.user.uid == 'root'\"\n      execPath: dmz\n",
            7,
            33,
            "cannot compare a int with a string",
        ),
        (
            "spec:\n  match: 'true'\n  rules:\n    - deny:\n        condition: >-\n          pod.namespace != 'kube-system' &&\n          'SYS_ADMN' in granted.bounding\n        message: no\n",
            10,
            11,
            "did you mean 'SYS_ADMIN'?",
        ),
        (
            "spec:\n  match: 'true'\n  rules:\n    - deny:\n        condition: \"'CAP_NET_RAW' in granted.effective\"\n        message: no\n",
            8,
            21,
            "write 'NET_RAW'",
        ),
        (
            "spec:\n  match: 'true'\n  rules:\n    - ambientExpression: \"['NET_BIND_SERVICE', 'NET_BIND']\"\n",
            7,
            48,
            "'NET_BIND' is not a Linux capability",
        ),
    ];
    for (body, line, column, text) in cases {
        let yaml = format!("{HEAD}{body}");
        let (set, errors) = PolicySet::from_sources(&[("p.yaml".into(), yaml.clone())]);
        assert!(set.policy_names().is_empty(), "{yaml}");
        let e = errors.first().unwrap_or_else(|| panic!("no error: {yaml}"));
        let shown = e.to_string();
        assert!(shown.contains(text), "{shown}");
        assert_eq!(
            (e.location.line, e.location.column),
            (*line, *column),
            "{shown}\n{yaml}"
        );
        assert!(matches!(e.kind, LoadErrorKind::CelCheck { .. }), "{shown}");
    }
    // `policy check` prints the same, with the list of valid fields.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        format!(
            "{HEAD}spec:\n  match: \"container.nme == 'web'\"\n  rules:\n    - execPath: dmz\n"
        ),
    )
    .unwrap();
    let (report, ok) = cli_check(&[dir.path().to_path_buf()]);
    assert!(!ok, "{report}");
    assert!(report.contains("bad.yaml:5:20:"), "{report}");
    assert!(
        report.contains("its fields are name, command, args, workingDir, env, user, capabilities"),
        "{report}"
    );
}

/// The recommended set ships with its cases and passes them; a case that
/// expects something else fails with a diff (issue 17 item 5).
#[test]
fn policy_test_kit_runs_the_recommended_cases() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policy");
    let (report, ok) = cli_test(&repo);
    assert!(ok, "{report}");
    assert!(report.contains(" passed, 0 failed"), "{report}");
    // A copy whose cases expect the sysctls off: the diff names the field.
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&repo).unwrap().flatten() {
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    std::fs::write(
        dir.path().join("off_test.yaml"),
        "apiVersion: capcri.dev/v1alpha1\nkind: CapabilityPolicyTest\ncases:\n  - name: expects no sysctls\n    container: {command: [/bin/app]}\n    files: {/bin/app: {}}\n    expect: {sysctls: {}}\n",
    )
    .unwrap();
    let (report, ok) = cli_test(dir.path());
    assert!(!ok, "{report}");
    assert!(report.contains("FAIL"), "{report}");
    assert!(report.contains("expects no sysctls"), "{report}");
    assert!(report.contains("    --- expected {}"), "{report}");
    assert!(
        report.contains("net.ipv4.ip_unprivileged_port_start"),
        "{report}"
    );
    // The loader never takes a *_test.yaml for a policy.
    assert!(PolicySet::load_dir_strict(dir.path()).is_ok());
}
