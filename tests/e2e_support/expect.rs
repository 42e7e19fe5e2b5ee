//! The expected outcome of a scenario (`NAME.expect.yaml` beside
//! `NAME.yaml`), and the one comparison every runner uses, so the
//! CRI-direct test, the standalone kubelet and kind assert the same thing.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectFile {
    pub expect: Vec<Expectation>,
}

/// Which capability policies the node runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicySet {
    /// The repository's policy/*.yaml.
    Recommended,
    /// No policy files: capcri's built-in, containerd-like defaults.
    None,
}

/// What the pod status would say: a running container, a terminated one,
/// or a container kubelet could not create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Outcome {
    Running,
    Terminated,
    CreateContainerError,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expectation {
    pub policies: PolicySet,
    pub container: String,
    pub outcome: Outcome,
    /// Terminated: the exit code.
    pub exit_code: Option<i32>,
    /// Running/Terminated: a substring of the container log.
    pub log: Option<String>,
    /// CreateContainerError: a substring of the error message (what the
    /// pod's waiting state and event carry).
    pub message: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExpectError {
    #[error("expectation for {container:?}: outcome Terminated needs exitCode")]
    TerminatedWithoutExitCode { container: String },
    #[error(
        "expectation for {container:?}: outcome Running needs log (a line that shows it works)"
    )]
    RunningWithoutLog { container: String },
    #[error(
        "expectation for {container:?}: outcome CreateContainerError needs message and takes no log or exitCode"
    )]
    CreateErrorShape { container: String },
    #[error("expectation names container {container:?}, which the pod does not have")]
    UnknownContainer { container: String },
}

impl Expectation {
    /// Refuses expectations that would assert nothing or the wrong thing.
    pub fn validate(&self, containers: &[&str]) -> Result<(), ExpectError> {
        let container = self.container.clone();
        if !containers.contains(&self.container.as_str()) {
            return Err(ExpectError::UnknownContainer { container });
        }
        match self.outcome {
            Outcome::Terminated if self.exit_code.is_none() => {
                Err(ExpectError::TerminatedWithoutExitCode { container })
            }
            Outcome::Running if self.log.is_none() => {
                Err(ExpectError::RunningWithoutLog { container })
            }
            Outcome::CreateContainerError
                if self.message.is_none() || self.log.is_some() || self.exit_code.is_some() =>
            {
                Err(ExpectError::CreateErrorShape { container })
            }
            _ => Ok(()),
        }
    }

    /// Whether `seen` is final enough to judge: a runner polls until it is
    /// (or its deadline passes, then judges what it has).
    pub fn settled(&self, seen: &Observed) -> bool {
        match (self.outcome, seen) {
            (_, Observed::Pending) => false,
            (Outcome::Running, Observed::Running { log }) => {
                self.log.as_deref().is_none_or(|l| log.contains(l))
            }
            (Outcome::Running, _) => true,
            (_, Observed::Running { .. }) => false,
            _ => true,
        }
    }

    /// Ok, or what differs, with everything seen (for the test failure).
    pub fn check(&self, seen: &Observed) -> Result<(), String> {
        let fail = |what: &str| Err(format!("{}: {what}; seen {seen:?}", self.container));
        match (self.outcome, seen) {
            (Outcome::Running, Observed::Running { log })
            | (Outcome::Terminated, Observed::Terminated { log, .. }) => {
                if let (Outcome::Terminated, Observed::Terminated { exit_code, .. }) =
                    (self.outcome, seen)
                    && Some(*exit_code) != self.exit_code
                {
                    return fail(&format!("expected exit code {:?}", self.exit_code));
                }
                match &self.log {
                    Some(want) if !log.contains(want.as_str()) => {
                        fail(&format!("log lacks {want:?}"))
                    }
                    _ => Ok(()),
                }
            }
            (Outcome::CreateContainerError, Observed::CreateContainerError { message }) => {
                match &self.message {
                    Some(want) if !message.contains(want.as_str()) => {
                        fail(&format!("message lacks {want:?}"))
                    }
                    _ => Ok(()),
                }
            }
            (want, _) => fail(&format!("expected {want:?}")),
        }
    }
}

/// What a runner saw of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Not created yet, or created and not started.
    Pending,
    Running {
        log: String,
    },
    Terminated {
        exit_code: i32,
        log: String,
    },
    CreateContainerError {
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(yaml: &str) -> Expectation {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn terminated_checks_exit_code_and_log() {
        let e =
            exp("{policies: none, container: dns, outcome: Terminated, exitCode: 1, log: denied}");
        assert!(e.validate(&["dns"]).is_ok());
        let ok = Observed::Terminated {
            exit_code: 1,
            log: "nc: bind: Permission denied".into(),
        };
        assert_eq!(e.check(&ok), Ok(()));
        let wrong_code = Observed::Terminated {
            exit_code: 0,
            log: "denied".into(),
        };
        assert!(e.check(&wrong_code).unwrap_err().contains("exit code"));
        let wrong_log = Observed::Terminated {
            exit_code: 1,
            log: "fine".into(),
        };
        assert!(e.check(&wrong_log).unwrap_err().contains("log lacks"));
        assert!(
            e.check(&Observed::Running {
                log: "denied".into()
            })
            .is_err()
        );
        assert!(!e.settled(&Observed::Running { log: String::new() }));
        assert!(e.settled(&ok));
    }

    #[test]
    fn running_settles_once_the_log_shows_it() {
        let e = exp("{policies: recommended, container: dns, outcome: Running, log: answer}");
        assert!(!e.settled(&Observed::Pending));
        assert!(!e.settled(&Observed::Running {
            log: "starting".into()
        }));
        let up = Observed::Running {
            log: "answer from :53".into(),
        };
        assert!(e.settled(&up));
        assert_eq!(e.check(&up), Ok(()));
        let died = Observed::Terminated {
            exit_code: 1,
            log: String::new(),
        };
        assert!(
            e.settled(&died),
            "a dead container will not come back: judge now"
        );
        assert!(e.check(&died).is_err());
    }

    #[test]
    fn create_error_matches_the_message() {
        let e = exp(
            "{policies: recommended, container: c, outcome: CreateContainerError, message: CAP_NET_ADMIN}",
        );
        let seen = Observed::CreateContainerError {
            message: "/usr/local/bin/ping carries CAP_NET_ADMIN".into(),
        };
        assert_eq!(e.check(&seen), Ok(()));
        let other = Observed::CreateContainerError {
            message: "no such image".into(),
        };
        assert!(e.check(&other).is_err());
        assert!(
            e.check(&Observed::Terminated {
                exit_code: 1,
                log: String::new()
            })
            .is_err()
        );
    }

    #[test]
    fn expectations_that_assert_nothing_are_refused() {
        let e = exp("{policies: none, container: a, outcome: Terminated}");
        assert_eq!(
            e.validate(&["a"]),
            Err(ExpectError::TerminatedWithoutExitCode {
                container: "a".into()
            })
        );
        let e = exp("{policies: none, container: a, outcome: Running}");
        assert!(e.validate(&["a"]).is_err());
        let e = exp(
            "{policies: none, container: a, outcome: CreateContainerError, message: m, exitCode: 1}",
        );
        assert!(e.validate(&["a"]).is_err());
        let e = exp("{policies: none, container: b, outcome: Running, log: x}");
        assert_eq!(
            e.validate(&["a"]),
            Err(ExpectError::UnknownContainer {
                container: "b".into()
            })
        );
        assert!(
            serde_norway::from_str::<Expectation>(
                "{policies: some, container: a, outcome: Running}"
            )
            .is_err()
        );
    }
}
