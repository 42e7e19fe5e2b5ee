//! The pod-level decision of RunPodSandbox: the network sysctls the
//! policies set in the pod's network namespace. Only policies whose match
//! reads nothing but `pod` and `node` take part, and only rules whose
//! `when` does too (the loader refuses a sysctl rule anywhere else), since
//! no container exists yet.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use cel::{Context, Value};
use serde::{Deserialize, Serialize};

use super::compile::CompiledExpr;
use super::facts::{CelVars, Facts, NodeFacts, PodFacts};
use super::load::PolicySet;
use super::sysctls::{SysctlOutcome, SysctlRequest, SysctlSetting, resolve};

/// What RunPodSandbox decided for the pod's network namespace, stored with
/// the pod and shown by `capcri explain POD` and the verbose status.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodDecision {
    pub sysctls: Vec<SysctlSetting>,
    pub warnings: Vec<String>,
}

impl PodDecision {
    /// The settings to write, as `(key, value)`.
    pub fn to_write(&self) -> impl Iterator<Item = &SysctlSetting> {
        self.sysctls
            .iter()
            .filter(|s| s.outcome == SysctlOutcome::Applied)
    }
}

fn pod_level(e: &CompiledExpr) -> bool {
    CelVars::POD.union(CelVars::NODE).contains(e.vars)
}

impl PolicySet {
    /// Whether any loaded rule sets a sysctl (so RunPodSandbox pays for a
    /// pod evaluation only when one does).
    pub fn sets_sysctls(&self) -> bool {
        self.policies
            .iter()
            .any(|p| p.rules.iter().any(|r| !r.sysctls.is_empty()))
    }

    /// Decides the pod's network sysctls. A CEL error in a match or when
    /// leaves that policy's or rule's sysctls unwritten, with a warning:
    /// failing closed here means not relaxing the kernel's defaults.
    pub fn evaluate_pod(&self, pod: &PodFacts, node: &NodeFacts) -> PodDecision {
        let mut decision = PodDecision::default();
        if !self.sets_sysctls() {
            return decision;
        }
        let facts = Facts {
            pod: pod.clone(),
            node: node.clone(),
            ..Facts::default()
        };
        let entry = Default::default();
        let mut ctx = Context::with_env(Arc::clone(&self.env));
        facts.bind(
            &mut ctx,
            CelVars::POD.union(CelVars::NODE),
            Default::default(),
            &entry,
        );
        let mut memo: HashMap<String, bool> = HashMap::new();
        let mut truthy = |e: &CompiledExpr, what: &str, warnings: &mut Vec<String>| -> bool {
            if let Some(v) = memo.get(&e.source) {
                return *v;
            }
            let v = match e.program.execute(&ctx) {
                Ok(Value::Bool(b)) => b,
                Ok(other) => {
                    warnings.push(format!(
                        "{what} `{}` returned {} instead of a bool; its sysctls are not written (fix the policy at {})",
                        e.source,
                        other.type_of(),
                        e.location
                    ));
                    false
                }
                Err(err) => {
                    warnings.push(format!(
                        "{what} `{}` failed: {err}; its sysctls are not written (fix the policy at {})",
                        e.source, e.location
                    ));
                    false
                }
            };
            memo.insert(e.source.clone(), v);
            v
        };
        let mut requests = Vec::new();
        for policy in &self.policies {
            if !policy.rules.iter().any(|r| !r.sysctls.is_empty())
                || !pod_level(&policy.match_expression)
            {
                continue;
            }
            if !truthy(
                &policy.match_expression,
                &format!("{} match", policy.source),
                &mut decision.warnings,
            ) {
                continue;
            }
            for rule in policy.rules.iter().filter(|r| !r.sysctls.is_empty()) {
                if let Some(when) = &rule.when
                    && !(pod_level(when)
                        && truthy(
                            when,
                            &format!("{} when", rule.source),
                            &mut decision.warnings,
                        ))
                {
                    continue;
                }
                requests.extend(rule.sysctls.iter().map(|(key, value)| SysctlRequest {
                    key: key.clone(),
                    value: value.clone(),
                    source: rule.source.clone(),
                }));
            }
        }
        decision.sysctls = resolve(&requests, pod);
        decision
    }
}

/// The pod decision as a table (`capcri explain POD`).
pub fn render_pod_table(d: &PodDecision) -> String {
    let mut out = String::new();
    if d.sysctls.is_empty() {
        let _ = writeln!(out, "sysctls      none set by policy");
    } else {
        let _ = writeln!(out, "sysctls:");
        render_sysctls(&mut out, &d.sysctls);
    }
    if !d.warnings.is_empty() {
        let _ = writeln!(out, "warnings:");
        for w in &d.warnings {
            let _ = writeln!(out, "  - {w}");
        }
    }
    out
}

/// One line per setting: key = value, outcome, the rule, why.
pub(crate) fn render_sysctls(out: &mut String, settings: &[SysctlSetting]) {
    for s in settings {
        let _ = writeln!(
            out,
            "  {} = {:?}  {}  ({})  {}",
            s.key,
            s.value,
            s.outcome.label(),
            s.source,
            s.reason
        );
    }
}
