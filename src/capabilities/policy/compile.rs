//! Turns policy documents into compiled policies: every CEL expression is
//! compiled once here, and checked against sample facts so that a wrong
//! return type or an unknown variable is a load error, not a surprise on
//! the first CreateContainer.

use std::sync::Arc;

use cel::{Context, Env, ExecutionError, Program, Value};

use super::check::{self, CheckError};
use super::document::{
    API_VERSION, AmbientRequests, ExecPathMode, KIND, PolicyDocument, PreflightMode, RuleSpec,
};
use super::error::{LoadError, LoadErrorKind, Location};
use super::facts::{CelVars, EntrypointFacts, Facts, UserFacts, bind_granted};
use super::sysctls;
use crate::capabilities::kernel::ThreadCaps;
use crate::capabilities::kernel::{CapList, CapSet};

/// A compiled CEL expression with where it was written.
#[derive(Debug)]
pub struct CompiledExpr {
    pub source: String,
    pub program: Program,
    pub location: Location,
    /// The CEL variables it reads, so evaluation binds only those.
    pub(crate) vars: CelVars,
}

/// What a CEL expression must return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    Bool,
    StringList,
}

/// Prefix of a checker message about the result type, so the load error
/// keeps its own kind ([`LoadErrorKind::CelType`]).
const RESULT_TYPE: &str = "result type: ";

impl Expect {
    /// The statically known result type must fit; capability names in a
    /// list an ambient expression returns must exist.
    fn check_static(self, expr: &cel::IdedExpr, ty: &check::Ty) -> Result<(), CheckError> {
        use check::Ty;
        let ok = match (self, ty) {
            (_, Ty::Dyn) => true,
            (Expect::Bool, Ty::Bool) => true,
            (Expect::StringList, Ty::List(elem)) => {
                matches!(**elem, Ty::Str | Ty::Cap | Ty::Dyn)
            }
            _ => false,
        };
        if !ok {
            return Err(CheckError::Invalid {
                id: expr.id,
                message: format!("{RESULT_TYPE}{ty}"),
            });
        }
        if self == Expect::StringList {
            check::check_cap_literals(expr)?;
        }
        Ok(())
    }

    fn name(self) -> &'static str {
        match self {
            Expect::Bool => "bool",
            Expect::StringList => "list of capability names",
        }
    }

    /// Whether `value` has the expected type.
    pub(crate) fn accepts(self, value: &Value) -> bool {
        match (self, value) {
            (Expect::Bool, Value::Bool(_)) => true,
            (Expect::StringList, Value::List(items)) => {
                items.iter().all(|v| matches!(v, Value::String(_)))
            }
            _ => false,
        }
    }
}

/// One compiled rule; `index` is 1-based as shown in reasons.
#[derive(Debug)]
pub struct CompiledRule {
    /// `"policy <name> rule <n> (<label>)"`, built once for reasons.
    pub source: String,
    pub when: Option<CompiledExpr>,
    pub add: CapSet,
    pub drop: CapSet,
    pub ambient: CapSet,
    pub ambient_expression: Option<CompiledExpr>,
    pub ambient_requests: Option<AmbientRequests>,
    pub exec_path: Option<ExecPathMode>,
    pub preflight: Option<PreflightMode>,
    pub deny: Option<(CompiledExpr, String)>,
    /// `(key, value)` of the rule's network sysctls, validated; applied to
    /// the pod at RunPodSandbox.
    pub sysctls: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct CompiledPolicy {
    pub name: String,
    /// `"policy <name>"`, built once for messages.
    pub source: String,
    pub file: String,
    pub match_expression: CompiledExpr,
    pub rules: Vec<CompiledRule>,
}

/// 1-based line and column of the first line of `needle` in `text`, at or
/// after line `from_line`; falls back to `from_line`, column 1.
pub(crate) fn locate(text: &str, needle: &str, from_line: usize) -> (usize, usize) {
    // A folded YAML scalar joins lines: look for a short prefix only.
    let first = needle
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.char_indices().nth(32).map_or(l, |(i, _)| &l[..i]));
    if let Some(first) = first {
        for (i, line) in text.lines().enumerate().skip(from_line.saturating_sub(1)) {
            if let Some(col) = line.find(first) {
                return (i + 1, col + 1);
            }
        }
    }
    (from_line.max(1), 1)
}

/// The 1-based line and column in `text` of character `offset` of
/// `source`, which starts at (`line`, `column`) of `text`.
pub(crate) fn offset_position(
    text: &str,
    line: usize,
    column: usize,
    source: &str,
    offset: usize,
) -> (usize, usize) {
    // Non-whitespace characters of `source` before the node: the same
    // characters precede it in the file, whatever YAML did to the spaces.
    let mut want = source
        .chars()
        .take(offset)
        .filter(|c| !c.is_whitespace())
        .count();
    for (i, text_line) in text.lines().enumerate().skip(line.saturating_sub(1)) {
        let skip = if i + 1 == line {
            column.saturating_sub(1)
        } else {
            0
        };
        for (j, ch) in text_line.chars().enumerate().skip(skip) {
            if ch.is_whitespace() {
                continue;
            }
            if want == 0 {
                return (i + 1, j + 1);
            }
            want -= 1;
        }
    }
    (line, column)
}

/// Facts every expression is test-run against at load time.
fn sample_facts() -> Facts {
    let mut f = Facts::default();
    f.pod.name = "sample".into();
    f.pod.namespace = "default".into();
    f.container.name = "sample".into();
    f.container.command = vec!["/bin/sample".into()];
    f.container.user = UserFacts {
        uid: 1000,
        gid: 1000,
        non_root: true,
    };
    f.container.capabilities.add = vec!["NET_BIND_SERVICE".into()];
    f
}

/// The sets `granted` holds when deny conditions are test-run at load time.
fn sample_granted() -> ThreadCaps {
    let mut bounding = crate::capabilities::kernel::docker_default_capabilities();
    bounding.insert(crate::capabilities::kernel::Capability::NetBindService);
    ThreadCaps::runtime_default(bounding)
}

pub(crate) struct Compiler<'a> {
    pub env: &'a Arc<Env>,
    pub file: &'a str,
    pub text: &'a str,
    /// Line where the current YAML document starts.
    pub doc_line: usize,
    pub errors: Vec<LoadError>,
    sample: Facts,
}

impl<'a> Compiler<'a> {
    pub fn new(env: &'a Arc<Env>, file: &'a str, text: &'a str) -> Self {
        Compiler {
            env,
            file,
            text,
            doc_line: 1,
            errors: Vec::new(),
            sample: sample_facts(),
        }
    }

    fn location_of(&self, needle: &str) -> Location {
        let (line, column) = locate(self.text, needle, self.doc_line);
        Location {
            file: self.file.to_string(),
            line,
            column,
        }
    }

    /// Where AST node `id` of `program` (compiled from `source`) is in the
    /// file: the expression's start, then its characters matched one by one
    /// with the file's, skipping whitespace (a folded YAML scalar joins
    /// lines). Falls back to the expression's start.
    fn node_location(&self, source: &str, program: &cel::Program, id: u64) -> Location {
        let start = self.location_of(source);
        let Some((offset, _)) = program.source_info().offset_for(id) else {
            return start;
        };
        let (line, column) =
            offset_position(self.text, start.line, start.column, source, offset as usize);
        Location {
            file: self.file.to_string(),
            line,
            column,
        }
    }

    fn push(&mut self, needle: &str, kind: LoadErrorKind) {
        let location = self.location_of(needle);
        self.errors.push(LoadError { location, kind });
    }

    fn expr(
        &mut self,
        policy: &str,
        field: &str,
        source: &str,
        expect: Expect,
    ) -> Option<CompiledExpr> {
        let program = match self.env.compile(source) {
            Ok(p) => p,
            Err(e) => {
                self.push(
                    source,
                    LoadErrorKind::CelCompile {
                        policy: policy.into(),
                        field: field.into(),
                        expression: source.into(),
                        message: e.to_string().replace('\n', " "),
                    },
                );
                return None;
            }
        };
        let vars = CelVars::of(&program);
        let in_deny = field.ends_with("deny.condition");
        if vars.contains(CelVars::GRANTED) && !in_deny {
            self.push(
                source,
                LoadErrorKind::GrantedOutsideDeny {
                    policy: policy.into(),
                    field: field.into(),
                    expression: source.into(),
                },
            );
            return None;
        }
        // The static checker: fields, types and capability names against
        // the facts' schema, with the position of the offending node.
        let checked = check::check(program.expression(), in_deny).and_then(|ty| {
            expect.check_static(program.expression(), &ty)?;
            Ok(ty)
        });
        if let Err(e) = checked {
            let location = self.node_location(source, &program, e.id());
            let kind = match e {
                CheckError::UnknownVariable { name, .. } => LoadErrorKind::CelUnknownVariable {
                    policy: policy.into(),
                    field: field.into(),
                    expression: source.into(),
                    hint: check::unknown_variable_hint(&name, in_deny),
                    name,
                },
                CheckError::Invalid { message, .. } if message.starts_with(RESULT_TYPE) => {
                    LoadErrorKind::CelType {
                        policy: policy.into(),
                        field: field.into(),
                        expression: source.into(),
                        expected: expect.name(),
                        got: message[RESULT_TYPE.len()..].to_string(),
                    }
                }
                CheckError::Invalid { message, .. } => LoadErrorKind::CelCheck {
                    policy: policy.into(),
                    field: field.into(),
                    expression: source.into(),
                    message,
                },
            };
            self.errors.push(LoadError { location, kind });
            return None;
        }
        let entry = EntrypointFacts::default();
        let result = {
            let mut ctx = Context::with_env(Arc::clone(self.env));
            let requested = self
                .sample
                .container
                .capabilities
                .lists()
                .unwrap_or_default();
            self.sample.bind(&mut ctx, CelVars::ALL, requested, &entry);
            bind_granted(&mut ctx, &sample_granted());
            program.execute(&ctx)
        };
        match result {
            Ok(v) if !expect.accepts(&v) => {
                self.push(
                    source,
                    LoadErrorKind::CelType {
                        policy: policy.into(),
                        field: field.into(),
                        expression: source.into(),
                        expected: expect.name(),
                        got: v.type_of().to_string(),
                    },
                );
                return None;
            }
            Err(ExecutionError::UndeclaredReference(name)) => {
                self.push(
                    source,
                    LoadErrorKind::CelUnknownVariable {
                        policy: policy.into(),
                        field: field.into(),
                        expression: source.into(),
                        hint: check::unknown_variable_hint(&name, in_deny),
                        name: name.to_string(),
                    },
                );
                return None;
            }
            // Other runtime errors may depend on the facts (a missing label
            // key); they are handled per evaluation, failing closed.
            _ => {}
        }
        Some(CompiledExpr {
            source: source.to_string(),
            vars,
            program,
            location: self.location_of(source),
        })
    }

    /// A rule's `add`, `drop` or `ambient` list, normalised by the one
    /// parser the CRI path uses (`ALL` is every capability).
    fn caps(
        &mut self,
        policy: &str,
        rule: usize,
        field: &'static str,
        names: &[String],
    ) -> Option<CapSet> {
        let mut set = CapSet::empty();
        let mut ok = true;
        for name in names {
            match CapList::parse([name]) {
                Ok(list) => set = set.union(list.expanded()),
                Err(error) => {
                    ok = false;
                    self.push(
                        name,
                        LoadErrorKind::UnknownCapability {
                            policy: policy.into(),
                            rule,
                            field,
                            name: name.clone(),
                            error,
                        },
                    );
                }
            }
        }
        ok.then_some(set)
    }

    /// Compiles one document; None (with errors recorded) if anything in
    /// it is wrong.
    pub fn policy(&mut self, doc: &PolicyDocument) -> Option<CompiledPolicy> {
        let before = self.errors.len();
        if doc.api_version != API_VERSION {
            self.push(
                "apiVersion",
                LoadErrorKind::Header {
                    field: "apiVersion",
                    got: doc.api_version.clone(),
                    expected: API_VERSION,
                },
            );
        }
        if doc.kind != KIND {
            self.push(
                "kind",
                LoadErrorKind::Header {
                    field: "kind",
                    got: doc.kind.clone(),
                    expected: KIND,
                },
            );
        }
        let name = doc.metadata.name.clone();
        if name.trim().is_empty() {
            self.push(
                "metadata",
                LoadErrorKind::Schema {
                    policy: name.clone(),
                    message: "metadata.name is empty; give the policy a unique name".into(),
                },
            );
        }
        if doc.spec.rules.is_empty() {
            self.push(
                "rules",
                LoadErrorKind::Schema {
                    policy: name.clone(),
                    message: "spec.rules is empty; a policy without rules does nothing".into(),
                },
            );
        }
        let match_expression = self.expr(&name, "match", &doc.spec.match_expression, Expect::Bool);
        let match_vars = match_expression
            .as_ref()
            .map(|m| m.vars)
            .unwrap_or_default();
        let mut rules = Vec::new();
        for (i, spec) in doc.spec.rules.iter().enumerate() {
            if let Some(rule) = self.rule(&name, i + 1, spec, match_vars) {
                rules.push(rule);
            }
        }
        match match_expression {
            Some(m) if self.errors.len() == before => Some(CompiledPolicy {
                source: format!("policy {name}"),
                name,
                file: self.file.to_string(),
                match_expression: m,
                rules,
            }),
            _ => None,
        }
    }

    /// A rule's network sysctls, normalised and validated. They are written
    /// at RunPodSandbox, before any container exists: the policy's match
    /// and the rule's `when` may read only `pod` and `node`.
    fn sysctls(
        &mut self,
        policy: &str,
        index: usize,
        spec: &RuleSpec,
        scope: CelVars,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(port) = spec.unprivileged_ports {
            out.push((
                sysctls::UNPRIVILEGED_PORT_START.to_string(),
                port.to_string(),
                "unprivilegedPorts",
            ));
        }
        if let Some(icmp) = spec.unprivileged_icmp {
            let value = if icmp {
                sysctls::PING_GROUP_RANGE_ALL
            } else {
                sysctls::PING_GROUP_RANGE_NONE
            };
            out.push((
                sysctls::PING_GROUP_RANGE.to_string(),
                value.to_string(),
                "unprivilegedICMP",
            ));
        }
        for (key, value) in &spec.sysctls {
            out.push((sysctls::normalize_key(key), value.to_string(), key.as_str()));
        }
        if out.is_empty() {
            return Vec::new();
        }
        let pod_level = CelVars::POD.union(CelVars::NODE);
        if !pod_level.contains(scope) {
            self.push(
                out[0].2,
                LoadErrorKind::Schema {
                    policy: policy.into(),
                    message: format!(
                        "rule {index} sets network sysctls, which are written into the pod's network namespace at RunPodSandbox, before any container exists: the policy's match and the rule's when may read only pod and node; move the rule to a policy whose match reads only those"
                    ),
                },
            );
            return Vec::new();
        }
        let mut valid = Vec::new();
        for (key, value, needle) in out {
            match sysctls::validate(&key, &value) {
                Ok(()) => valid.push((key, value)),
                Err(message) => self.push(
                    needle,
                    LoadErrorKind::Schema {
                        policy: policy.into(),
                        message: format!("rule {index}: {message}"),
                    },
                ),
            }
        }
        valid
    }

    fn rule(
        &mut self,
        policy: &str,
        index: usize,
        spec: &RuleSpec,
        match_vars: CelVars,
    ) -> Option<CompiledRule> {
        let before = self.errors.len();
        let acts = !spec.add.is_empty()
            || !spec.drop.is_empty()
            || !spec.ambient.is_empty()
            || spec.ambient_expression.is_some()
            || spec.ambient_requests.is_some()
            || spec.exec_path.is_some()
            || spec.preflight.is_some()
            || spec.deny.is_some()
            || spec.unprivileged_ports.is_some()
            || spec.unprivileged_icmp.is_some()
            || !spec.sysctls.is_empty();
        if !acts {
            self.push(
                "rules",
                LoadErrorKind::Schema {
                    policy: policy.into(),
                    message: format!(
                        "rule {index} has no action (add, drop, ambient, ambientExpression, ambientRequests, execPath, preflight, deny, unprivilegedPorts, unprivilegedICMP or sysctls)"
                    ),
                },
            );
        }
        let field = |f: &str| format!("rule {index} {f}");
        let when = spec
            .when
            .as_ref()
            .and_then(|w| self.expr(policy, &field("when"), w, Expect::Bool));
        let add = self.caps(policy, index, "add", &spec.add);
        let drop = self.caps(policy, index, "drop", &spec.drop);
        let ambient = self.caps(policy, index, "ambient", &spec.ambient);
        let ambient_expression = spec
            .ambient_expression
            .as_ref()
            .and_then(|e| self.expr(policy, &field("ambientExpression"), e, Expect::StringList));
        let when_vars = when.as_ref().map(|w| w.vars).unwrap_or_default();
        let sysctls = self.sysctls(policy, index, spec, match_vars.union(when_vars));
        let deny = spec.deny.as_ref().and_then(|d| {
            self.expr(policy, &field("deny.condition"), &d.condition, Expect::Bool)
                .map(|c| (c, d.message.clone()))
        });
        if self.errors.len() != before {
            return None;
        }
        let label = match &spec.name {
            Some(n) => format!("rule {index} ({n})"),
            None => format!("rule {index}"),
        };
        Some(CompiledRule {
            source: format!("policy {policy} {label}"),
            when,
            add: add.unwrap_or_default(),
            drop: drop.unwrap_or_default(),
            ambient: ambient.unwrap_or_default(),
            ambient_expression,
            ambient_requests: spec.ambient_requests,
            exec_path: spec.exec_path,
            preflight: spec.preflight,
            deny,
            sysctls,
        })
    }
}
