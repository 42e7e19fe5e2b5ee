//! The contents of cgroup files, both ways: parsing what the kernel reports
//! (CPU, memory, OOM kills) and formatting the values written to change a
//! container's limits. Pure: text in, numbers out, so every rule is unit
//! tested on sample file contents; `cgroup_io` does the reading and writing.

use serde::{Deserialize, Serialize};

/// `key value` lines (memory.stat, memory.oom_control, memory.events,
/// cpu.stat). Lines that are not a key and an unsigned number are skipped:
/// newer kernels add keys, never change the format of old ones.
pub fn flat_keyed(text: &str) -> Vec<(&str, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let key = it.next()?;
            let value = it.next()?.parse().ok()?;
            Some((key, value))
        })
        .collect()
}

fn key(text: &str, name: &str) -> Option<u64> {
    flat_keyed(text)
        .into_iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A single-number file (cpuacct.usage, memory.usage_in_bytes,
/// memory.current). cgroup v2 writes `max` for "no limit": `None`.
pub fn single_number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// How many times the kernel OOM killer killed a process of the group:
/// `oom_kill` of v1's memory.oom_control (Linux >= 4.13) or of v2's
/// memory.events. `None` when the file carries no such counter.
pub fn oom_kill_count(text: &str) -> Option<u64> {
    key(text, "oom_kill")
}

/// CPU time of the group in nanoseconds from v2's cpu.stat (microseconds).
pub fn cpu_usage_v2(cpu_stat: &str) -> Option<u64> {
    key(cpu_stat, "usage_usec").map(|us| us.saturating_mul(1000))
}

/// Bytes left before the group's limit, as cAdvisor reports it: `None`
/// without a limit (v2 `max`, or v1's "unlimited", the largest page-aligned
/// i64, i.e. anything at or above 2^62).
pub fn available_bytes(limit: Option<u64>, working_set: u64) -> Option<u64> {
    limit
        .filter(|l| *l < 1 << 62)
        .map(|l| l.saturating_sub(working_set))
}

/// Memory of a group as the CRI reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryUsage {
    pub usage_bytes: u64,
    /// usage minus inactive file pages: what the kernel cannot reclaim
    /// easily, the number kubelet evicts on (cAdvisor's definition).
    pub working_set_bytes: u64,
    pub rss_bytes: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// See [`available_bytes`].
    pub available_bytes: Option<u64>,
}

/// From v1's memory.usage_in_bytes and memory.stat. The `total_*` keys
/// include sub-groups, as the usage does; older kernels without them get
/// the group's own keys.
pub fn memory_v1(usage: u64, stat: &str) -> MemoryUsage {
    let get = |name: &str| key(stat, &format!("total_{name}")).or_else(|| key(stat, name));
    let inactive = get("inactive_file").unwrap_or(0);
    MemoryUsage {
        usage_bytes: usage,
        working_set_bytes: usage.saturating_sub(inactive),
        rss_bytes: get("rss").unwrap_or(0),
        page_faults: get("pgfault").unwrap_or(0),
        major_page_faults: get("pgmajfault").unwrap_or(0),
        available_bytes: None,
    }
}

/// From v2's memory.current and memory.stat (`anon` is the v1 `rss`).
pub fn memory_v2(current: u64, stat: &str) -> MemoryUsage {
    let inactive = key(stat, "inactive_file").unwrap_or(0);
    MemoryUsage {
        usage_bytes: current,
        working_set_bytes: current.saturating_sub(inactive),
        rss_bytes: key(stat, "anon").unwrap_or(0),
        page_faults: key(stat, "pgfault").unwrap_or(0),
        major_page_faults: key(stat, "pgmajfault").unwrap_or(0),
        available_bytes: None,
    }
}

/// New limits of a running container (CRI UpdateContainerResources); a
/// `None` leaves the current value alone, as containerd does for zeros.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceUpdate {
    pub cpu_shares: Option<u64>,
    /// -1 = no quota.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub memory_limit: Option<i64>,
    /// cgroup v2 files by name (CRI `unified`, e.g. `memory.high`), written
    /// last, as runc does, so they override the typed fields. Keys are
    /// checked by `util::cgroup_paths::validate_unified_key`.
    #[serde(default)]
    pub unified: std::collections::BTreeMap<String, String>,
}

/// One write: (v1 controller, or "" on v2), file name, value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupWrite {
    pub controller: &'static str,
    pub file: String,
    pub value: String,
}

fn write(controller: &'static str, file: &str, value: impl ToString) -> CgroupWrite {
    CgroupWrite {
        controller,
        file: file.to_string(),
        value: value.to_string(),
    }
}

/// cgroup v1 writes, in an order the kernel accepts. The memory limit goes
/// with `memory.memsw.limit_in_bytes` (capcri sets swap = memory, see
/// `spec::resources`), and the kernel insists memsw >= limit at every
/// moment, so both orders are listed: the caller tries limit-then-memsw and
/// on EINVAL memsw-then-limit (raising needs memsw first).
pub fn v1_writes(u: &ResourceUpdate) -> Vec<CgroupWrite> {
    let mut out = Vec::new();
    if let Some(s) = u.cpu_shares {
        out.push(write("cpu", "cpu.shares", s));
    }
    // A shorter period with the old quota can be refused; period first.
    if let Some(p) = u.cpu_period {
        out.push(write("cpu", "cpu.cfs_period_us", p));
    }
    if let Some(q) = u.cpu_quota {
        out.push(write("cpu", "cpu.cfs_quota_us", q));
    }
    if let Some(c) = &u.cpuset_cpus {
        out.push(write("cpuset", "cpuset.cpus", c));
    }
    if let Some(m) = &u.cpuset_mems {
        out.push(write("cpuset", "cpuset.mems", m));
    }
    if let Some(m) = u.memory_limit {
        out.push(write("memory", "memory.limit_in_bytes", m));
        out.push(write("memory", "memory.memsw.limit_in_bytes", m));
    }
    out
}

/// cgroup v1 `cpu.shares` (2..262144) to v2 `cpu.weight` (1..10000), the
/// mapping runc and the kernel documentation use.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// cgroup v2 writes. `cpu.max` takes quota and period together; an
/// update that names only one keeps the other's default (100 ms).
pub fn v2_writes(u: &ResourceUpdate) -> Vec<CgroupWrite> {
    let mut out = Vec::new();
    if let Some(s) = u.cpu_shares {
        out.push(write("", "cpu.weight", shares_to_weight(s)));
    }
    if u.cpu_quota.is_some() || u.cpu_period.is_some() {
        let quota = match u.cpu_quota {
            Some(q) if q > 0 => q.to_string(),
            _ => "max".to_string(),
        };
        let period = u.cpu_period.unwrap_or(100_000);
        out.push(write("", "cpu.max", format!("{quota} {period}")));
    }
    if let Some(c) = &u.cpuset_cpus {
        out.push(write("", "cpuset.cpus", c));
    }
    if let Some(m) = &u.cpuset_mems {
        out.push(write("", "cpuset.mems", m));
    }
    if let Some(m) = u.memory_limit {
        let v = if m > 0 { m.to_string() } else { "max".into() };
        out.push(write("", "memory.max", v));
    }
    for (file, value) in &u.unified {
        out.push(write("", file, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_OOM_CONTROL: &str = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
    const V1_MEMORY_STAT: &str = "cache 1000\nrss 5000\ninactive_file 300\npgfault 7\n\
        pgmajfault 1\ntotal_cache 2000\ntotal_rss 6000\ntotal_inactive_file 400\n\
        total_pgfault 70\ntotal_pgmajfault 3\n";
    const V2_MEMORY_STAT: &str = "anon 4096\nfile 8192\ninactive_file 1024\npgfault 11\n\
        pgmajfault 2\n";

    #[test]
    fn oom_kills_from_v1_and_v2_files() {
        assert_eq!(oom_kill_count(V1_OOM_CONTROL), Some(2));
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(events), Some(1));
        // Kernels before 4.13 have no counter.
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\n"), None);
    }

    #[test]
    fn single_numbers_and_max() {
        assert_eq!(single_number("123456789\n"), Some(123_456_789));
        assert_eq!(single_number("max\n"), None);
        assert_eq!(single_number(""), None);
    }

    #[test]
    fn v1_memory_prefers_hierarchical_totals() {
        let m = memory_v1(10_000, V1_MEMORY_STAT);
        assert_eq!(
            m,
            MemoryUsage {
                usage_bytes: 10_000,
                working_set_bytes: 9_600,
                rss_bytes: 6_000,
                page_faults: 70,
                major_page_faults: 3,
                available_bytes: None,
            }
        );
        let own_only = memory_v1(1000, "rss 10\ninactive_file 2000\n");
        assert_eq!(own_only.rss_bytes, 10);
        // Inactive file pages above usage (racy reads) never underflow.
        assert_eq!(own_only.working_set_bytes, 0);
    }

    #[test]
    fn v2_memory_and_cpu() {
        let m = memory_v2(20_000, V2_MEMORY_STAT);
        assert_eq!(m.working_set_bytes, 18_976);
        assert_eq!(m.rss_bytes, 4096);
        assert_eq!((m.page_faults, m.major_page_faults), (11, 2));
        assert_eq!(
            cpu_usage_v2("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"),
            Some(1_500_000)
        );
        assert_eq!(cpu_usage_v2("nr_periods 0\n"), None);
    }

    #[test]
    fn available_bytes_only_under_a_real_limit() {
        assert_eq!(available_bytes(Some(100), 30), Some(70));
        assert_eq!(available_bytes(Some(100), 300), Some(0));
        assert_eq!(available_bytes(Some(9_223_372_036_854_771_712), 30), None);
        assert_eq!(available_bytes(None, 30), None);
    }

    #[test]
    fn flat_keyed_skips_malformed_lines() {
        assert_eq!(
            flat_keyed("a 1\nbroken\nb x\nc 3 extra\n"),
            vec![("a", 1), ("c", 3)]
        );
    }

    #[test]
    fn update_writes_per_cgroup_version() {
        let u = ResourceUpdate {
            cpu_shares: Some(512),
            cpu_quota: Some(20_000),
            cpu_period: Some(100_000),
            cpuset_cpus: Some("0".into()),
            cpuset_mems: None,
            memory_limit: Some(64 << 20),
            unified: [("memory.high".to_string(), "50331648".to_string())].into(),
        };
        let v1_list = v1_writes(&u);
        let v1: Vec<(&str, &str, String)> = v1_list
            .iter()
            .map(|w| (w.controller, w.file.as_str(), w.value.clone()))
            .collect();
        assert_eq!(
            v1,
            vec![
                ("cpu", "cpu.shares", "512".to_string()),
                ("cpu", "cpu.cfs_period_us", "100000".to_string()),
                ("cpu", "cpu.cfs_quota_us", "20000".to_string()),
                ("cpuset", "cpuset.cpus", "0".to_string()),
                ("memory", "memory.limit_in_bytes", "67108864".to_string()),
                (
                    "memory",
                    "memory.memsw.limit_in_bytes",
                    "67108864".to_string()
                ),
            ]
        );
        let v2_list = v2_writes(&u);
        let v2: Vec<(&str, String)> = v2_list
            .iter()
            .map(|w| (w.file.as_str(), w.value.clone()))
            .collect();
        assert_eq!(
            v2,
            vec![
                ("cpu.weight", "20".to_string()),
                ("cpu.max", "20000 100000".to_string()),
                ("cpuset.cpus", "0".to_string()),
                ("memory.max", "67108864".to_string()),
                ("memory.high", "50331648".to_string()),
            ]
        );
        assert!(v1_writes(&ResourceUpdate::default()).is_empty());
        let unlimited = ResourceUpdate {
            cpu_quota: Some(-1),
            ..Default::default()
        };
        assert_eq!(v2_writes(&unlimited)[0].value, "max 100000");
    }

    #[test]
    fn shares_map_onto_weights() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1);
    }
}
