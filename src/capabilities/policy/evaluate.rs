//! Evaluation and merging. The merge order, which `explain` also shows:
//!
//! 1. Base set. `privileged`: every capability, nothing ambient, and no
//!    policy capability change applies (privileged keeps its meaning).
//!    Otherwise Docker's 14 defaults, then the container's own
//!    `capabilities.add`/`drop` as containerd applies them (`ALL` first,
//!    then add, then drop).
//! 2. Policies in `metadata.name` order, rules in file order. A policy
//!    applies when `match` is true; a rule when `when` is absent or true.
//!    Adds join the bounding set; drops leave it, and a drop wins over any
//!    add of any policy.
//! 3. Ambient promotion: rule `ambient`/`ambientExpression` lists and the
//!    CRI `add_ambient_capabilities` request (unless a rule says
//!    `ambientRequests: refuse`; the last rule that says anything wins).
//!    A capability outside the bounding set is never promoted (warning).
//!    Promotion adds to inheritable too, since the kernel requires
//!    ambient ⊆ permitted ∩ inheritable.
//! 4. `execPath` and `preflight`: the last rule that sets one wins; built-in
//!    `direct` and `off`, which is what containerd does.
//! 5. Deny wins: any true deny condition, and any CEL runtime error (in
//!    `match`, `when`, a deny condition or an ambient expression: fail
//!    closed), denies the container with a message naming the policy.
//!    Deny conditions of the applying rules run last, with `granted` bound
//!    to the sets decided by steps 1-4, so a rule can refuse what will
//!    actually be granted whatever spelling or route put it there.
//!
//! Capability names are normalised once ([`crate::capabilities::kernel::CapList`]) before
//! any of this: the sets and CEL's `container.capabilities` come from the
//! same parse.

use std::collections::HashMap;
use std::sync::Arc;

use cel::{Context, ExecutionError, Value};

use super::compile::{CompiledExpr, Expect};
use super::decision::{Decision, ExecPath, Reason};
use super::document::{AmbientRequests, ExecPathMode, PreflightMode};
use super::facts::{CelVars, EntrypointFacts, Facts, RequestedCaps, bind_granted};
use super::load::PolicySet;
use super::preflight::{ResolvedBinary, RootfsView, resolve_entrypoint};
use crate::capabilities::kernel::{
    CapList, Capability, ExecIdentity, ExecveError, FileCaps, ThreadCaps, all_capabilities,
    container_bounding, docker_default_capabilities, predict_execve,
};

const BUILTIN: &str = "built-in default";
const CONTAINER: &str = "container securityContext";

struct Eval<'a> {
    ctx: Context<'a, 'a>,
    /// Results by expression text. CEL is pure and every expression of a
    /// set sees the same variables, so policies that share an expression
    /// (a common `match`, say) pay for it once per decision.
    memo: HashMap<&'a str, Result<Value, ExecutionError>>,
    reasons: Vec<Reason>,
    warnings: Vec<String>,
    denies: Vec<String>,
}

impl<'a> Eval<'a> {
    fn reason(&mut self, subject: impl Into<String>, source: &str, text: impl Into<String>) {
        self.reasons.push(Reason {
            subject: subject.into(),
            source: source.to_string(),
            text: text.into(),
        });
    }

    /// Runs `expr`; a runtime error or a wrong type is a deny naming
    /// `source` (fail closed) and yields None.
    fn run(
        &mut self,
        expr: &'a CompiledExpr,
        expect: Expect,
        source: &str,
        field: &str,
    ) -> Option<Value> {
        let result = match self.memo.get(expr.source.as_str()) {
            Some(r) => r.clone(),
            None => {
                let r = expr.program.execute(&self.ctx);
                self.memo.insert(&expr.source, r.clone());
                r
            }
        };
        match result {
            Ok(v) if expect.accepts(&v) => Some(v),
            Ok(v) => {
                self.denies.push(format!(
                    "{source}: {field} `{}` returned {} instead of a {}; denied (fail closed), fix the policy at {}",
                    expr.source,
                    v.type_of(),
                    match expect {
                        Expect::Bool => "bool",
                        Expect::StringList => "list of capability names",
                    },
                    expr.location
                ));
                None
            }
            Err(e) => {
                self.denies.push(format!(
                    "{source}: {field} `{}` failed: {e}; denied (fail closed), fix the policy at {}",
                    expr.source, expr.location
                ));
                None
            }
        }
    }

    fn truthy(&mut self, expr: &'a CompiledExpr, source: &str, field: &str) -> bool {
        matches!(
            self.run(expr, Expect::Bool, source, field),
            Some(Value::Bool(true))
        )
    }
}

/// A request from a policy rule or from the CRI, with where it came from.
struct Request {
    cap: Capability,
    source: String,
}

/// The outcome of each exec path, for `auto` and for the invariance tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPredictions {
    pub direct: Result<ThreadCaps, ExecveError>,
    pub dmz: Result<ThreadCaps, ExecveError>,
}

/// Predicts the user process's sets along both exec paths: the dmz
/// trampoline is one more execve of a binary without file capabilities.
pub fn predict_paths(
    caps: &ThreadCaps,
    entry: Option<&FileCaps>,
    uid: u32,
    no_new_privs: bool,
) -> PathPredictions {
    predict_paths_as(caps, entry, ExecIdentity::uid(uid), no_new_privs)
}

/// [`predict_paths`] for an entrypoint that may be set-uid/set-gid
/// (`entry_id`); the trampoline itself is neither.
pub fn predict_paths_as(
    caps: &ThreadCaps,
    entry: Option<&FileCaps>,
    entry_id: ExecIdentity,
    no_new_privs: bool,
) -> PathPredictions {
    let plain = ExecIdentity::uid(entry_id.ruid);
    PathPredictions {
        direct: predict_execve(caps, entry, entry_id, no_new_privs),
        dmz: predict_execve(caps, None, plain, no_new_privs)
            .and_then(|t| predict_execve(&t, entry, entry_id, no_new_privs)),
    }
}

/// Who the entrypoint's execve makes the process: its uid, and the
/// entrypoint's set-id bits where they change it.
fn entry_identity(uid: u32, gid: u32, entry: Option<&ResolvedBinary>) -> ExecIdentity {
    let mut id = ExecIdentity::uid(uid);
    if let Some(e) = entry {
        id.setuid = e.set_id.setuid;
        id.setgid = e.set_id.setgid.is_some_and(|g| g != gid);
    }
    id
}

/// Whether `auto` may choose dmz: the predictor shows both paths give the
/// same outcome, and (belt and braces, since a set-uid bit is not in the
/// facts) the process is root, or its sets are already what an execve
/// without file caps leaves (ambient = effective = permitted) and the
/// entrypoint has no file caps.
pub fn auto_allows_dmz(caps: &ThreadCaps, entry: Option<&FileCaps>, uid: u32, nnp: bool) -> bool {
    auto_allows_dmz_as(caps, entry, ExecIdentity::uid(uid), nnp)
}

/// [`auto_allows_dmz`] for a possibly set-id entrypoint: a set-id
/// entrypoint (that no_new_privs does not neutralise) keeps `direct`.
fn auto_allows_dmz_as(
    caps: &ThreadCaps,
    entry: Option<&FileCaps>,
    id: ExecIdentity,
    nnp: bool,
) -> bool {
    let p = predict_paths_as(caps, entry, id, nnp);
    let set_id = !nnp && (id.setuid.is_some() || id.setgid);
    let stable = id.ruid == 0
        || (entry.is_none()
            && !set_id
            && caps.ambient == caps.effective
            && caps.ambient == caps.permitted);
    p.direct == p.dmz && stable
}

impl PolicySet {
    /// The CEL variables any loaded expression reads.
    fn cel_vars(&self) -> CelVars {
        let mut vars = CelVars::default();
        for policy in &self.policies {
            vars = vars.union(policy.match_expression.vars);
            for rule in &policy.rules {
                let exprs = [
                    rule.when.as_ref(),
                    rule.ambient_expression.as_ref(),
                    rule.deny.as_ref().map(|(c, _)| c),
                ];
                for e in exprs.into_iter().flatten() {
                    vars = vars.union(e.vars);
                }
            }
        }
        vars
    }

    /// Decides the capability sets, exec path and admission of one
    /// container. Never panics; every problem is a deny or a warning.
    pub fn evaluate(&self, facts: &Facts, rootfs: &dyn RootfsView) -> Decision {
        let c = &facts.container;
        // The entrypoint, resolved once: CEL sees it as
        // `container.entrypoint`, and the predictions below use it.
        let argv = facts.argv();
        let working_dir = if c.working_dir.is_empty() {
            &facts.image.working_dir
        } else {
            &c.working_dir
        };
        let entry: Option<ResolvedBinary> = argv
            .first()
            .and_then(|a0| resolve_entrypoint(rootfs, a0, &facts.path_env(), working_dir));
        let entry_facts = EntrypointFacts {
            path: entry.as_ref().map(|e| e.path.clone()).unwrap_or_default(),
            found: entry.is_some(),
            setuid: entry.as_ref().is_some_and(|e| e.set_id.setuid.is_some()),
            setgid: entry.as_ref().is_some_and(|e| e.set_id.setgid.is_some()),
            file_caps: entry
                .as_ref()
                .and_then(|e| e.file_caps)
                .map(|f| f.permitted)
                .unwrap_or_default(),
        };
        let mut ev = Eval {
            ctx: Context::with_env(Arc::clone(&self.env)),
            memo: HashMap::new(),
            reasons: Vec::new(),
            warnings: Vec::new(),
            denies: Vec::new(),
        };
        let vars = self.cel_vars();
        // The one normalisation of the container's capability names: the
        // sets below and every CEL expression use its result.
        let requested = match facts.container.capabilities.lists() {
            Ok(r) => r,
            Err(e) => {
                ev.denies.push(format!("{CONTAINER} {e}"));
                RequestedCaps::default()
            }
        };
        facts.bind(&mut ev.ctx, vars, requested, &entry_facts);
        let privileged = c.privileged;

        // 1. Base set.
        let mut bounding = if privileged {
            ev.reason("bounding", CONTAINER, "privileged: every capability");
            all_capabilities()
        } else {
            let base = docker_default_capabilities();
            for cap in base.iter() {
                ev.reason(
                    format!("bounding:{cap}"),
                    BUILTIN,
                    "Docker/containerd default set",
                );
            }
            base
        };
        if !privileged {
            let (add, drop) = (requested.add, requested.drop);
            if add.all {
                ev.reason("bounding", CONTAINER, "capabilities.add: ALL");
            }
            if drop.all {
                ev.reason("bounding", CONTAINER, "capabilities.drop: ALL");
            }
            for cap in add.named.iter() {
                ev.reason(format!("bounding:{cap}"), CONTAINER, "capabilities.add");
            }
            for cap in drop.named.iter() {
                ev.reason(format!("drop:{cap}"), CONTAINER, "capabilities.drop");
            }
            bounding = container_bounding(false, add, drop);
        }

        // 2.-4. Policies.
        let mut adds: Vec<Request> = Vec::new();
        let mut drops: Vec<Request> = Vec::new();
        let mut promotions: Vec<Request> = Vec::new();
        let mut ambient_requests = (AmbientRequests::Allow, BUILTIN.to_string());
        let mut exec_mode = (ExecPathMode::Direct, BUILTIN.to_string());
        let mut preflight = (PreflightMode::Off, BUILTIN.to_string());
        let mut deny_rules = Vec::new();
        for policy in &self.policies {
            if !ev.truthy(&policy.match_expression, &policy.source, "match") {
                continue;
            }
            for rule in &policy.rules {
                let source = &rule.source;
                if let Some(when) = &rule.when
                    && !ev.truthy(when, source, "when")
                {
                    continue;
                }
                // Evaluated once the sets exist, so a condition may read
                // `granted` (deny never changes the sets).
                if let Some((cond, message)) = &rule.deny {
                    deny_rules.push((cond, message, source));
                }
                adds.extend(rule.add.iter().map(|cap| Request {
                    cap,
                    source: source.clone(),
                }));
                drops.extend(rule.drop.iter().map(|cap| Request {
                    cap,
                    source: source.clone(),
                }));
                promotions.extend(rule.ambient.iter().map(|cap| Request {
                    cap,
                    source: source.clone(),
                }));
                if let Some(expr) = &rule.ambient_expression
                    && let Some(Value::List(items)) =
                        ev.run(expr, Expect::StringList, source, "ambientExpression")
                {
                    {
                        for item in items.iter() {
                            let Value::String(name) = item else { continue };
                            match CapList::parse([name.as_str()]) {
                                Ok(list) => promotions.extend(list.expanded().iter().map(|cap| Request { cap, source: source.clone() })),
                                Err(e) => ev.denies.push(format!(
                                    "{source}: ambientExpression `{}` returned {e}; denied (fail closed)",
                                    expr.source
                                )),
                            }
                        }
                    }
                }
                if let Some(a) = rule.ambient_requests {
                    ambient_requests = (a, source.clone());
                }
                if let Some(m) = rule.exec_path {
                    exec_mode = (m, source.clone());
                }
                if let Some(m) = rule.preflight {
                    preflight = (m, source.clone());
                }
            }
        }

        if privileged {
            if !adds.is_empty() || !drops.is_empty() || !promotions.is_empty() {
                ev.warnings.push(
                    "privileged container: policy capability changes and promotions are not applied (privileged means every capability)".into(),
                );
            }
        } else {
            for r in &adds {
                if bounding.insert(r.cap) || !drops.iter().any(|d| d.cap == r.cap) {
                    ev.reason(format!("bounding:{}", r.cap), &r.source, "added by policy");
                }
            }
            for r in &drops {
                if bounding.remove(r.cap) {
                    ev.reason(
                        format!("drop:{}", r.cap),
                        &r.source,
                        "dropped by policy (drop wins over add)",
                    );
                }
            }
        }
        let mut caps = ThreadCaps::runtime_default(bounding);

        // 3. Ambient.
        if !privileged {
            let (mode, mode_source) = &ambient_requests;
            for cap in requested.add_ambient.expanded().iter() {
                if *mode == AmbientRequests::Allow {
                    promotions.push(Request {
                        cap,
                        source: format!(
                            "{CONTAINER} addAmbientCapabilities (allowed by {mode_source})"
                        ),
                    });
                } else {
                    ev.warnings.push(format!(
                        "ambient request for {cap} refused by {mode_source}"
                    ));
                }
            }
        }
        for r in &promotions {
            if privileged {
                continue;
            }
            if !caps.bounding.contains(r.cap) {
                ev.warnings.push(format!(
                    "{} asks to promote {} to ambient, but it is not in the bounding set; not promoted (add it to the container's capabilities.add)",
                    r.source, r.cap
                ));
                continue;
            }
            if caps.ambient.insert(r.cap) {
                caps.inheritable.insert(r.cap);
                ev.reason(
                    format!("ambient:{}", r.cap),
                    &r.source,
                    "promoted to ambient",
                );
                ev.reason(
                    format!("inheritable:{}", r.cap),
                    &r.source,
                    "required for ambient (kernel: ambient ⊆ permitted ∩ inheritable)",
                );
            }
        }
        let violations = caps.ambient_violations();
        if !violations.is_empty() {
            ev.denies.push(format!(
                "internal: ambient capabilities {violations} are not in permitted ∩ inheritable ∩ bounding; the kernel would refuse PR_CAP_AMBIENT_RAISE"
            ));
        }

        // Entrypoint and predictions.
        match (&entry, argv.first()) {
            (None, Some(a0)) => ev.warnings.push(format!(
                "entrypoint {a0:?} not found in the image; its file capabilities and the effect of the exec path cannot be predicted"
            )),
            (None, None) => ev.warnings.push(
                "the container has no command and the image no entrypoint; nothing to predict".into(),
            ),
            _ => {}
        }
        let entry_caps = entry.as_ref().and_then(|e| e.file_caps);
        if let (Some(e), Some(_)) = (&entry, entry_caps)
            && !caps.ambient.is_empty()
        {
            {
                let text = format!(
                    "has no effect: {} has file capabilities, and execve of a file with file capabilities clears the ambient set",
                    e.path
                );
                ev.warnings.push(format!("ambient promotion {text}"));
                ev.reason("ambient", "kernel rule", text);
            }
        }
        let uid = c.user.uid;
        let nnp = c.no_new_privs;
        let entry_id = entry_identity(uid, c.user.gid, entry.as_ref());
        if let Some(e) = &entry {
            let bits = e.set_id;
            if bits.setuid.is_some() || bits.setgid.is_some() {
                let what = match (bits.setuid, bits.setgid) {
                    (Some(o), Some(g)) => format!("set-uid (owner {o}) and set-gid (group {g})"),
                    (Some(o), None) => format!("set-uid (owner {o})"),
                    (None, Some(g)) => format!("set-gid (group {g})"),
                    (None, None) => unreachable!("checked above"),
                };
                let effect = if nnp {
                    "no_new_privs makes execve ignore the bits".to_string()
                } else if entry_id.setuid == Some(0) && uid != 0 {
                    "execve makes the process euid 0: it gets the whole bounding set, and the ambient set is cleared".to_string()
                } else if entry_id.setuid.is_some_and(|o| o != uid) || entry_id.setgid {
                    "execve changes the effective ids, which clears the ambient set".to_string()
                } else {
                    "the bits change no id for this user".to_string()
                };
                ev.reason(
                    "entrypoint",
                    "image",
                    format!("{} is {what}: {effect}", e.target),
                );
            }
        }
        let paths = predict_paths_as(&caps, entry_caps.as_ref(), entry_id, nnp);

        // 4. Exec path.
        let (mode, mode_source) = &exec_mode;
        let exec_path = match mode {
            ExecPathMode::Direct => {
                ev.reason(
                    "exec_path",
                    mode_source,
                    "direct: the runtime execs the user binary itself",
                );
                ExecPath::Direct
            }
            ExecPathMode::Dmz => {
                if entry.is_some() && paths.direct != paths.dmz {
                    ev.warnings.push(format!(
                        "exec path dmz (from {mode_source}) changes the capabilities of the user process: direct gives {}, dmz gives {}",
                        describe(&paths.direct),
                        describe(&paths.dmz)
                    ));
                }
                ev.reason("exec_path", mode_source, "dmz: set explicitly");
                ExecPath::Dmz
            }
            ExecPathMode::Auto => {
                if entry.is_none() {
                    ev.reason("exec_path", mode_source, "auto chose direct: the entrypoint is unknown, so dmz could change capability semantics");
                    ExecPath::Direct
                } else if auto_allows_dmz_as(&caps, entry_caps.as_ref(), entry_id, nnp) {
                    let why = if uid == 0 {
                        "the process is root, so the extra execve recomputes the same sets"
                    } else {
                        "ambient = effective = permitted and the entrypoint has no file capabilities, so the extra execve changes nothing"
                    };
                    ev.reason("exec_path", mode_source, format!("auto chose dmz: {why}"));
                    ExecPath::Dmz
                } else {
                    ev.reason(
                        "exec_path",
                        mode_source,
                        format!(
                            "auto chose direct: an extra execve would change the user process's capabilities (direct: {}; dmz: {})",
                            describe(&paths.direct),
                            describe(&paths.dmz)
                        ),
                    );
                    ExecPath::Direct
                }
            }
        };
        let chosen = match exec_path {
            ExecPath::Direct => &paths.direct,
            ExecPath::Dmz => &paths.dmz,
        };

        // Preflight.
        let (pmode, psource) = &preflight;
        let mut preflight_failed = false;
        if *pmode != PreflightMode::Off {
            ev.reason("preflight", psource, format!("{pmode:?}").to_lowercase());
            if let (Some(e), Some(fc)) = (&entry, entry_caps) {
                let problem = match chosen {
                    Err(ExecveError::FileCapsNotGranted { missing }) => Some(format!(
                        "entrypoint {} of container {:?} has file capabilities {} outside the bounding set, so execve fails with EPERM",
                        e.path, c.name, missing
                    )),
                    Ok(after) if !fc.permitted.is_subset(after.permitted) => Some(format!(
                        "entrypoint {} of container {:?} has file capabilities {} that the process will not get ({})",
                        e.path,
                        c.name,
                        fc.permitted.difference(after.permitted),
                        if fc.permitted.is_subset(caps.bounding) {
                            "no_new_privs limits the permitted set"
                        } else {
                            "not in the bounding set"
                        }
                    )),
                    _ => None,
                };
                if let Some(problem) = problem {
                    let missing = fc.permitted.difference(caps.bounding);
                    let names: Vec<&str> = missing.iter().map(|c| c.short_name()).collect();
                    let fix = if missing.is_empty() {
                        "fix: set allowPrivilegeEscalation: true, or grant the capability through ambient promotion and remove the file capability".to_string()
                    } else {
                        format!(
                            "fix: add {} to the container's securityContext.capabilities.add, or remove it from the file (setcap -r {} or setcap without it)",
                            names.join(", "),
                            e.target
                        )
                    };
                    let message = format!("{problem}; {fix}");
                    preflight_failed = true;
                    if *pmode == PreflightMode::Enforce {
                        ev.denies.push(format!("preflight ({psource}): {message}"));
                    } else {
                        ev.warnings.push(format!("preflight: {message}"));
                    }
                }
            }
            let entry_target = entry.as_ref().map(|e| e.target.as_str());
            for (path, fc) in rootfs.all_file_caps() {
                if Some(path.as_str()) == entry_target {
                    continue;
                }
                let missing = fc.permitted.difference(caps.bounding);
                if !missing.is_empty() {
                    ev.warnings.push(format!(
                        "{path} has file capabilities {missing} outside the bounding set: {}",
                        if fc.effective {
                            "executing it fails with EPERM"
                        } else {
                            "they will not be granted"
                        }
                    ));
                }
            }
        }

        // 5. Deny conditions, with `granted` bound to the sets decided above.
        if !deny_rules.is_empty() {
            if vars.contains(CelVars::GRANTED) {
                bind_granted(&mut ev.ctx, &caps);
            }
            for (cond, message, source) in deny_rules {
                if ev.truthy(cond, source, "deny.condition") {
                    ev.denies.push(format!("{source}: {message}"));
                    ev.reason("deny", source, message.clone());
                }
            }
        }

        // ExecSync/Exec processes (probes, kubectl exec) are started by the
        // monitor from the container's own process section and along its
        // exec path, so they get what its first process gets.
        ev.reason(
            "exec",
            "capcri runtime",
            format!(
                "ExecSync and Exec processes run like the first process: exec path {exec_path}, ambient {}, no_new_privs {nnp}, the same user, bounding set and seccomp filter",
                caps.ambient
            ),
        );
        let prediction = chosen.as_ref().ok().copied();
        if entry.is_some() {
            ev.reason(
                "prediction",
                "capabilities(7) execve rules",
                describe(chosen),
            );
        }
        let allowed = ev.denies.is_empty();
        Decision {
            allowed,
            deny_message: (!allowed).then(|| ev.denies.join("; ")),
            caps,
            exec_path,
            preflight: *pmode,
            preflight_failed,
            warnings: ev.warnings,
            reasons: ev.reasons,
            prediction: if entry.is_some() { prediction } else { None },
            sysctls: Vec::new(),
        }
    }
}

fn describe(r: &Result<ThreadCaps, ExecveError>) -> String {
    match r {
        Ok(t) => format!(
            "effective {}, permitted {}, ambient {}",
            t.effective, t.permitted, t.ambient
        ),
        Err(e) => e.to_string(),
    }
}
