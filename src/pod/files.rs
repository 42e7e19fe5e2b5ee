//! The per-pod files bind-mounted into every container: /etc/hostname,
//! /etc/resolv.conf and /etc/hosts. Rendering is pure; writing is one call.

use k8s_cri::v1::DnsConfig;
use std::path::Path;

/// resolv.conf from the pod's DNS config, or the host's when the pod gives
/// none (kubelet always sends one for ClusterFirst pods; crictl may not).
pub fn render_resolv_conf(dns: Option<&DnsConfig>, host_resolv: &str) -> String {
    let Some(dns) =
        dns.filter(|d| !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()))
    else {
        return host_resolv.to_string();
    };
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for s in &dns.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

/// /etc/hosts with the loopback entries containerd writes; kubelet replaces
/// it with its own managed file through a mount when it wants more.
pub fn render_hosts(hostname: &str) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    if !hostname.is_empty() {
        out.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    out
}

pub fn write_pod_file(path: &Path, content: &str) -> std::io::Result<()> {
    std::fs::write(path, content)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            render_resolv_conf(Some(&dns), "nameserver 1.1.1.1\n"),
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn resolv_conf_falls_back_to_host() {
        assert_eq!(
            render_resolv_conf(None, "nameserver 9.9.9.9\n"),
            "nameserver 9.9.9.9\n"
        );
        assert_eq!(
            render_resolv_conf(Some(&DnsConfig::default()), "nameserver 9.9.9.9\n"),
            "nameserver 9.9.9.9\n"
        );
    }

    #[test]
    fn hosts_has_loopback_and_hostname() {
        let h = render_hosts("web-0");
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("127.0.1.1\tweb-0\n"));
    }
}
