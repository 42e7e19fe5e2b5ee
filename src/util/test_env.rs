//! What a unit test may do on this machine (tests only).

/// Root, and `CAPCRI_PRIVILEGED_TESTS` set: the unit tests that mount,
/// change ownership or enter namespaces run only then, as the privileged
/// integration suites do.
pub fn privileged() -> bool {
    std::env::var_os("CAPCRI_PRIVILEGED_TESTS").is_some() && nix::unistd::geteuid().is_root()
}
