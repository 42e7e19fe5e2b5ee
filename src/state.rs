//! The lifecycle states of pods and containers, what each state allows,
//! and the one error for an operation asked in the wrong state.
//!
//! Every "is it running?" check of a CRI operation is a call here
//! (`ContainerState::check`, `PodState::check`, through the records'
//! `check` methods), so the rule and its message exist once; `cri/status.rs`
//! maps [`WrongState`] to FailedPrecondition, as containerd answers a
//! request on a container in the wrong state. Pure: no I/O.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    /// The monitor holding it is gone and its fate cannot be known.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    Ready,
    NotReady,
}

/// What is asked of a container that depends on its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerOp {
    /// StartContainer: once, from created.
    Start,
    /// Exec, ExecSync: a process joins the container's namespaces.
    Exec,
    /// Attach: the container's stdio.
    Attach,
    /// UpdateContainerResources: its cgroup exists from create to exit.
    UpdateResources,
    /// ReopenContainerLog: the monitor writes the log of a live process.
    ReopenLog,
    /// Another container's `namespace_options.target_id`: its PID namespace
    /// lives as long as its init.
    SharePidNamespace,
}

/// What is asked of a pod that depends on its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodOp {
    /// CreateContainer in the pod: its namespaces must still be up.
    CreateContainer,
    /// PortForward: a connection into its network namespace.
    PortForward,
}

impl ContainerState {
    /// Created or running: a state only the daemon's own StartContainer,
    /// or an exit its pod's monitor reports, moves it from (what the exit
    /// tracking relies on to answer from the cache).
    pub fn is_live(self) -> bool {
        matches!(self, ContainerState::Created | ContainerState::Running)
    }

    /// The name the CRI uses (CONTAINER_CREATED... lower-cased).
    pub fn name(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
            ContainerState::Unknown => "unknown",
        }
    }

    pub fn can_start(self) -> bool {
        self == ContainerState::Created
    }

    pub fn can_exec(self) -> bool {
        self == ContainerState::Running
    }

    pub fn can_attach(self) -> bool {
        self == ContainerState::Running
    }

    /// Its cgroup exists (made at create, removed after exit).
    pub fn can_update_resources(self) -> bool {
        matches!(self, ContainerState::Created | ContainerState::Running)
    }

    pub fn can_reopen_log(self) -> bool {
        self == ContainerState::Running
    }

    pub fn can_share_pid_namespace(self) -> bool {
        self == ContainerState::Running
    }

    pub fn allows(self, op: ContainerOp) -> bool {
        match op {
            ContainerOp::Start => self.can_start(),
            ContainerOp::Exec => self.can_exec(),
            ContainerOp::Attach => self.can_attach(),
            ContainerOp::UpdateResources => self.can_update_resources(),
            ContainerOp::ReopenLog => self.can_reopen_log(),
            ContainerOp::SharePidNamespace => self.can_share_pid_namespace(),
        }
    }

    /// `Ok` when `op` is allowed; otherwise the error naming the container,
    /// its state, what `op` needs and the fix.
    pub fn check(self, op: ContainerOp, id: &str) -> Result<(), WrongState> {
        if self.allows(op) {
            return Ok(());
        }
        let (wanted, action, fix) = match op {
            ContainerOp::Start => (
                "in the created state",
                "start",
                "a container is started once; create a new container to run it again",
            ),
            ContainerOp::Exec => (
                "running",
                "exec",
                "start the container first, or exec into a running container",
            ),
            ContainerOp::Attach => (
                "running",
                "attach",
                "start the container first, or attach to a running container",
            ),
            ContainerOp::UpdateResources => (
                "created or running",
                "updating resources",
                "an exited container keeps no cgroup; update a created or running container",
            ),
            ContainerOp::ReopenLog => (
                "running",
                "reopening the log",
                "only a running container writes its log",
            ),
            ContainerOp::SharePidNamespace => (
                "running",
                "sharing its PID namespace (namespace_options.target_id)",
                "its PID namespace is gone; start it, or target a running container",
            ),
        };
        Err(WrongState {
            kind: "container",
            id: id.to_string(),
            state: self.name(),
            wanted,
            action,
            fix,
        })
    }
}

impl PodState {
    pub fn name(self) -> &'static str {
        match self {
            PodState::Ready => "ready",
            PodState::NotReady => "stopped",
        }
    }

    pub fn can_create_container(self) -> bool {
        self == PodState::Ready
    }

    pub fn can_port_forward(self) -> bool {
        self == PodState::Ready
    }

    pub fn allows(self, op: PodOp) -> bool {
        match op {
            PodOp::CreateContainer => self.can_create_container(),
            PodOp::PortForward => self.can_port_forward(),
        }
    }

    pub fn check(self, op: PodOp, id: &str) -> Result<(), WrongState> {
        if self.allows(op) {
            return Ok(());
        }
        let (action, fix) = match op {
            PodOp::CreateContainer => (
                "creating a container",
                "a stopped pod's namespaces are gone; create containers in a running pod",
            ),
            PodOp::PortForward => (
                "port forwarding",
                "a stopped pod has no network; forward to a running pod",
            ),
        };
        Err(WrongState {
            kind: "pod sandbox",
            id: id.to_string(),
            state: self.name(),
            wanted: "ready",
            action,
            fix,
        })
    }
}

/// An operation asked of a pod or container whose state does not allow
/// it. FailedPrecondition on the wire (`cri/status.rs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {id} is not {wanted} (it is {state}): {action} needs it {wanted}; {fix}")]
pub struct WrongState {
    /// "container" or "pod sandbox".
    pub kind: &'static str,
    pub id: String,
    /// Its state now ([`ContainerState::name`], [`PodState::name`]).
    pub state: &'static str,
    /// The state(s) the operation needs.
    pub wanted: &'static str,
    pub action: &'static str,
    pub fix: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ContainerState; 4] = [
        ContainerState::Created,
        ContainerState::Running,
        ContainerState::Exited,
        ContainerState::Unknown,
    ];

    /// Which state allows which operation: the whole table.
    #[test]
    fn container_states_allow_exactly_these_operations() {
        use ContainerOp::*;
        let table: [(ContainerOp, &[ContainerState]); 6] = [
            (Start, &[ContainerState::Created]),
            (Exec, &[ContainerState::Running]),
            (Attach, &[ContainerState::Running]),
            (
                UpdateResources,
                &[ContainerState::Created, ContainerState::Running],
            ),
            (ReopenLog, &[ContainerState::Running]),
            (SharePidNamespace, &[ContainerState::Running]),
        ];
        for (op, allowed) in table {
            for s in ALL {
                assert_eq!(s.allows(op), allowed.contains(&s), "{s:?} {op:?}");
                assert_eq!(s.check(op, "c1").is_ok(), allowed.contains(&s));
            }
        }
    }

    /// Exited and Unknown are never answered from the exit tracking's
    /// cache: an exited record is final, an unknown one asks its monitor.
    #[test]
    fn only_created_and_running_are_live() {
        let live: Vec<_> = ALL.into_iter().filter(|s| s.is_live()).collect();
        assert_eq!(live, [ContainerState::Created, ContainerState::Running]);
    }

    #[test]
    fn pod_states_allow_exactly_these_operations() {
        for op in [PodOp::CreateContainer, PodOp::PortForward] {
            assert!(PodState::Ready.check(op, "p1").is_ok());
            assert!(PodState::NotReady.check(op, "p1").is_err());
        }
    }

    /// The message names the object, its state, what was needed and a fix.
    #[test]
    fn the_error_names_the_state_and_the_fix() {
        let e = ContainerState::Exited
            .check(ContainerOp::Exec, "abc")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "container abc is not running (it is exited): exec needs it running; \
             start the container first, or exec into a running container"
        );
        let e = ContainerState::Running
            .check(ContainerOp::Start, "abc")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("is not in the created state (it is running)"),
            "{e}"
        );
        assert!(e.to_string().contains("started once"), "{e}");
        let e = PodState::NotReady
            .check(PodOp::CreateContainer, "p1")
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("pod sandbox p1 is not ready (it is stopped)"),
            "{e}"
        );
    }
}
