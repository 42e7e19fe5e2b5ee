//! The only place that calls libcontainer. Everything runs inside the
//! single-threaded per-pod monitor process; the daemon talks to it through
//! a typed protocol over a unix socket.
