//! Real CNI plugins (Debian's containernetworking-plugins: bridge,
//! host-local, portmap) against a network namespace this test pins itself
//! with `ip netns add`, the way capcri pins a pod's netns. Only a private
//! bridge, a private /24 and a 127.0.0.1 host port are used; nothing leaves
//! the machine, and everything made is removed on success and on failure.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod support;

use capcri::network::{CniConfig, CniNetwork, PodNetworkRequest};
use serde_json::json;

const REAL_BIN_DIRS: [&str; 2] = ["/opt/cni/bin", "/usr/lib/cni"];

fn privileged() -> bool {
    if !support::privileged("the CNI bridge plugin") {
        return false;
    }
    if !REAL_BIN_DIRS
        .iter()
        .any(|d| Path::new(d).join("bridge").exists())
    {
        eprintln!(
            "skipping: no CNI bridge plugin in {REAL_BIN_DIRS:?} (install containernetworking-plugins)"
        );
        return false;
    }
    true
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    match Command::new(cmd).args(args).output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run {cmd} {args:?}: {e}"),
    }
}

fn run_ok(cmd: &str, args: &[&str]) -> String {
    let o = run(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Everything the test creates on the host, removed in Drop.
struct HostFixture {
    netns_name: String,
    netns_path: PathBuf,
    bridge: String,
    ip_forward_before: Option<String>,
    /// portmap's top-level chains that did not exist before the test (per
    /// iptables binary): only these are removed afterwards.
    new_hostport_chains: Vec<(&'static str, String)>,
}

const HOSTPORT_CHAINS: [&str; 3] = [
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-SETMARK",
    "CNI-HOSTPORT-MASQ",
];

fn chain_exists(bin: &str, chain: &str) -> bool {
    Command::new(bin)
        .args(["-w", "-t", "nat", "-S", chain])
        .output()
        .is_ok_and(|o| o.status.success())
}

impl HostFixture {
    fn new(n: u8) -> HostFixture {
        let netns_name = format!("capcri-test-{}-{n}", std::process::id());
        let mut new_hostport_chains = Vec::new();
        for bin in ["iptables", "ip6tables"] {
            for chain in HOSTPORT_CHAINS {
                if !chain_exists(bin, chain) {
                    new_hostport_chains.push((bin, chain.to_string()));
                }
            }
        }
        let fixture = HostFixture {
            netns_path: PathBuf::from("/run/netns").join(&netns_name),
            netns_name,
            bridge: format!("cni-test-{n}"),
            ip_forward_before: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").ok(),
            new_hostport_chains,
        };
        run_ok("ip", &["netns", "add", &fixture.netns_name]);
        fixture
    }
}

impl Drop for HostFixture {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.netns_name]);
        let _ = run("ip", &["link", "del", &self.bridge]);
        // bridge with isGateway turns on IPv4 forwarding; put it back.
        if let Some(v) = &self.ip_forward_before {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", v.trim());
        }
        for (bin, chain) in &self.new_hostport_chains {
            if !chain_exists(bin, chain) {
                continue;
            }
            // Jumps into the chain from the built-in chains, then the chain.
            let rules = run(bin, &["-w", "-t", "nat", "-S"]);
            for rule in String::from_utf8_lossy(&rules.stdout).lines() {
                if rule.starts_with("-A ") && rule.ends_with(&format!("-j {chain}")) {
                    let mut args = vec!["-w", "-t", "nat", "-D"];
                    args.extend(rule[3..].split_whitespace());
                    let _ = run(bin, &args);
                }
            }
            let _ = run(bin, &["-w", "-t", "nat", "-F", chain]);
            let _ = run(bin, &["-w", "-t", "nat", "-X", chain]);
        }
    }
}

fn in_netns(ns: &str, args: &[&str]) -> std::process::Output {
    let mut full = vec!["netns", "exec", ns];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Serve one TCP connection from inside the netns: only this thread enters
/// it (setns affects the calling thread), the test itself stays on the host.
fn serve_once_in_netns(netns: &Path) -> (u16, std::thread::JoinHandle<Result<(), String>>) {
    let netns = netns.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || -> Result<(), String> {
        let f = std::fs::File::open(&netns).map_err(|e| e.to_string())?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
        let listener = TcpListener::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        tx.send(port).map_err(|e| e.to_string())?;
        let (mut conn, _) = listener.accept().map_err(|e| e.to_string())?;
        conn.write_all(b"hello from the pod")
            .map_err(|e| e.to_string())
    });
    let port = rx.recv_timeout(Duration::from_secs(10)).unwrap_or(0);
    (port, handle)
}

#[tokio::test]
async fn bridge_and_portmap_attach_and_detach_a_pinned_netns() {
    if !privileged() {
        return;
    }
    // A subnet and bridge number of our own: 10.240.<n>.0/24 unused on the host.
    let host_addrs = run_ok("ip", &["-4", "-o", "addr", "show"]);
    let seed = (std::process::id() as u64)
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0));
    let n = (0..200u64)
        .map(|i| (10 + (seed + i * 37) % 240) as u8)
        .find(|n| !host_addrs.contains(&format!("10.240.{n}.")))
        .expect("no free 10.240.x.0/24 on this host");
    let fixture = HostFixture::new(n);
    let tmp = tempfile::tempdir().unwrap();
    let conf_dir = tmp.path().join("net.d");
    let data_dir = tmp.path().join("ipam");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let conflist = json!({
        "cniVersion": "0.4.0",
        "name": format!("capcri-test-{n}"),
        "plugins": [
            {
                "type": "bridge",
                "bridge": fixture.bridge,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": format!("10.240.{n}.0/24"), "gateway": format!("10.240.{n}.1")}]],
                    "routes": [{"dst": format!("10.240.{n}.0/24")}],
                    "dataDir": data_dir
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": false}
        ]
    });
    std::fs::write(conf_dir.join("10-test.conflist"), conflist.to_string()).unwrap();

    let net = CniNetwork::new(CniConfig {
        conf_dir,
        bin_dirs: REAL_BIN_DIRS.iter().map(PathBuf::from).collect(),
        state_dir: tmp.path().join("state"),
        ..CniConfig::default()
    });
    let summary = net.status().unwrap();
    assert_eq!(summary.plugins, vec!["bridge", "portmap"]);

    let host_port = 20000 + u16::from(n) * 37 % 20000;
    let pod = PodNetworkRequest {
        pod_id: format!("capcritest{}x{n}", std::process::id()),
        name: "bridge-test".into(),
        namespace: "capcri-test".into(),
        uid: "uid-1".into(),
        netns: fixture.netns_path.clone(),
        port_mappings: vec![k8s_cri::v1::PortMapping {
            protocol: k8s_cri::v1::Protocol::Tcp as i32,
            container_port: 8080,
            host_port: i32::from(host_port),
            host_ip: "127.0.0.1".into(),
        }],
        ..Default::default()
    };

    let status = net.setup(&pod).await.unwrap();
    let pod_ip = status.ips[0];
    let IpAddr::V4(v4) = pod_ip else {
        panic!("expected an IPv4 pod IP, got {pod_ip}")
    };
    assert_eq!(v4.octets()[..3], [10, 240, n], "{status:?}");
    assert_eq!(status.interface, "eth0");

    // The address is on eth0 inside the pinned netns.
    let addr = in_netns(
        &fixture.netns_name,
        &["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
    );
    assert!(
        String::from_utf8_lossy(&addr.stdout).contains(&format!("{pod_ip}/24")),
        "{addr:?}"
    );
    // host-local recorded the allocation in its own dataDir.
    let lease = data_dir
        .join(format!("capcri-test-{n}"))
        .join(pod_ip.to_string());
    assert!(lease.exists(), "{} missing", lease.display());
    // portmap installed a DNAT for our host port to the pod.
    let nat = run_ok("iptables", &["-w", "-t", "nat", "-S"]);
    assert!(
        nat.contains(&format!("--to-destination {pod_ip}:8080")),
        "{nat}"
    );

    // The host reaches the pod over the bridge.
    let (port, server) = serve_once_in_netns(&fixture.netns_path);
    assert_ne!(port, 0, "listener inside the netns did not start");
    let mut conn =
        TcpStream::connect_timeout(&(pod_ip, port).into(), Duration::from_secs(5)).unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello from the pod");
    server.join().unwrap().unwrap();

    net.teardown(&pod).await.unwrap();
    let link = in_netns(&fixture.netns_name, &["ip", "link", "show", "eth0"]);
    assert!(
        !link.status.success(),
        "eth0 still in the netns after teardown"
    );
    assert!(
        !lease.exists(),
        "IPAM allocation {} not released",
        lease.display()
    );
    let nat = run_ok("iptables", &["-w", "-t", "nat", "-S"]);
    assert!(
        !nat.contains(&pod_ip.to_string()),
        "portmap rules left: {nat}"
    );

    // Idempotent, also once the netns itself is gone.
    net.teardown(&pod).await.unwrap();
    run_ok("ip", &["netns", "del", &fixture.netns_name]);
    net.teardown(&pod).await.unwrap();
    drop(fixture);
}
