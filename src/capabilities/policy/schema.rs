//! The shape of the facts as CEL sees them: every variable, every field,
//! and its type. The one list of fields: the type checker
//! ([`super::check`]) refuses what is not here, `capcri policy check`
//! prints it, and a unit test binds real facts and compares what CEL gets
//! with this table field by field, so the two cannot drift apart.

/// A CEL type of a fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    Bool,
    Int,
    String,
    StringList,
    /// A list of canonical capability names (`SYS_ADMIN`).
    CapList,
    /// `map(string, string)`
    StringMap,
    /// `map(string, list of canonical capability names)`
    CapListMap,
    Object(&'static [Field]),
}

/// One field of a fact object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    pub name: &'static str,
    pub ty: FieldType,
}

const fn f(name: &'static str, ty: FieldType) -> Field {
    Field { name, ty }
}

use FieldType::*;

pub(crate) const POD: &[Field] = &[
    f("name", String),
    f("namespace", String),
    f("uid", String),
    f("labels", StringMap),
    f("annotations", StringMap),
    f("runtimeHandler", String),
    f("hostNetwork", Bool),
    f("hostPID", Bool),
    f("hostIPC", Bool),
    f("sysctls", StringMap),
];

pub(crate) const USER: &[Field] = &[f("uid", Int), f("gid", Int), f("nonRoot", Bool)];

pub(crate) const CAPABILITIES: &[Field] = &[
    f("add", CapList),
    f("drop", CapList),
    f("addAmbient", CapList),
    f("addAll", Bool),
    f("dropAll", Bool),
];

/// `container.entrypoint`: the binary execve will load, resolved in the
/// image (PATH search, symlinks followed inside the rootfs).
pub(crate) const ENTRYPOINT: &[Field] = &[
    f("path", String),
    f("found", Bool),
    f("setuid", Bool),
    f("setgid", Bool),
    f("fileCaps", CapList),
];

pub(crate) const CONTAINER: &[Field] = &[
    f("name", String),
    f("command", StringList),
    f("args", StringList),
    f("workingDir", String),
    f("env", StringMap),
    f("user", Object(USER)),
    f("capabilities", Object(CAPABILITIES)),
    f("entrypoint", Object(ENTRYPOINT)),
    f("privileged", Bool),
    f("noNewPrivs", Bool),
    f("readOnlyRootfs", Bool),
    f("seccomp", String),
];

pub(crate) const IMAGE: &[Field] = &[
    f("name", String),
    f("names", StringList),
    f("digest", String),
    f("user", String),
    f("entrypoint", StringList),
    f("cmd", StringList),
    f("env", StringList),
    f("workingDir", String),
    f("fileCaps", CapListMap),
];

pub(crate) const NODE: &[Field] = &[f("kernelVersion", String)];

pub(crate) const GRANTED: &[Field] = &[
    f("bounding", CapList),
    f("effective", CapList),
    f("permitted", CapList),
    f("inheritable", CapList),
    f("ambient", CapList),
];

/// The top-level CEL variables, in the order messages list them.
pub(crate) const VARIABLES: &[Field] = &[
    f("pod", Object(POD)),
    f("container", Object(CONTAINER)),
    f("image", Object(IMAGE)),
    f("node", Object(NODE)),
    f("granted", Object(GRANTED)),
];

/// Edit distance, for "did you mean" hints (names are short: the quadratic
/// table is a few hundred cells).
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(!ca.eq_ignore_ascii_case(cb));
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate nearest to `name`, if it is close enough to be a typo.
pub(crate) fn nearest<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .map(|c| (distance(name, c), c))
        .filter(|(d, c)| *d <= (c.len().max(name.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::policy::facts::{CelVars, EntrypointFacts, Facts, bind_granted};
    use std::sync::Arc;

    /// The schema and what [`Facts::bind`] gives CEL are the same: every
    /// object has exactly the schema's number of fields, and each field
    /// exists with the schema's CEL type.
    #[test]
    fn schema_matches_the_bound_facts() {
        let env = Arc::new(cel::Env::stdlib());
        let mut facts = Facts::default();
        facts.container.capabilities.add = vec!["net_raw".into()];
        facts.pod.labels.insert("a".into(), "b".into());
        let entry = EntrypointFacts::default();
        let mut ctx = cel::Context::with_env(Arc::clone(&env));
        facts.bind(
            &mut ctx,
            CelVars::ALL,
            facts.container.capabilities.lists().unwrap(),
            &entry,
        );
        bind_granted(
            &mut ctx,
            &crate::capabilities::kernel::ThreadCaps::default(),
        );
        let eval = |src: &str| {
            env.compile(src)
                .unwrap()
                .execute(&ctx)
                .unwrap_or_else(|e| panic!("{src}: {e}"))
        };
        fn walk(
            path: &str,
            fields: &[Field],
            out: &mut Vec<(std::string::String, Option<&'static str>, usize)>,
        ) {
            out.push((path.to_string(), None, fields.len()));
            for f in fields {
                let p = format!("{path}.{}", f.name);
                let ty = match f.ty {
                    FieldType::Bool => "bool",
                    FieldType::Int => "int",
                    FieldType::String => "string",
                    FieldType::StringList | FieldType::CapList => "list",
                    FieldType::StringMap | FieldType::CapListMap => "map",
                    FieldType::Object(inner) => {
                        walk(&p, inner, out);
                        "map"
                    }
                };
                out.push((p, Some(ty), 0));
            }
        }
        let mut all = Vec::new();
        for v in VARIABLES {
            let FieldType::Object(fields) = v.ty else {
                panic!("{} is not an object", v.name)
            };
            walk(v.name, fields, &mut all);
        }
        for (path, ty, n) in all {
            match ty {
                None => assert_eq!(
                    eval(&format!("size({path})")),
                    cel::Value::Int(n as i64),
                    "{path}: the bound facts have another number of fields than the schema"
                ),
                Some(t) => assert_eq!(
                    eval(&format!("type({path}) == {t}")),
                    cel::Value::Bool(true),
                    "{path} is not a {t}"
                ),
            }
        }
    }

    #[test]
    fn nearest_finds_typos_only() {
        let names = || CONTAINER.iter().map(|f| f.name);
        assert_eq!(nearest("nme", names()), Some("name"));
        assert_eq!(nearest("noNewPriv", names()), Some("noNewPrivs"));
        assert_eq!(nearest("readonlyrootfs", names()), Some("readOnlyRootfs"));
        assert_eq!(nearest("zzzzzzzzzz", names()), None);
    }
}
