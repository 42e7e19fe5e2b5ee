//! Pod sandbox lifecycle: namespaces, hostname, DNS files, the pod monitor.
