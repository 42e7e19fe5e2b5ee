//! Reading what plugins print: results (SPEC.md "Result") and errors.
//!
//! Results since 0.3.0 list `ips` with a CIDR `address` and an optional
//! index into `interfaces`; 0.1.0/0.2.0 had `ip4`/`ip6` objects instead.
//! Both are read, since old plugins still ship on distributions.

use std::net::IpAddr;

use serde_json::Value;

/// The pod's addresses and interface, taken from a final ADD result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddresses {
    /// IPv4 first, then IPv6, each in result order, so the first is the
    /// primary pod IP kubelet reports (dual-stack clusters expect v4 first
    /// unless configured otherwise; containerd orders them the same way).
    pub ips: Vec<IpAddr>,
    /// The sandbox interface the addresses sit on, when the result names it.
    pub interface: Option<String>,
}

/// The CNI error object a failing plugin prints on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginErrorReport {
    pub code: u64,
    pub msg: String,
    pub details: String,
}

/// SPEC.md well-known error 3: the container is unknown, so there is
/// nothing to clean up: DEL treats it as success.
pub const ERR_UNKNOWN_CONTAINER: u64 = 3;

/// Parse a CNI error object; None if `stdout` is not one.
pub fn parse_error_report(stdout: &[u8]) -> Option<PluginErrorReport> {
    let v: Value = serde_json::from_slice(stdout).ok()?;
    let code = v.get("code")?.as_u64()?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Some(PluginErrorReport {
        code,
        msg: text("msg"),
        details: text("details"),
    })
}

/// Extract the pod's addresses from a result.
///
/// Only addresses on interfaces inside the sandbox count (an interface
/// entry with `sandbox` set, or the one named `ifname`): a bridge result
/// also lists the host-side bridge and veth, whose addresses are not the
/// pod's. Addresses without an interface index are taken as the pod's,
/// as containerd does.
pub fn pod_addresses(result: &Value, ifname: &str) -> Result<PodAddresses, String> {
    let Value::Object(obj) = result else {
        return Err("the result is not a JSON object".into());
    };
    let interfaces: Vec<&Value> = match obj.get("interfaces") {
        Some(Value::Array(a)) => a.iter().collect(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err("\"interfaces\" is not a list".into()),
    };
    let in_sandbox = |iface: &Value| {
        let sandbox = iface.get("sandbox").and_then(Value::as_str).unwrap_or("");
        let name = iface.get("name").and_then(Value::as_str).unwrap_or("");
        !sandbox.is_empty() || name == ifname
    };

    let mut ips = Vec::new();
    let mut interface = None;
    match obj.get("ips") {
        Some(Value::Array(entries)) => {
            for (i, entry) in entries.iter().enumerate() {
                let address = entry
                    .get("address")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("ips[{i}] has no \"address\""))?;
                let ip = parse_cidr_ip(address).map_err(|e| format!("ips[{i}]: {e}"))?;
                match entry.get("interface").and_then(Value::as_u64) {
                    Some(idx) => {
                        let Some(iface) = usize::try_from(idx).ok().and_then(|i| interfaces.get(i))
                        else {
                            return Err(format!(
                                "ips[{i}] refers to interface {idx}, but the result lists {}",
                                interfaces.len()
                            ));
                        };
                        if in_sandbox(iface) {
                            if interface.is_none() {
                                interface =
                                    iface.get("name").and_then(Value::as_str).map(String::from);
                            }
                            ips.push(ip);
                        }
                    }
                    None => ips.push(ip),
                }
            }
        }
        None | Some(Value::Null) => {
            // 0.1.0 / 0.2.0: {"ip4": {"ip": "10.1.0.5/16"}, "ip6": {...}}
            for key in ["ip4", "ip6"] {
                if let Some(ipc) = obj.get(key).filter(|v| !v.is_null()) {
                    let address = ipc
                        .get("ip")
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("\"{key}\" has no \"ip\""))?;
                    ips.push(parse_cidr_ip(address).map_err(|e| format!("{key}: {e}"))?);
                }
            }
        }
        Some(_) => return Err("\"ips\" is not a list".into()),
    }
    if interface.is_none() {
        interface = interfaces
            .iter()
            .find(|i| in_sandbox(i))
            .and_then(|i| i.get("name"))
            .and_then(Value::as_str)
            .map(String::from);
    }
    // Stable sort: v4 before v6, result order kept within each family.
    ips.sort_by_key(|ip| ip.is_ipv6());
    Ok(PodAddresses { ips, interface })
}

fn parse_cidr_ip(address: &str) -> Result<IpAddr, String> {
    let (ip, prefix) = address.split_once('/').unwrap_or((address, ""));
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("address {address:?} is not an IP in CIDR notation"))?;
    if !prefix.is_empty() {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(p) if p <= max => {}
            _ => return Err(format!("address {address:?} has an invalid prefix length")),
        }
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn result_0_4_0_from_bridge() {
        let r = json!({
            "cniVersion": "0.4.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:ff"},
                {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/run/netns/p"}
            ],
            "ips": [
                {"version": "6", "address": "fd00::5/64", "gateway": "fd00::1", "interface": 2},
                {"version": "4", "address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2},
                {"version": "4", "address": "10.99.0.1/24", "interface": 0}
            ]
        });
        let a = pod_addresses(&r, "eth0").unwrap();
        assert_eq!(
            a.ips,
            vec![
                "10.88.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(a.interface.as_deref(), Some("eth0"));
    }

    #[test]
    fn result_1_0_0_without_interface_index() {
        let r = json!({"cniVersion": "1.0.0", "ips": [{"address": "192.168.1.7/24"}]});
        let a = pod_addresses(&r, "eth0").unwrap();
        assert_eq!(a.ips, vec!["192.168.1.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.interface, None);
    }

    #[test]
    fn result_0_2_0_ip4() {
        let r = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.9/16", "gateway": "10.1.0.1"}});
        assert_eq!(
            pod_addresses(&r, "eth0").unwrap().ips,
            vec!["10.1.0.9".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn malformed_results_are_errors() {
        for r in [
            json!({"ips": [{"address": "nope"}]}),
            json!({"ips": [{"address": "10.0.0.1/40"}]}),
            json!({"ips": [{"address": "10.0.0.1/24", "interface": 3}], "interfaces": []}),
            json!({"ips": "x"}),
            json!("str"),
        ] {
            assert!(pod_addresses(&r, "eth0").is_err(), "{r}");
        }
    }

    #[test]
    fn error_report() {
        let e =
            parse_error_report(br#"{"cniVersion":"1.0.0","code":7,"msg":"bad","details":"why"}"#)
                .unwrap();
        assert_eq!(
            e,
            PluginErrorReport {
                code: 7,
                msg: "bad".into(),
                details: "why".into()
            }
        );
        let e = parse_error_report(br#"{"code":11,"msg":"later"}"#).unwrap();
        assert_eq!(e.details, "");
        assert!(parse_error_report(b"panic: oops").is_none());
        assert!(parse_error_report(br#"{"msg":"no code"}"#).is_none());
    }
}
