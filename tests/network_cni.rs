//! CNI attachment with fake plugins: shell scripts that record their
//! environment and stdin, so the exact protocol capcri speaks is checked
//! without root. /proc/self/ns/net stands in for a pinned netns (it is nsfs).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capcri::network::{CniConfig, CniError, CniNetwork, PodNetworkRequest};
use serde_json::{Value, json};

const FAKE_PLUGIN: &str = r#"#!/bin/sh
d="@LOG@"
me=${0##*/}
cat > "$d/stdin.$$"
n=$(wc -l < "$d/calls")
n=$((n + 1))
echo "$me $CNI_COMMAND" >> "$d/calls"
mv "$d/stdin.$$" "$d/$n-$me-$CNI_COMMAND.stdin"
env | grep '^CNI_' | sort > "$d/$n-$me-$CNI_COMMAND.env"
if [ -f "$d/sleep-$me" ]; then sleep 30; fi
if [ -f "$d/fail-$me-$CNI_COMMAND" ]; then cat "$d/fail-$me-$CNI_COMMAND"; exit 1; fi
if [ "$CNI_COMMAND" = ADD ]; then cat "$d/result-$me"; fi
exit 0
"#;

struct Lab {
    _tmp: tempfile::TempDir,
    conf: PathBuf,
    bin: PathBuf,
    state: PathBuf,
    log: PathBuf,
}

impl Lab {
    fn new(plugins: &[&str]) -> Lab {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let (conf, bin, state, log) = (
            root.join("net.d"),
            root.join("bin"),
            root.join("state"),
            root.join("log"),
        );
        for d in [&conf, &bin, &log] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(log.join("calls"), "").unwrap();
        let script = FAKE_PLUGIN.replace("@LOG@", log.to_str().unwrap());
        for p in plugins {
            write_executable(&bin.join(p), &script);
        }
        Lab {
            _tmp: tmp,
            conf,
            bin,
            state,
            log,
        }
    }

    fn cfg(&self) -> CniConfig {
        CniConfig {
            conf_dir: self.conf.clone(),
            bin_dirs: vec![self.bin.join("missing-first"), self.bin.clone()],
            state_dir: self.state.clone(),
            plugin_timeout: Duration::from_secs(20),
            ..CniConfig::default()
        }
    }

    fn write_conf(&self, file: &str, doc: &Value) {
        fs::write(
            self.conf.join(file),
            serde_json::to_vec_pretty(doc).unwrap(),
        )
        .unwrap();
    }

    fn set(&self, name: &str, content: &Value) {
        fs::write(self.log.join(name), content.to_string()).unwrap();
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.log.join("calls"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    /// stdin and env of the n-th call (1-based).
    fn call(&self, n: usize) -> (Value, Vec<String>) {
        let calls = self.calls();
        let line = calls[n - 1].replace(' ', "-");
        let stdin = fs::read(self.log.join(format!("{n}-{line}.stdin"))).unwrap();
        let env = fs::read_to_string(self.log.join(format!("{n}-{line}.env"))).unwrap();
        (
            serde_json::from_slice(&stdin).unwrap(),
            env.lines().map(String::from).collect(),
        )
    }
}

fn write_executable(path: &Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, script).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn chain(version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "podnet",
        "plugins": [
            {"type": "fakebr", "bridge": "cni0", "ipam": {"type": "fakeipam", "subnet": "10.9.0.0/24"}},
            {"type": "fakeportmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    })
}

fn bridge_result(version: &str) -> Value {
    json!({
        "cniVersion": version,
        "interfaces": [
            {"name": "cni0", "mac": "0a:00:00:00:00:01"},
            {"name": "veth1", "mac": "0a:00:00:00:00:02"},
            {"name": "eth0", "mac": "0a:00:00:00:00:03", "sandbox": "/proc/self/ns/net"}
        ],
        "ips": [
            {"address": "fd09::5/64", "interface": 2},
            {"address": "10.9.0.5/24", "gateway": "10.9.0.1", "interface": 2}
        ]
    })
}

fn pod(id: &str) -> PodNetworkRequest {
    PodNetworkRequest {
        pod_id: id.to_string(),
        name: "web-0".into(),
        namespace: "shop".into(),
        uid: "8d2f-uid".into(),
        netns: PathBuf::from("/proc/self/ns/net"),
        port_mappings: vec![k8s_cri::v1::PortMapping {
            protocol: k8s_cri::v1::Protocol::Tcp as i32,
            container_port: 80,
            host_port: 8080,
            host_ip: String::new(),
        }],
        ..Default::default()
    }
}

fn env_has(env: &[String], kv: &str) -> bool {
    env.iter().any(|l| l == kv)
}

#[test]
fn status_follows_the_conf_dir() {
    let lab = Lab::new(&["fakebr", "fakeportmap", "fakeipam"]);
    let net = CniNetwork::new(lab.cfg());

    let err = net.status().unwrap_err();
    assert!(
        matches!(&err, CniError::NotReady { reason } if reason.contains("no network config")),
        "{err}"
    );

    lab.write_conf("20-chain.conflist", &chain("1.0.0"));
    let s = net.status().unwrap();
    assert_eq!(s.name, "podnet");
    assert_eq!(s.cni_version, "1.0.0");
    assert_eq!(s.file, lab.conf.join("20-chain.conflist"));
    assert_eq!(s.plugins, vec!["fakebr", "fakeportmap"]);

    // A .conf sorting first wins over the .conflist, and is a list of one.
    lab.write_conf(
        "10-single.conf",
        &json!({"cniVersion": "0.4.0", "name": "single", "type": "fakebr"}),
    );
    let s = net.status().unwrap();
    assert_eq!(
        (s.name.as_str(), s.plugins.clone()),
        ("single", vec!["fakebr".to_string()])
    );

    // An invalid first file makes the network not ready, naming the file.
    fs::write(lab.conf.join("05-broken.json"), "{not json").unwrap();
    fs::write(lab.conf.join("00-notes.txt"), "ignored").unwrap();
    match net.status().unwrap_err() {
        CniError::NotReady { reason } => assert!(reason.contains("05-broken.json"), "{reason}"),
        other => panic!("expected NotReady, got {other}"),
    }
    fs::remove_file(lab.conf.join("05-broken.json")).unwrap();

    // A plugin binary that is missing is reported too.
    lab.write_conf(
        "01-missing.conflist",
        &json!({"cniVersion": "1.0.0", "name": "m", "plugins": [{"type": "nosuch"}]}),
    );
    match net.status().unwrap_err() {
        CniError::NotReady { reason } => assert!(
            reason.contains("nosuch") && reason.contains("01-missing"),
            "{reason}"
        ),
        other => panic!("expected NotReady, got {other}"),
    }
}

#[tokio::test]
async fn setup_chains_plugins_and_teardown_reverses_them() {
    let lab = Lab::new(&["fakebr", "fakeportmap", "fakeipam"]);
    lab.write_conf("10-chain.conflist", &chain("1.0.0"));
    let br = bridge_result("1.0.0");
    lab.set("result-fakebr", &br);
    lab.set("result-fakeportmap", &br);
    let net = CniNetwork::new(lab.cfg());

    let status = net.setup(&pod("pod1")).await.unwrap();
    assert_eq!(
        status.ips,
        vec![
            "10.9.0.5".parse::<std::net::IpAddr>().unwrap(),
            "fd09::5".parse().unwrap()
        ]
    );
    assert_eq!(status.interface, "eth0");
    assert_eq!(status.raw_result, br);
    assert_eq!(lab.calls(), vec!["fakebr ADD", "fakeportmap ADD"]);

    let (stdin, env) = lab.call(1);
    assert_eq!(stdin["name"], "podnet");
    assert_eq!(stdin["cniVersion"], "1.0.0");
    assert_eq!(stdin["bridge"], "cni0");
    assert!(stdin.get("prevResult").is_none());
    assert!(stdin.get("runtimeConfig").is_none());
    for kv in [
        "CNI_COMMAND=ADD",
        "CNI_CONTAINERID=pod1",
        "CNI_NETNS=/proc/self/ns/net",
        "CNI_IFNAME=eth0",
        "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=pod1;K8S_POD_UID=8d2f-uid",
    ] {
        assert!(env_has(&env, kv), "{kv} not in {env:?}");
    }
    let want_path = format!(
        "CNI_PATH={}:{}",
        lab.bin.join("missing-first").display(),
        lab.bin.display()
    );
    assert!(env_has(&env, &want_path), "{env:?}");

    let (stdin, _) = lab.call(2);
    assert_eq!(stdin["name"], "podnet");
    assert_eq!(stdin["prevResult"], br);
    assert_eq!(
        stdin["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    );

    // The record is on disk before setup returns.
    let record: Value =
        serde_json::from_slice(&fs::read(lab.state.join("pod1.json")).unwrap()).unwrap();
    assert_eq!(record["result"], br);

    // A restarted daemon with a changed config still deletes what was added.
    drop(net);
    fs::remove_file(lab.conf.join("10-chain.conflist")).unwrap();
    lab.write_conf(
        "10-other.conflist",
        &json!({"cniVersion": "1.0.0", "name": "other", "plugins": [{"type": "fakeipam"}]}),
    );
    let net = CniNetwork::new(lab.cfg());
    let mut req = pod("pod1");
    req.port_mappings.clear();
    net.teardown(&req).await.unwrap();
    assert_eq!(
        lab.calls()[2..],
        ["fakeportmap DEL".to_string(), "fakebr DEL".to_string()]
    );
    for n in [3, 4] {
        let (stdin, env) = lab.call(n);
        assert_eq!(stdin["name"], "podnet");
        assert_eq!(stdin["prevResult"], br, "DEL gets the final ADD result");
        assert!(env_has(&env, "CNI_COMMAND=DEL"));
        assert!(env_has(&env, "CNI_NETNS=/proc/self/ns/net"));
    }
    // Port mappings come from the record, not the (empty) request.
    assert_eq!(
        lab.call(3).0["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    assert!(!lab.state.join("pod1.json").exists());

    // Again: unknown pod, DEL with the config in force, no prevResult.
    net.teardown(&req).await.unwrap();
    assert_eq!(lab.calls()[4], "fakeipam DEL");
    assert!(lab.call(5).0.get("prevResult").is_none());
}

#[tokio::test]
async fn failed_add_is_rolled_back() {
    let lab = Lab::new(&["fakebr", "fakeportmap"]);
    lab.write_conf("10-chain.conflist", &chain("0.4.0"));
    let br = bridge_result("0.4.0");
    lab.set("result-fakebr", &br);
    lab.set(
        "fail-fakeportmap-ADD",
        &json!({"cniVersion": "0.4.0", "code": 7, "msg": "invalid port", "details": "hostPort 8080 taken"}),
    );
    let net = CniNetwork::new(lab.cfg());
    let err = net.setup(&pod("pod2")).await.unwrap_err();
    match &err {
        CniError::Plugin {
            plugin,
            code,
            msg,
            details,
            ..
        } => {
            assert_eq!(
                (plugin.as_str(), *code, msg.as_str(), details.as_str()),
                ("fakeportmap", 7, "invalid port", "hostPort 8080 taken")
            );
        }
        other => panic!("expected Plugin error, got {other}"),
    }
    assert!(
        err.to_string()
            .contains("fakeportmap ADD failed with code 7"),
        "{err}"
    );
    assert_eq!(
        lab.calls(),
        vec![
            "fakebr ADD",
            "fakeportmap ADD",
            "fakeportmap DEL",
            "fakebr DEL"
        ]
    );
    // The rollback DEL carries the last result that was obtained.
    assert_eq!(lab.call(4).0["prevResult"], br);
    assert!(!lab.state.join("pod2.json").exists());
}

#[tokio::test]
async fn teardown_tolerates_unknown_container_and_missing_netns() {
    let lab = Lab::new(&["fakebr", "fakeportmap"]);
    lab.write_conf("10-chain.conflist", &chain("0.3.1"));
    lab.set("result-fakebr", &bridge_result("0.3.1"));
    lab.set("result-fakeportmap", &bridge_result("0.3.1"));
    let net = CniNetwork::new(lab.cfg());
    net.setup(&pod("pod3")).await.unwrap();

    lab.set(
        "fail-fakeportmap-DEL",
        &json!({"code": 3, "msg": "container unknown"}),
    );
    let mut req = pod("pod3");
    req.netns = lab.log.join("gone-netns");
    // The recorded netns is a real one here; point the record elsewhere too.
    let rec_path = lab.state.join("pod3.json");
    let mut rec: Value = serde_json::from_slice(&fs::read(&rec_path).unwrap()).unwrap();
    rec["netns"] = json!(lab.log.join("gone-netns"));
    fs::write(&rec_path, rec.to_string()).unwrap();

    net.teardown(&req).await.unwrap();
    assert_eq!(
        lab.calls()[2..],
        ["fakeportmap DEL".to_string(), "fakebr DEL".to_string()]
    );
    let (stdin, env) = lab.call(4);
    assert!(env.iter().all(|l| !l.starts_with("CNI_NETNS=")), "{env:?}");
    assert!(
        stdin.get("prevResult").is_none(),
        "0.3.1 DEL has no prevResult"
    );
    assert!(!rec_path.exists());
}

#[tokio::test]
async fn failed_del_keeps_the_record_for_a_retry() {
    let lab = Lab::new(&["fakebr"]);
    lab.write_conf(
        "10-one.conflist",
        &json!({"cniVersion": "1.0.0", "name": "one", "plugins": [{"type": "fakebr"}]}),
    );
    lab.set("result-fakebr", &bridge_result("1.0.0"));
    let net = CniNetwork::new(lab.cfg());
    net.setup(&pod("pod4")).await.unwrap();

    fs::write(lab.log.join("fail-fakebr-DEL"), "iptables: locked").unwrap();
    let err = net.teardown(&pod("pod4")).await.unwrap_err();
    assert!(
        matches!(&err, CniError::PluginFailed { output, .. } if output.contains("iptables: locked")),
        "{err}"
    );
    assert!(lab.state.join("pod4.json").exists());

    fs::remove_file(lab.log.join("fail-fakebr-DEL")).unwrap();
    net.teardown(&pod("pod4")).await.unwrap();
    assert!(!lab.state.join("pod4.json").exists());
}

#[tokio::test]
async fn hung_plugin_is_killed_after_the_timeout() {
    let lab = Lab::new(&["fakebr"]);
    lab.write_conf(
        "10-one.conflist",
        &json!({"cniVersion": "1.0.0", "name": "one", "plugins": [{"type": "fakebr"}]}),
    );
    lab.set("result-fakebr", &bridge_result("1.0.0"));
    fs::write(lab.log.join("sleep-fakebr"), "").unwrap();
    let mut cfg = lab.cfg();
    cfg.plugin_timeout = Duration::from_millis(300);
    let net = CniNetwork::new(cfg);
    let started = Instant::now();
    let err = net.setup(&pod("pod5")).await.unwrap_err();
    assert!(matches!(err, CniError::PluginTimeout { .. }), "{err}");
    // ADD and the rollback DEL each time out; nothing waits for `sleep 30`.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn bad_requests_are_refused_before_any_plugin_runs() {
    let lab = Lab::new(&["fakebr"]);
    lab.write_conf(
        "10-one.conflist",
        &json!({"cniVersion": "1.0.0", "name": "one", "plugins": [{"type": "fakebr"}]}),
    );
    let net = CniNetwork::new(lab.cfg());

    let mut req = pod("pod6");
    req.netns = lab.log.join("calls"); // a regular file, e.g. an unmounted pin
    let err = net.setup(&req).await.unwrap_err();
    assert!(
        matches!(&err, CniError::InvalidRequest { reason, .. } if reason.contains("not a pinned network namespace")),
        "{err}"
    );

    let mut req = pod("../escape");
    req.netns = PathBuf::from("/proc/self/ns/net");
    assert!(matches!(
        net.setup(&req).await.unwrap_err(),
        CniError::InvalidRequest { .. }
    ));
    assert!(matches!(
        net.teardown(&req).await.unwrap_err(),
        CniError::InvalidRequest { .. }
    ));

    let mut req = pod("pod6");
    req.name = "a;K8S_POD_NAME=b".into();
    assert!(matches!(
        net.setup(&req).await.unwrap_err(),
        CniError::InvalidRequest { .. }
    ));
    assert!(lab.calls().is_empty());

    // A plugin missing from every bin dir names the plugin and the dirs.
    lab.write_conf(
        "05-missing.conflist",
        &json!({"cniVersion": "1.0.0", "name": "m", "plugins": [{"type": "nosuch"}]}),
    );
    match net.setup(&pod("pod6")).await.unwrap_err() {
        CniError::PluginNotFound { plugin, searched } => {
            assert_eq!(plugin, "nosuch");
            assert_eq!(searched, lab.cfg().bin_dirs);
        }
        other => panic!("expected PluginNotFound, got {other}"),
    }
    assert!(!lab.state.join("pod6.json").exists());
}

#[tokio::test]
async fn teardown_without_config_or_record_is_ok() {
    let lab = Lab::new(&[]);
    let net = CniNetwork::new(lab.cfg());
    net.teardown(&pod("never-seen")).await.unwrap();
}
