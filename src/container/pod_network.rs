//! Network counters of pods' network namespaces, for PodSandboxStats.
//!
//! The kernel's `/proc/<task>/net/dev` shows the interfaces of the
//! *reading task's* network namespace. One short-lived thread enters each
//! pod's pinned namespace in turn (setns(CLONE_NEWNET) is allowed on one
//! thread of a multi-threaded process, unlike a mount or user namespace
//! change) and reads `/proc/thread-self/net/dev`; the thread ends with the
//! call, so no runtime thread is ever left in a pod's namespace. One file
//! read per pod, no netlink socket, no sampling interval.
//!
//! Interface names and counts are the pod's to choose (a container with
//! CAP_NET_ADMIN renames, creates and deletes interfaces): the parser takes
//! at most `MAX_INTERFACES` lines and skips malformed ones.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

/// The counters kubelet reads of one interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterfaceUsage {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
    pub tx_errors: u64,
}

/// A pod's interfaces, the default one (`eth0`, the interface CNI plugins
/// create and kubelet reports) apart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkUsage {
    pub timestamp: i64,
    pub default_interface: Option<InterfaceUsage>,
    pub interfaces: Vec<InterfaceUsage>,
}

/// The interface kubelet's CRI stats provider treats as the pod's
/// (`network.DefaultInterfaceName`).
pub const DEFAULT_INTERFACE: &str = "eth0";

/// More interfaces than any pod has; a pod that makes more gets its first
/// ones reported.
const MAX_INTERFACES: usize = 256;
/// /proc/net/dev lines are ~130 bytes.
const MAX_BYTES: u64 = 64 * 1024;

/// Parses `/proc/net/dev`: two header lines, then `name: rx_bytes
/// rx_packets rx_errs rx_drop rx_fifo rx_frame rx_compressed rx_multicast
/// tx_bytes tx_packets tx_errs ...`. Loopback is left out (containerd and
/// cadvisor do the same: it is not the pod's traffic).
pub fn parse_net_dev(text: &str, timestamp: i64) -> NetworkUsage {
    let mut usage = NetworkUsage {
        timestamp,
        ..Default::default()
    };
    for line in text.lines().skip(2).take(MAX_INTERFACES) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || name == "lo" {
            continue;
        }
        let n: Vec<u64> = counters
            .split_whitespace()
            .map_while(|f| f.parse().ok())
            .collect();
        if n.len() < 12 {
            continue;
        }
        let iface = InterfaceUsage {
            name: name.to_string(),
            rx_bytes: n[0],
            rx_packets: n[1],
            rx_errors: n[2],
            rx_dropped: n[3],
            tx_bytes: n[8],
            tx_packets: n[9],
            tx_errors: n[10],
            tx_dropped: n[11],
        };
        if name == DEFAULT_INTERFACE {
            usage.default_interface = Some(iface);
        } else {
            usage.interfaces.push(iface);
        }
    }
    usage
}

/// Reads the counters of each network namespace pinned at `pins` (None
/// where one cannot be entered or read: a pod being torn down). Blocking;
/// one thread for the whole batch.
pub fn read_namespaces(pins: Vec<PathBuf>) -> Vec<Option<NetworkUsage>> {
    if pins.is_empty() {
        return Vec::new();
    }
    let count = pins.len();
    std::thread::Builder::new()
        .name("capcri-netstats".into())
        .spawn(move || pins.iter().map(|p| read_in(p)).collect())
        .ok()
        .and_then(|t| t.join().ok())
        .unwrap_or_else(|| vec![None; count])
}

/// On the current thread: enter the namespace at `pin` and read it.
fn read_in(pin: &Path) -> Option<NetworkUsage> {
    let ns = File::open(pin).ok()?;
    setns(&ns, CloneFlags::CLONE_NEWNET).ok()?;
    let mut text = String::new();
    File::open("/proc/thread-self/net/dev")
        .ok()?
        .take(MAX_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    Some(parse_net_dev(&text, crate::util::time::now_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0:   52341     412    3    4    0     0          0         0    18234     201    7    0    0     0       0          0
 net1: 5 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0
garbage line without colon
 bad: 1 2 x
";

    #[test]
    fn counters_of_every_interface_but_loopback() {
        let u = parse_net_dev(SAMPLE, 42);
        assert_eq!(u.timestamp, 42);
        assert_eq!(
            u.default_interface,
            Some(InterfaceUsage {
                name: "eth0".into(),
                rx_bytes: 52341,
                rx_packets: 412,
                rx_errors: 3,
                rx_dropped: 4,
                tx_bytes: 18234,
                tx_packets: 201,
                tx_errors: 7,
                tx_dropped: 0,
            })
        );
        assert_eq!(u.interfaces.len(), 1);
        assert_eq!(u.interfaces[0].name, "net1");
        assert_eq!((u.interfaces[0].rx_bytes, u.interfaces[0].tx_bytes), (5, 6));
    }

    #[test]
    fn hostile_listings_are_bounded() {
        let mut text = String::from("h1\nh2\n");
        for i in 0..10_000 {
            text.push_str(&format!("if{i}: 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1\n"));
        }
        assert_eq!(parse_net_dev(&text, 1).interfaces.len(), MAX_INTERFACES);
        assert_eq!(
            parse_net_dev("", 1),
            NetworkUsage {
                timestamp: 1,
                ..Default::default()
            }
        );
        let u = parse_net_dev(
            "a\nb\n eth0: 99999999999999999999999 1 2 3 4 5 6 7 8 9 10\n",
            1,
        );
        assert_eq!(
            u.default_interface, None,
            "an overflowing counter is skipped"
        );
    }

    /// This thread's own namespace through its /proc/self/ns/net pin:
    /// loopback only is never reported, and a missing pin is None.
    #[test]
    fn reads_a_namespace_through_its_pin() {
        let got = read_namespaces(vec![
            PathBuf::from("/proc/self/ns/net"),
            PathBuf::from("/nonexistent/ns/net"),
        ]);
        assert_eq!(got.len(), 2);
        // Entering a namespace needs CAP_SYS_ADMIN: None when not root.
        assert!(
            got[0]
                .as_ref()
                .is_none_or(|u| u.interfaces.iter().all(|i| i.name != "lo"))
        );
        assert!(got[1].is_none());
    }
}
