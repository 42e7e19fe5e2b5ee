//! A static type checker for policy CEL, over the `cel` crate's AST.
//!
//! The `cel` crate (0.15) parses and interprets but has no checker: an
//! expression reading `container.nme`, comparing a string with an int, or
//! testing `'SYS_ADMN' in granted.bounding` compiled fine and then failed
//! (or never matched) at run time, so a typo denied every container or
//! silently allowed what it meant to refuse. This walks the parsed AST
//! against [`super::schema`], the one list of fact fields, and refuses such
//! an expression at `capcri policy check` and at load, pointing at the
//! offending node.
//!
//! The checker is sound where it speaks and lenient where it cannot know:
//! a `dyn` value (a map lookup on a non-literal key, an optional) type-checks
//! against anything, and the run-time evaluation still fails closed.

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};

use super::schema::{Field, FieldType, VARIABLES, nearest};
use crate::capabilities::kernel::{CapName, Capability};

/// A CEL type as the checker tracks it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ty {
    Bool,
    Int,
    Uint,
    Double,
    Str,
    Bytes,
    Null,
    /// A canonical capability name: a string whose literal comparands must
    /// be capability names.
    Cap,
    List(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
    /// A fact object: its path (`container.user`) and fields.
    Obj(String, &'static [Field]),
    Type,
    Timestamp,
    Duration,
    Dyn,
}

impl std::fmt::Display for Ty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ty::Bool => f.write_str("bool"),
            Ty::Int => f.write_str("int"),
            Ty::Uint => f.write_str("uint"),
            Ty::Double => f.write_str("double"),
            Ty::Str => f.write_str("string"),
            Ty::Bytes => f.write_str("bytes"),
            Ty::Null => f.write_str("null"),
            Ty::Cap => f.write_str("capability name (string)"),
            Ty::List(t) => write!(f, "list({t})"),
            Ty::Map(k, v) => write!(f, "map({k}, {v})"),
            Ty::Obj(path, _) => write!(f, "{path} (object)"),
            Ty::Type => f.write_str("type"),
            Ty::Timestamp => f.write_str("timestamp"),
            Ty::Duration => f.write_str("duration"),
            Ty::Dyn => f.write_str("dyn"),
        }
    }
}

impl Ty {
    fn of_field(path: &str, ty: FieldType) -> Ty {
        match ty {
            FieldType::Bool => Ty::Bool,
            FieldType::Int => Ty::Int,
            FieldType::String => Ty::Str,
            FieldType::StringList => Ty::List(Box::new(Ty::Str)),
            FieldType::CapList => Ty::List(Box::new(Ty::Cap)),
            FieldType::StringMap => Ty::Map(Box::new(Ty::Str), Box::new(Ty::Str)),
            FieldType::CapListMap => {
                Ty::Map(Box::new(Ty::Str), Box::new(Ty::List(Box::new(Ty::Cap))))
            }
            FieldType::Object(fields) => Ty::Obj(path.to_string(), fields),
        }
    }

    fn is_numeric(&self) -> bool {
        matches!(self, Ty::Int | Ty::Uint | Ty::Double)
    }

    fn is_stringy(&self) -> bool {
        matches!(self, Ty::Str | Ty::Cap)
    }
}

/// What the checker found wrong, at AST node `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckError {
    /// An identifier that is no variable.
    UnknownVariable { id: u64, name: String },
    /// Anything else: an unknown field, a type mismatch, an unknown
    /// capability or function. The message names the cause and the fix.
    Invalid { id: u64, message: String },
}

impl CheckError {
    pub fn id(&self) -> u64 {
        match self {
            CheckError::UnknownVariable { id, .. } | CheckError::Invalid { id, .. } => *id,
        }
    }
}

type Check<T> = Result<T, CheckError>;

fn invalid(id: u64, message: impl Into<String>) -> CheckError {
    CheckError::Invalid {
        id,
        message: message.into(),
    }
}

/// Type names usable as identifiers (`type(x) == string`).
const TYPE_NAMES: &[&str] = &[
    "bool",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

pub(crate) struct Checker {
    /// Whether `granted` may be read (deny conditions only).
    allow_granted: bool,
    /// Comprehension variables, innermost last.
    scope: Vec<(String, Ty)>,
}

/// Type-checks `expr`; returns its type.
pub(crate) fn check(expr: &IdedExpr, allow_granted: bool) -> Check<Ty> {
    Checker {
        allow_granted,
        scope: Vec::new(),
    }
    .ty(expr)
}

/// The variables an expression may read, for messages.
fn variable_list(allow_granted: bool) -> String {
    VARIABLES
        .iter()
        .filter(|v| allow_granted || v.name != "granted")
        .map(|v| v.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why `text` is not a canonical capability name, or None if it is one.
pub(crate) fn capability_literal_problem(text: &str) -> Option<String> {
    if Capability::ALL.iter().any(|c| c.short_name() == text) {
        return None;
    }
    Some(match text.parse::<CapName>() {
        Ok(CapName::One(c)) => format!(
            "capability '{text}' never matches: CEL sees canonical names (upper-case, no CAP_ prefix); write '{}'",
            c.short_name()
        ),
        Ok(CapName::All) => format!(
            "capability '{text}' never matches: CEL sees ALL expanded to every capability; test container.capabilities.addAll (or dropAll) instead"
        ),
        Err(_) => {
            let hint = nearest(
                text.trim().trim_start_matches("CAP_"),
                Capability::ALL.iter().map(|c| c.short_name()),
            )
            .map(|n| format!("did you mean '{n}'? "))
            .unwrap_or_default();
            format!(
                "'{text}' is not a Linux capability; {hint}the names are {}",
                Capability::ALL
                    .iter()
                    .map(|c| c.short_name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    })
}

/// Checks the string literals that stand for capability names in `expr`:
/// the literal itself, the elements of a list literal, both branches of a
/// conditional.
pub(crate) fn check_cap_literals(expr: &IdedExpr) -> Check<()> {
    match &expr.expr {
        Expr::Literal(LiteralValue::String(s)) => match capability_literal_problem(s.inner()) {
            Some(m) => Err(invalid(expr.id, m)),
            None => Ok(()),
        },
        Expr::List(list) => list.elements.iter().try_for_each(check_cap_literals),
        Expr::Call(call) if call.func_name == "_?_:_" && call.args.len() == 3 => {
            check_cap_literals(&call.args[1])?;
            check_cap_literals(&call.args[2])
        }
        _ => Ok(()),
    }
}

/// Whether values of `a` and `b` can be compared for equality; Cap and
/// string are one type at run time.
fn comparable(a: &Ty, b: &Ty) -> bool {
    match (a, b) {
        (Ty::Dyn, _) | (_, Ty::Dyn) | (Ty::Null, _) | (_, Ty::Null) => true,
        (x, y) if x.is_numeric() && y.is_numeric() => true,
        (x, y) if x.is_stringy() && y.is_stringy() => true,
        (Ty::List(x), Ty::List(y)) => comparable(x, y),
        (Ty::Map(k1, v1), Ty::Map(k2, v2)) => comparable(k1, k2) && comparable(v1, v2),
        // A fact object is a map at run time.
        (Ty::Obj(..), Ty::Obj(..) | Ty::Map(..)) | (Ty::Map(..), Ty::Obj(..)) => true,
        (x, y) => std::mem::discriminant(x) == std::mem::discriminant(y),
    }
}

/// The common type of two values (list elements, conditional branches).
fn join(a: &Ty, b: &Ty) -> Option<Ty> {
    match (a, b) {
        (Ty::Dyn, x) | (x, Ty::Dyn) => Some(x.clone()),
        (Ty::Cap, Ty::Str) | (Ty::Str, Ty::Cap) => Some(Ty::Str),
        (Ty::List(x), Ty::List(y)) => Some(Ty::List(Box::new(join(x, y)?))),
        (Ty::Map(k1, v1), Ty::Map(k2, v2)) => {
            Some(Ty::Map(Box::new(join(k1, k2)?), Box::new(join(v1, v2)?)))
        }
        (x, y) if x == y => Some(x.clone()),
        _ => None,
    }
}

impl Checker {
    fn lookup_var(&self, id: u64, name: &str) -> Check<Ty> {
        if let Some((_, t)) = self.scope.iter().rev().find(|(n, _)| n == name) {
            return Ok(t.clone());
        }
        let bare = name.strip_prefix('.').unwrap_or(name);
        if let Some(v) = VARIABLES.iter().find(|v| v.name == bare) {
            if v.name == "granted" && !self.allow_granted {
                return Err(invalid(
                    id,
                    "`granted` exists only in deny conditions (the sets are computed after every other rule)",
                ));
            }
            return Ok(Ty::of_field(v.name, v.ty));
        }
        if TYPE_NAMES.contains(&bare) {
            return Ok(Ty::Type);
        }
        Err(CheckError::UnknownVariable {
            id,
            name: name.to_string(),
        })
    }

    fn field(&self, id: u64, operand: &Ty, name: &str, test: bool) -> Check<Ty> {
        match operand {
            Ty::Obj(path, fields) => match fields.iter().find(|f| f.name == name) {
                Some(f) => Ok(Ty::of_field(&format!("{path}.{name}"), f.ty)),
                None => {
                    let hint = nearest(name, fields.iter().map(|f| f.name))
                        .map(|n| format!("did you mean {path}.{n}? "))
                        .unwrap_or_default();
                    Err(invalid(
                        id,
                        format!(
                            "{path} has no field `{name}`; {hint}its fields are {}",
                            fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
                        ),
                    ))
                }
            },
            // `m.key` on a map is a key lookup (a missing key is a run-time
            // error, so a condition on a label should use `has` or `in`).
            Ty::Map(k, v) if matches!(**k, Ty::Str | Ty::Dyn) => Ok((**v).clone()),
            Ty::Dyn => Ok(Ty::Dyn),
            other => Err(invalid(
                id,
                format!(
                    "{} `.{name}` on a {other}, which has no fields",
                    if test { "has()" } else { "field selection" }
                ),
            )),
        }
    }

    fn ty(&mut self, e: &IdedExpr) -> Check<Ty> {
        match &e.expr {
            Expr::Unspecified => Ok(Ty::Dyn),
            Expr::Literal(l) => Ok(match l {
                LiteralValue::Boolean(_) => Ty::Bool,
                LiteralValue::Bytes(_) => Ty::Bytes,
                LiteralValue::Double(_) => Ty::Double,
                LiteralValue::Int(_) => Ty::Int,
                LiteralValue::Null => Ty::Null,
                LiteralValue::String(_) => Ty::Str,
                LiteralValue::UInt(_) => Ty::Uint,
            }),
            Expr::Ident(name) => self.lookup_var(e.id, name),
            Expr::Select(s) => {
                let operand = self.ty(&s.operand)?;
                let t = self.field(e.id, &operand, &s.field, s.test)?;
                Ok(if s.test { Ty::Bool } else { t })
            }
            Expr::List(list) => {
                let mut elem = Ty::Dyn;
                let mut mixed = false;
                for x in &list.elements {
                    let t = self.ty(x)?;
                    match join(&elem, &t) {
                        Some(j) => elem = j,
                        None => mixed = true,
                    }
                }
                Ok(Ty::List(Box::new(if mixed { Ty::Dyn } else { elem })))
            }
            Expr::Map(map) => {
                let (mut kt, mut vt) = (Ty::Dyn, Ty::Dyn);
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(m) = &entry.expr {
                        let k = self.ty(&m.key)?;
                        let v = self.ty(&m.value)?;
                        kt = join(&kt, &k).unwrap_or(Ty::Dyn);
                        vt = join(&vt, &v).unwrap_or(Ty::Dyn);
                    }
                }
                Ok(Ty::Map(Box::new(kt), Box::new(vt)))
            }
            Expr::Struct(s) => Err(invalid(
                e.id,
                format!(
                    "message literal `{}{{...}}`: the facts have no message types; use a map literal",
                    s.type_name
                ),
            )),
            Expr::Comprehension(c) => {
                let range = self.ty(&c.iter_range)?;
                let (first, second) = match &range {
                    Ty::List(t) => match &c.iter_var2 {
                        Some(_) => (Ty::Int, (**t).clone()),
                        None => ((**t).clone(), Ty::Dyn),
                    },
                    Ty::Map(k, v) => ((**k).clone(), (**v).clone()),
                    Ty::Obj(..) => (Ty::Str, Ty::Dyn),
                    Ty::Dyn => (Ty::Dyn, Ty::Dyn),
                    other => {
                        return Err(invalid(
                            c.iter_range.id,
                            format!("cannot iterate over a {other}; use a list or a map"),
                        ));
                    }
                };
                let depth = self.scope.len();
                self.scope.push((c.iter_var.clone(), first));
                if let Some(v2) = &c.iter_var2 {
                    self.scope.push((v2.clone(), second));
                }
                let init = self.ty(&c.accu_init)?;
                self.scope.push((c.accu_var.clone(), init.clone()));
                let result = (|| {
                    let cond = self.ty(&c.loop_cond)?;
                    self.expect_bool(&c.loop_cond, &cond, "the macro's predicate")?;
                    let step = self.ty(&c.loop_step)?;
                    let accu = join(&init, &step).unwrap_or(Ty::Dyn);
                    if let Some(last) = self.scope.last_mut() {
                        last.1 = accu;
                    }
                    self.ty(&c.result)
                })();
                self.scope.truncate(depth);
                result
            }
            Expr::Call(call) => self.call(e, call),
        }
    }

    fn expect_bool(&self, e: &IdedExpr, t: &Ty, what: &str) -> Check<()> {
        match t {
            Ty::Bool | Ty::Dyn => Ok(()),
            other => Err(invalid(
                e.id,
                format!("{what} must be a bool, this is a {other}"),
            )),
        }
    }

    fn call(&mut self, e: &IdedExpr, call: &cel::common::ast::CallExpr) -> Check<Ty> {
        let name = call.func_name.as_str();
        let mut args = Vec::with_capacity(call.args.len());
        for a in &call.args {
            args.push(self.ty(a)?);
        }
        let target = match &call.target {
            Some(t) => Some(self.ty(t)?),
            None => None,
        };
        let id = e.id;
        let arity = |n: usize| -> Check<()> {
            if args.len() == n {
                Ok(())
            } else {
                Err(invalid(
                    id,
                    format!("{name} takes {n} argument(s), got {}", args.len()),
                ))
            }
        };
        match (name, &target) {
            ("_&&_" | "_||_", None) => {
                arity(2)?;
                for (a, t) in call.args.iter().zip(&args) {
                    self.expect_bool(a, t, "an operand of && and ||")?;
                }
                Ok(Ty::Bool)
            }
            ("!_" | "@not_strictly_false", None) => {
                arity(1)?;
                self.expect_bool(&call.args[0], &args[0], "the operand of !")?;
                Ok(Ty::Bool)
            }
            ("-_", None) => {
                arity(1)?;
                match &args[0] {
                    t if t.is_numeric() => Ok(t.clone()),
                    Ty::Dyn => Ok(Ty::Dyn),
                    other => Err(invalid(id, format!("cannot negate a {other}"))),
                }
            }
            ("_==_" | "_!=_", None) => {
                arity(2)?;
                if !comparable(&args[0], &args[1]) {
                    return Err(invalid(
                        id,
                        format!(
                            "cannot compare a {} with a {}: they are never equal; compare values of one type",
                            args[0], args[1]
                        ),
                    ));
                }
                for (side, other) in [(0, 1), (1, 0)] {
                    if args[side] == Ty::Cap {
                        check_cap_literals(&call.args[other])?;
                    }
                }
                Ok(Ty::Bool)
            }
            ("_<_" | "_<=_" | "_>_" | "_>=_", None) => {
                arity(2)?;
                let ok = match (&args[0], &args[1]) {
                    (Ty::Dyn, _) | (_, Ty::Dyn) => true,
                    (a, b) if a.is_numeric() && b.is_numeric() => true,
                    (a, b) if a.is_stringy() && b.is_stringy() => true,
                    (a, b) => {
                        a == b && matches!(a, Ty::Bool | Ty::Bytes | Ty::Timestamp | Ty::Duration)
                    }
                };
                if ok {
                    Ok(Ty::Bool)
                } else {
                    Err(invalid(
                        id,
                        format!("cannot order a {} against a {}", args[0], args[1]),
                    ))
                }
            }
            ("_+_", None) => {
                arity(2)?;
                match (&args[0], &args[1]) {
                    (Ty::Dyn, t) | (t, Ty::Dyn) => {
                        Ok(if *t == Ty::Dyn { Ty::Dyn } else { t.clone() })
                    }
                    (a, b) if a.is_stringy() && b.is_stringy() => Ok(Ty::Str),
                    (Ty::List(a), Ty::List(b)) => {
                        Ok(Ty::List(Box::new(join(a, b).unwrap_or(Ty::Dyn))))
                    }
                    (Ty::Timestamp, Ty::Duration) | (Ty::Duration, Ty::Timestamp) => {
                        Ok(Ty::Timestamp)
                    }
                    (a, b)
                        if a == b
                            && matches!(
                                a,
                                Ty::Int | Ty::Uint | Ty::Double | Ty::Bytes | Ty::Duration
                            ) =>
                    {
                        Ok(a.clone())
                    }
                    (a, b) => Err(invalid(
                        id,
                        format!("cannot add a {b} to a {a}; convert one side (string(), int())"),
                    )),
                }
            }
            ("_-_" | "_*_" | "_/_" | "_%_", None) => {
                arity(2)?;
                match (&args[0], &args[1]) {
                    (Ty::Dyn, _) | (_, Ty::Dyn) => Ok(Ty::Dyn),
                    (a, b) if a == b && a.is_numeric() => Ok(a.clone()),
                    (Ty::Timestamp, Ty::Timestamp) if name == "_-_" => Ok(Ty::Duration),
                    (Ty::Timestamp | Ty::Duration, Ty::Duration) if name == "_-_" => {
                        Ok(args[0].clone())
                    }
                    (a, b) => Err(invalid(
                        id,
                        format!(
                            "arithmetic on a {a} and a {b}: both sides must be the same number type"
                        ),
                    )),
                }
            }
            ("_[_]", None) => {
                arity(2)?;
                match (&args[0], &args[1]) {
                    (Ty::List(t), Ty::Int | Ty::Uint | Ty::Dyn) => Ok((**t).clone()),
                    (Ty::List(_), k) => Err(invalid(
                        id,
                        format!("a list index must be an int, this is a {k}"),
                    )),
                    (Ty::Map(kt, v), k) => {
                        if comparable(kt, k) {
                            Ok((**v).clone())
                        } else {
                            Err(invalid(
                                id,
                                format!("a key of this map is a {kt}, the index is a {k}"),
                            ))
                        }
                    }
                    (Ty::Obj(..), _) => match &call.args[1].expr {
                        Expr::Literal(LiteralValue::String(s)) => {
                            self.field(id, &args[0], s.inner(), false)
                        }
                        _ => Ok(Ty::Dyn),
                    },
                    (Ty::Dyn, _) => Ok(Ty::Dyn),
                    (other, _) => Err(invalid(id, format!("cannot index a {other}"))),
                }
            }
            ("@in", None) => {
                arity(2)?;
                match &args[1] {
                    Ty::List(elem) => {
                        if !comparable(&args[0], elem) {
                            return Err(invalid(
                                id,
                                format!(
                                    "`in` tests a {} against a list({elem}): it is never true",
                                    args[0]
                                ),
                            ));
                        }
                        if **elem == Ty::Cap {
                            check_cap_literals(&call.args[0])?;
                        }
                        if args[0] == Ty::Cap {
                            check_cap_literals(&call.args[1])?;
                        }
                        Ok(Ty::Bool)
                    }
                    Ty::Map(k, _) => {
                        if comparable(&args[0], k) {
                            Ok(Ty::Bool)
                        } else {
                            Err(invalid(
                                id,
                                format!("`in` tests a {} against a map keyed by {k}", args[0]),
                            ))
                        }
                    }
                    Ty::Obj(..) | Ty::Dyn => Ok(Ty::Bool),
                    other => Err(invalid(
                        id,
                        format!("`in` needs a list or a map on its right, this is a {other}"),
                    )),
                }
            }
            ("_?_:_", None) => {
                arity(3)?;
                self.expect_bool(&call.args[0], &args[0], "the condition of ?:")?;
                join(&args[1], &args[2]).ok_or_else(|| {
                    invalid(
                        id,
                        format!(
                            "the branches of ?: have different types ({} and {}); make them one type",
                            args[1], args[2]
                        ),
                    )
                })
            }
            ("size", _) => {
                let subject = match &target {
                    Some(t) => {
                        arity(0)?;
                        t
                    }
                    None => {
                        arity(1)?;
                        &args[0]
                    }
                };
                match subject {
                    Ty::Str
                    | Ty::Cap
                    | Ty::Bytes
                    | Ty::List(_)
                    | Ty::Map(..)
                    | Ty::Obj(..)
                    | Ty::Dyn => Ok(Ty::Int),
                    other => Err(invalid(id, format!("size() of a {other}"))),
                }
            }
            ("contains" | "startsWith" | "endsWith" | "matches", Some(t)) => {
                arity(1)?;
                if !matches!(t, Ty::Str | Ty::Cap | Ty::Dyn) {
                    return Err(invalid(
                        id,
                        format!("{name}() is a string method, called here on a {t}"),
                    ));
                }
                if !matches!(args[0], Ty::Str | Ty::Cap | Ty::Dyn) {
                    return Err(invalid(
                        id,
                        format!("{name}() takes a string, got a {}", args[0]),
                    ));
                }
                Ok(Ty::Bool)
            }
            ("matches", None) => {
                arity(2)?;
                if args
                    .iter()
                    .all(|a| matches!(a, Ty::Str | Ty::Cap | Ty::Dyn))
                {
                    Ok(Ty::Bool)
                } else {
                    Err(invalid(id, "matches() takes two strings"))
                }
            }
            (
                "int" | "uint" | "double" | "string" | "bool" | "bytes" | "timestamp" | "duration"
                | "dyn" | "type",
                None,
            ) => {
                arity(1)?;
                Ok(match name {
                    "int" => Ty::Int,
                    "uint" => Ty::Uint,
                    "double" => Ty::Double,
                    "string" => Ty::Str,
                    "bool" => Ty::Bool,
                    "bytes" => Ty::Bytes,
                    "timestamp" => Ty::Timestamp,
                    "duration" => Ty::Duration,
                    "type" => Ty::Type,
                    _ => Ty::Dyn,
                })
            }
            (
                "getDate" | "getDayOfMonth" | "getDayOfWeek" | "getDayOfYear" | "getFullYear"
                | "getHours" | "getMilliseconds" | "getMinutes" | "getMonth" | "getSeconds",
                Some(_),
            ) => Ok(Ty::Int),
            ("optional.none" | "optional.of" | "optional.ofNonZeroValue", None)
            | ("value" | "hasValue" | "or" | "orValue", Some(_))
            | ("_?._" | "_[?_]", None) => Ok(Ty::Dyn),
            _ => Err(invalid(
                id,
                format!(
                    "unknown function {}{name}(); the policy environment has CEL's standard functions (size, contains, startsWith, endsWith, matches, int, string, ...) and macros (has, all, exists, exists_one, map, filter)",
                    if target.is_some() { "." } else { "" }
                ),
            )),
        }
    }
}

/// The message for an unknown variable.
pub(crate) fn unknown_variable_hint(name: &str, allow_granted: bool) -> String {
    let hint = nearest(
        name,
        VARIABLES
            .iter()
            .filter(|v| allow_granted || v.name != "granted")
            .map(|v| v.name),
    )
    .map(|n| format!("did you mean {n}? "))
    .unwrap_or_default();
    format!("{hint}the variables are {}", variable_list(allow_granted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(src: &str, granted: bool) -> Result<Ty, String> {
        let program = cel::Env::stdlib().compile(src).expect("parses");
        check(program.expression(), granted).map_err(|e| match e {
            CheckError::UnknownVariable { name, .. } => format!("unknown variable {name}"),
            CheckError::Invalid { message, .. } => message,
        })
    }

    #[test]
    fn well_typed_expressions_pass() {
        for (src, want) in [
            ("container.user.uid == 0", Ty::Bool),
            (
                "container.user.uid >= 1000 && !container.privileged",
                Ty::Bool,
            ),
            ("pod.labels.app == 'web'", Ty::Bool),
            ("pod.labels['app'] == 'web'", Ty::Bool),
            ("has(pod.labels.app)", Ty::Bool),
            ("'app' in pod.labels", Ty::Bool),
            ("pod.namespace in ['kube-system', 'default']", Ty::Bool),
            ("'NET_ADMIN' in container.capabilities.add", Ty::Bool),
            (
                "container.capabilities.add.exists(c, c == 'SYS_ADMIN')",
                Ty::Bool,
            ),
            (
                "container.capabilities.add.all(c, c.startsWith('NET_'))",
                Ty::Bool,
            ),
            (
                "container.capabilities.add.exists(c, c in ['SYS_ADMIN', 'NET_ADMIN'])",
                Ty::Bool,
            ),
            ("size(container.capabilities.add) > 2", Ty::Bool),
            ("container.capabilities.add.size() > 2u", Ty::Bool),
            (
                "container.capabilities.addAll ? [] : container.capabilities.add",
                Ty::List(Box::new(Ty::Cap)),
            ),
            (
                "container.capabilities.add.filter(c, c != 'SYS_ADMIN')",
                Ty::List(Box::new(Ty::Cap)),
            ),
            (
                "container.command.map(c, c + '!')",
                Ty::List(Box::new(Ty::Str)),
            ),
            ("['NET_BIND_SERVICE']", Ty::List(Box::new(Ty::Str))),
            (
                "image.fileCaps.exists(p, 'NET_RAW' in image.fileCaps[p])",
                Ty::Bool,
            ),
            (
                "container.entrypoint.setuid || container.entrypoint.setgid",
                Ty::Bool,
            ),
            ("size(pod.sysctls) == 0", Ty::Bool),
            ("node.kernelVersion.matches('^6\\\\.')", Ty::Bool),
            ("type(pod.name) == string", Ty::Bool),
            ("int(pod.labels.tier) > 2", Ty::Bool),
            ("container.user.uid + 1 == 1001", Ty::Bool),
            ("container.user.uid == 0u", Ty::Bool),
            (".pod.name == 'x'", Ty::Bool),
        ] {
            assert_eq!(run(src, false), Ok(want), "{src}");
        }
        assert_eq!(run("'SYS_ADMIN' in granted.bounding", true), Ok(Ty::Bool));
    }

    #[test]
    fn unknown_fields_name_the_valid_ones() {
        let e = run("container.nme == 'x'", false).unwrap_err();
        assert!(e.contains("container has no field `nme`"), "{e}");
        assert!(e.contains("did you mean container.name?"), "{e}");
        assert!(e.contains("name, command, args"), "{e}");
        for (src, want) in [
            ("container.user.id == 0", "container.user has no field `id`"),
            ("pod.hostNetwrk", "did you mean pod.hostNetwork?"),
            (
                "has(container.capabilities.adds)",
                "container.capabilities has no field `adds`",
            ),
            ("image.fileCaps.x.y == 'a'", "no fields"),
            (
                "granted.bounding.size() > 0 && granted.effctive.size() > 0",
                "granted has no field `effctive`",
            ),
            ("pod.name.first == 'a'", "on a string, which has no fields"),
        ] {
            let e = run(src, true).unwrap_err();
            assert!(e.contains(want), "{src}: {e}");
        }
    }

    #[test]
    fn type_mismatches_are_refused() {
        for (src, want) in [
            (
                "container.user.uid == '0'",
                "cannot compare a int with a string",
            ),
            ("pod.name == 1", "cannot compare a string with a int"),
            (
                "container.privileged == 'true'",
                "cannot compare a bool with a string",
            ),
            ("pod.name > 3", "cannot order"),
            ("container.user.uid + 'x' == 'y'", "cannot add"),
            ("pod.name && true", "must be a bool"),
            ("!container.user.uid", "must be a bool"),
            ("1 in pod.labels", "map keyed by string"),
            ("0 in container.command", "never true"),
            ("container.command[0u] == 1", "cannot compare"),
            ("container.command['x'] == 'y'", "list index must be an int"),
            ("pod.labels.exists(k, k > 1)", "cannot order"),
            ("container.privileged ? 'a' : 1", "different types"),
            ("container.user.uid.startsWith('1')", "string method"),
            (
                "pod.name.lowerAscii() == 'x'",
                "unknown function .lowerAscii()",
            ),
            ("frobnicate(pod.name)", "unknown function frobnicate()"),
            ("container.privileged.exists(x, x)", "cannot iterate"),
            ("Foo{a: 1} == 1", "message literal"),
        ] {
            let e = run(src, false).unwrap_err();
            assert!(e.contains(want), "{src}: {e}");
        }
    }

    #[test]
    fn capability_literals_must_be_canonical_names() {
        for (src, want) in [
            (
                "'SYS_ADMN' in granted.bounding",
                "did you mean 'SYS_ADMIN'?",
            ),
            ("'CAP_SYS_ADMIN' in granted.bounding", "write 'SYS_ADMIN'"),
            ("'sys_admin' in granted.effective", "write 'SYS_ADMIN'"),
            (
                "container.capabilities.add.exists(c, c == 'net_raw')",
                "write 'NET_RAW'",
            ),
            ("container.capabilities.add.exists(c, 'ALL' == c)", "addAll"),
            (
                "granted.ambient.exists(c, c in ['NET_ADMIN', 'NOPE'])",
                "'NOPE' is not a Linux capability",
            ),
            ("'ALL' in container.capabilities.drop", "addAll"),
        ] {
            let e = run(src, true).unwrap_err();
            assert!(e.contains(want), "{src}: {e}");
        }
        // Outside capability lists a string is just a string.
        assert!(run("pod.name == 'sys_admin'", false).is_ok());
        assert!(run("pod.labels.cap == 'CAP_X'", false).is_ok());
    }

    #[test]
    fn unknown_variables_and_granted_outside_deny() {
        assert_eq!(
            run("pdo.name == 'x'", false),
            Err("unknown variable pdo".into())
        );
        assert!(unknown_variable_hint("pdo", false).starts_with("did you mean pod?"));
        assert!(!unknown_variable_hint("x", false).contains("granted"));
        let e = run("'KILL' in granted.bounding", false).unwrap_err();
        assert!(e.contains("only in deny conditions"), "{e}");
    }
}
