//! Hugepage limits only where the hugetlb controller exists.
//!
//! kubelet sends a limit for every page size the kernel offers
//! (/sys/kernel/mm/hugepages), 0 for a pod that asked for none, whether or
//! not the node mounts the hugetlb cgroup controller. libcontainer refuses
//! a spec with hugepage limits when the controller is missing ("cgroup
//! hugetlb is required to fulfill the request"), so on such a node (a
//! cgroup v1 host without the hugetlb hierarchy, a cgroup2 root whose
//! cgroup.controllers lacks it) every kubelet container failed to start.
//! CRI-O leaves the limits out there (`node.CgroupHasHugetlb()`), and so
//! does containerd with `disable_hugetlb_controller`; so do we. Without the
//! controller the kernel has nothing to enforce a limit with, and kubelet
//! still accounts hugepages against the node's capacity.

use oci_spec::runtime::Spec;

/// Where the controller is missing, removes the spec's hugepage limits and
/// returns how many there were (for the log); otherwise leaves them.
pub fn fit_hugepage_limits(spec: &mut Spec, controller_present: bool) -> usize {
    if controller_present {
        return 0;
    }
    let Some(resources) = spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.resources_mut().as_mut())
    else {
        return 0;
    };
    let dropped = resources.hugepage_limits().as_ref().map_or(0, Vec::len);
    resources.set_hugepage_limits(None);
    dropped
}

/// Whether a `cgroup.controllers` text (cgroup2) lists hugetlb.
pub fn v2_lists_hugetlb(controllers: &str) -> bool {
    controllers.split_whitespace().any(|c| c == "hugetlb")
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Linux, LinuxHugepageLimit, LinuxResources};

    fn spec_with(limits: Limits) -> Spec {
        let mut resources = LinuxResources::default();
        resources.set_hugepage_limits(limits.map(|l| {
            l.into_iter()
                .map(|(size, limit)| {
                    let mut h = LinuxHugepageLimit::default();
                    h.set_page_size(size.into());
                    h.set_limit(limit);
                    h
                })
                .collect()
        }));
        let mut linux = Linux::default();
        linux.set_resources(Some(resources));
        let mut spec = Spec::default();
        spec.set_linux(Some(linux));
        spec
    }

    fn limits(spec: &Spec) -> Option<Vec<(String, i64)>> {
        spec.linux()
            .as_ref()?
            .resources()
            .as_ref()?
            .hugepage_limits()
            .as_ref()
            .map(|v| {
                v.iter()
                    .map(|h| (h.page_size().clone(), h.limit()))
                    .collect()
            })
    }

    type Limits = Option<Vec<(&'static str, i64)>>;
    /// (limits in the spec, controller present, limits after, dropped)
    type Case = (Limits, bool, Limits, usize);

    #[test]
    fn limits_are_kept_or_dropped_by_controller_presence() {
        let kubelet = vec![("2MB", 0), ("1GB", 0)];
        let cases: Vec<Case> = vec![
            (Some(kubelet.clone()), true, Some(kubelet.clone()), 0),
            (Some(kubelet.clone()), false, None, 2),
            (Some(vec![("2MB", 4 << 21)]), false, None, 1),
            (
                Some(vec![("2MB", 4 << 21)]),
                true,
                Some(vec![("2MB", 4 << 21)]),
                0,
            ),
            (None, false, None, 0),
            (Some(vec![]), false, None, 0),
        ];
        for (before, present, after, dropped) in cases {
            let mut spec = spec_with(before.clone());
            assert_eq!(
                fit_hugepage_limits(&mut spec, present),
                dropped,
                "{before:?} {present}"
            );
            let want = after.map(|v| v.into_iter().map(|(s, l)| (s.to_string(), l)).collect());
            assert_eq!(limits(&spec), want, "{before:?} present={present}");
        }
    }

    #[test]
    fn a_spec_without_linux_resources_is_left_alone() {
        let mut spec = Spec::default();
        spec.set_linux(None);
        assert_eq!(fit_hugepage_limits(&mut spec, false), 0);
        assert!(spec.linux().is_none());
    }

    #[test]
    fn cgroup2_controllers_are_matched_as_words() {
        assert!(v2_lists_hugetlb(
            "cpuset cpu io memory hugetlb pids rdma misc\n"
        ));
        assert!(!v2_lists_hugetlb("cpuset cpu io memory pids\n"));
        assert!(!v2_lists_hugetlb("hugetlbfoo cpu"));
        assert!(!v2_lists_hugetlb(""));
    }
}
