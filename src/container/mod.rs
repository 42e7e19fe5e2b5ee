//! Container lifecycle and its state machine (created, running, exited,
//! unknown), exit codes and CRI log files.
