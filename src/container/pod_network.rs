//! Network counters of pods' network namespaces, for PodSandboxStats.
//!
//! The kernel's `/proc/<task>/net/dev` shows the interfaces of the
//! *opening task's* network namespace, and an open one keeps showing that
//! namespace: each read regenerates it from the namespace it was opened
//! in, whichever thread reads. So the first time a pod is asked for, one
//! short-lived thread enters its pinned namespace (setns(CLONE_NEWNET) is
//! allowed on one thread of a multi-threaded process, unlike a mount or
//! user namespace change) and opens `/proc/thread-self/net/dev`; the thread
//! ends with that, so no runtime thread is ever left in a pod's namespace.
//! The file is kept, and every later read rewinds and reads it. Entering
//! each namespace on every call (an open, a setns and a second open per
//! pod) was most of ListPodSandboxStats at 250 pods: 12 ms.
//!
//! The figures of each read are kept too ([`kept`]): ListPodSandboxStats
//! answers from them and has them read again after the call, off it, as
//! it does the cgroup figures (`node::stats`); PodSandboxStats reads now.
//!
//! An open file holds its namespace: [`forget`] drops a pod's when its
//! namespaces are unpinned, and [`retain`] what is no longer a pod's.
//!
//! Interface names and counts are the pod's to choose (a container with
//! CAP_NET_ADMIN renames, creates and deletes interfaces): the parser takes
//! at most `MAX_INTERFACES` lines and skips malformed ones, and a read
//! stops at `MAX_BYTES`.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use nix::sched::{CloneFlags, setns};

use crate::util::fast_map::FastMap;
use crate::util::sync::lock;

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
        // The first 12 counters, in place: ListPodSandboxStats parses
        // every pod's lines on every call.
        let mut n = [0u64; 12];
        let mut fields = 0;
        for f in counters.split_ascii_whitespace().take(n.len()) {
            let Ok(v) = f.parse() else { break };
            n[fields] = v;
            fields += 1;
        }
        if fields < n.len() {
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

fn kept_files() -> &'static Mutex<FastMap<PathBuf, File>> {
    static KEPT: OnceLock<Mutex<FastMap<PathBuf, File>>> = OnceLock::new();
    KEPT.get_or_init(Default::default)
}

/// The figures of each namespace's latest read, for [`kept`]. Apart from
/// the files, so a call copying figures never waits behind a batch of
/// reads holding `kept_files`.
fn kept_figures() -> &'static Mutex<FastMap<PathBuf, NetworkUsage>> {
    static KEPT: OnceLock<Mutex<FastMap<PathBuf, NetworkUsage>>> = OnceLock::new();
    KEPT.get_or_init(Default::default)
}

/// Reads the counters of each network namespace pinned at `pins` (None
/// where one cannot be entered or read: a pod being torn down), and keeps
/// them for [`kept`]. Blocking; at most one thread, for the namespaces not
/// read before.
///
/// A kept file is read without looking at its pin again: a pod's pin
/// names one namespace for the pod's whole life (its path holds the pod's
/// id), and the file shows that namespace even if the pin is gone, until
/// [`forget`] or [`retain`] closes it with the pod.
pub fn read_namespaces(pins: Vec<PathBuf>) -> Vec<Option<NetworkUsage>> {
    let missing: Vec<PathBuf> = {
        let kept = lock(kept_files());
        pins.iter()
            .filter(|p| !kept.contains_key(*p))
            .cloned()
            .collect()
    };
    let opened = open_in_namespaces(missing);
    let read: Vec<Option<NetworkUsage>> = {
        let mut kept = lock(kept_files());
        kept.extend(opened);
        let mut buf = Vec::new();
        pins.iter()
            .map(|pin| {
                let file = kept.get_mut(pin)?;
                let usage = read_kept(file, &mut buf)
                    .map(|text| parse_net_dev(text, crate::util::time::now_nanos()));
                if usage.is_none() {
                    kept.remove(pin);
                }
                usage
            })
            .collect()
    };
    let mut figures = lock(kept_figures());
    for (pin, usage) in pins.into_iter().zip(&read) {
        match usage {
            Some(u) => {
                figures.insert(pin, u.clone());
            }
            None => {
                figures.remove(&pin);
            }
        }
    }
    read
}

/// The figures the latest [`read_namespaces`] of each of `pins` found
/// (None for a namespace not read yet, or not readable then). No file is
/// read: ListPodSandboxStats answers from these, and regenerating every
/// pod's `net/dev` inside the call was half of it at 250 pods, and what
/// made it grow faster than the pod count (`perf record -p <daemon>`:
/// `dev_seq_printf_stats`, `vsnprintf`).
pub fn kept(pins: &[PathBuf]) -> Vec<Option<NetworkUsage>> {
    let figures = lock(kept_figures());
    pins.iter().map(|pin| figures.get(pin).cloned()).collect()
}

/// Opens `net/dev` inside each pinned namespace, on one thread that ends
/// after (it is left in the last namespace it entered).
fn open_in_namespaces(missing: Vec<PathBuf>) -> Vec<(PathBuf, File)> {
    if missing.is_empty() {
        return Vec::new();
    }
    std::thread::Builder::new()
        .name("capcri-netstats".into())
        .spawn(move || {
            missing
                .into_iter()
                .filter_map(|pin| {
                    let ns = File::open(&pin).ok()?;
                    setns(&ns, CloneFlags::CLONE_NEWNET).ok()?;
                    let file = File::open("/proc/thread-self/net/dev").ok()?;
                    Some((pin, file))
                })
                .collect()
        })
        .ok()
        .and_then(|t| t.join().ok())
        .unwrap_or_default()
}

/// The whole listing, from the start, at most `MAX_BYTES`, into `buf`
/// (reused across a batch). Rewound and read in order rather than with
/// `pread`: a seq_file read at an offset it did not stop at regenerates
/// every line before it, so the `pread` that finds the end cost as much as
/// the one that read the lines. The caller holds the lock that makes the
/// file's offset its own.
fn read_kept<'a>(file: &mut File, buf: &'a mut Vec<u8>) -> Option<&'a str> {
    file.seek(SeekFrom::Start(0)).ok()?;
    buf.clear();
    file.take(MAX_BYTES).read_to_end(buf).ok()?;
    std::str::from_utf8(buf).ok()
}

/// Closes the kept `net/dev` of the namespace pinned at `pin`, so the
/// namespace can go with its pod.
pub fn forget(pin: &Path) {
    lock(kept_files()).remove(pin);
    lock(kept_figures()).remove(pin);
}

/// Closes every kept `net/dev` but those of `pins` (the pods there are).
pub fn retain(pins: &HashSet<PathBuf>) {
    lock(kept_files()).retain(|pin, _| pins.contains(pin));
    lock(kept_figures()).retain(|pin, _| pins.contains(pin));
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
        assert_eq!(kept(&[PathBuf::from("/nonexistent/ns/net")]), [None]);
        // Entering a namespace needs CAP_SYS_ADMIN: None when not root.
        assert!(
            got[0]
                .as_ref()
                .is_none_or(|u| u.interfaces.iter().all(|i| i.name != "lo"))
        );
        assert!(got[1].is_none());
    }

    /// The first read enters the namespace and keeps its `net/dev`; later
    /// reads use the kept file; `forget` and `retain` close it.
    #[test]
    fn a_namespace_is_entered_once_then_read_through_the_kept_file() {
        let pin = PathBuf::from("/proc/thread-self/ns/net");
        let first = read_namespaces(vec![pin.clone()]);
        if first[0].is_none() {
            return; // Entering a namespace needs CAP_SYS_ADMIN.
        }
        let kept_fd = |p: &Path| {
            use std::os::fd::AsRawFd;
            lock(kept_files()).get(p).map(|f| f.as_raw_fd())
        };
        let fd = kept_fd(&pin).expect("kept after the first read");
        let second = read_namespaces(vec![pin.clone()]);
        assert_eq!(kept_fd(&pin), Some(fd), "no second open");
        let names = |u: &Option<NetworkUsage>| {
            u.as_ref().map(|u| {
                u.interfaces
                    .iter()
                    .map(|i| i.name.clone())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(names(&second[0]), names(&first[0]));
        // The figures of the latest read are kept, and copied without a read.
        assert_eq!(kept(std::slice::from_ref(&pin)), second);
        retain(&HashSet::from([pin.clone()]));
        assert_eq!(kept_fd(&pin), Some(fd));
        assert!(kept(std::slice::from_ref(&pin))[0].is_some());
        forget(&pin);
        assert_eq!(kept_fd(&pin), None);
        assert_eq!(kept(std::slice::from_ref(&pin)), [None]);
        read_namespaces(vec![pin.clone()]);
        assert!(kept_fd(&pin).is_some());
        retain(&HashSet::new());
        assert_eq!(kept_fd(&pin), None);
        assert_eq!(kept(std::slice::from_ref(&pin)), [None]);
    }

    #[test]
    fn a_kept_listing_is_read_whole_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let small = dir.path().join("small");
        std::fs::write(&small, "a\nb\n eth0: 1 2 3 4 5 6 7 8 9 10 11 12\n").expect("write");
        let mut buf = Vec::new();
        let mut f = File::open(&small).expect("open");
        let text = read_kept(&mut f, &mut buf).expect("read").to_string();
        assert!(text.ends_with("12\n"), "{text:?}");
        // The second read starts from the beginning again.
        assert_eq!(read_kept(&mut f, &mut buf), Some(text.as_str()));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_BYTES as usize * 2]).expect("write");
        let mut f = File::open(&big).expect("open");
        assert_eq!(
            read_kept(&mut f, &mut buf).map(str::len),
            Some(MAX_BYTES as usize)
        );
        // A procfs listing (a seq_file) reads whole again after a rewind.
        let mut f = File::open("/proc/self/net/dev").expect("open");
        let once = read_kept(&mut f, &mut buf).expect("read").to_string();
        assert!(once.starts_with("Inter-|"), "{once:?}");
        assert_eq!(
            read_kept(&mut f, &mut buf).map(|t| t.lines().count()),
            Some(once.lines().count())
        );
    }
}
