//! Human and JSON renderings of a [`Decision`] (`capcri explain`,
//! `capcri policy eval`).

use std::fmt::Write as _;

use super::decision::Decision;

/// A table for people: verdict, the five sets, exec path, prediction,
/// warnings, and one line per reason.
pub fn render_table(d: &Decision) -> String {
    let mut out = String::new();
    let verdict = if d.allowed { "ALLOWED" } else { "DENIED" };
    let _ = writeln!(out, "decision     {verdict}");
    if let Some(m) = &d.deny_message {
        let _ = writeln!(out, "deny         {m}");
    }
    let sets = [
        ("bounding", d.caps.bounding),
        ("effective", d.caps.effective),
        ("permitted", d.caps.permitted),
        ("inheritable", d.caps.inheritable),
        ("ambient", d.caps.ambient),
    ];
    for (name, set) in sets {
        let _ = writeln!(out, "{name:<12} {set}");
    }
    let _ = writeln!(out, "exec path    {}", d.exec_path);
    let _ = writeln!(out, "preflight    {:?}", d.preflight);
    match &d.prediction {
        Some(p) => {
            let _ = writeln!(
                out,
                "after execve effective {}; permitted {}; ambient {}",
                p.effective, p.permitted, p.ambient
            );
        }
        None => {
            let _ = writeln!(out, "after execve (not predictable, see warnings)");
        }
    }
    if !d.sysctls.is_empty() {
        let _ = writeln!(out, "pod sysctls:");
        super::pod_decision::render_sysctls(&mut out, &d.sysctls);
    }
    if !d.warnings.is_empty() {
        let _ = writeln!(out, "warnings:");
        for w in &d.warnings {
            let _ = writeln!(out, "  - {w}");
        }
    }
    let width_subject = d
        .reasons
        .iter()
        .map(|r| r.subject.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let width_source = d
        .reasons
        .iter()
        .map(|r| r.source.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(out, "reasons:");
    let _ = writeln!(
        out,
        "  {:<width_subject$}  {:<width_source$}  WHY",
        "SUBJECT", "SOURCE"
    );
    for r in &d.reasons {
        let _ = writeln!(
            out,
            "  {:<width_subject$}  {:<width_source$}  {}",
            r.subject, r.source, r.text
        );
    }
    out
}

/// The decision as pretty JSON (the stored and machine-readable form).
pub fn render_json(d: &Decision) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(d)
}
