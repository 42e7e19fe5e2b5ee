//! The one gate of the privileged tests, used by every test binary that
//! runs real containers, mounts, namespaces or cgroups (through `common`,
//! `runtime_support`, or `mod support;` directly).
//!
//! A privileged test runs only when `CAPCRI_PRIVILEGED_TESTS` is set AND
//! the test runs as root (euid 0): the variable alone, under a normal
//! user, would make every such test fail on its first mount instead of
//! skipping. Otherwise it returns early, printing why, so a plain
//! `cargo test` stays green on a developer's machine. `hack/test.sh` sets
//! the variable and runs as root: there, every gated test runs.
#![allow(dead_code)]

/// Set to run the privileged tests (as root).
pub const PRIVILEGED_ENV: &str = "CAPCRI_PRIVILEGED_TESTS";
/// The local test registry (`host:port`) the image-pulling tests use.
pub const REGISTRY_ENV: &str = "CAPCRI_TEST_REGISTRY";

/// Why this process may not run privileged tests, or `None` when it may.
pub fn not_privileged_because() -> Option<String> {
    if std::env::var_os(PRIVILEGED_ENV).is_none() {
        return Some(format!("{PRIVILEGED_ENV} is not set"));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Some(format!(
            "{PRIVILEGED_ENV} is set but euid is {euid}, not root"
        ));
    }
    None
}

/// True when privileged tests may run; otherwise says why (and what the
/// test also needs, `needs`) on stderr, and the test returns.
pub fn privileged(needs: &str) -> bool {
    match not_privileged_because() {
        None => true,
        Some(why) => {
            skip(&why, needs);
            false
        }
    }
}

/// The test registry, when privileged tests may run and it is set.
pub fn privileged_registry() -> Option<String> {
    if let Some(why) = not_privileged_because() {
        skip(&why, "the local registry in CAPCRI_TEST_REGISTRY");
        return None;
    }
    let registry = std::env::var(REGISTRY_ENV).ok().filter(|r| !r.is_empty());
    if registry.is_none() {
        skip(
            &format!("{REGISTRY_ENV} is not set"),
            "the local registry in CAPCRI_TEST_REGISTRY",
        );
    }
    registry
}

fn skip(why: &str, needs: &str) {
    eprintln!(
        "skipped: {why}; run as root with {PRIVILEGED_ENV}=1 (this test also needs {needs}), e.g. \
         CAPCRI_PRIVILEGED_TESTS=1 CAPCRI_TEST_REGISTRY=127.0.0.1:5055 cargo test"
    );
}
