//! The executable's read-only pages, given back when the process no
//! longer needs them mapped: the relocation tables once it has started,
//! and the code and constants a burst of work faulted in once it is idle.
//!
//! capcri is a PIE linked without packed relative relocations (build.rs:
//! it must start on glibc 2.34), so at every exec the dynamic loader reads
//! a RELA table of some 73 000 entries, 1.7 MB of the file, and never
//! again: symbols are bound at start (BIND_NOW) and capcri loads no
//! library later. Those read-only file pages stayed mapped, 1.7 MiB of the
//! idle daemon's 16.3 MiB RSS (capcri-bench --scale, issue 18).
//! `MADV_DONTNEED` unmaps them; a read of them would fault them in again
//! from the file, so nothing can break, and the page cache keeps or drops
//! them like any other clean page.
//!
//! The same holds for the whole of the executable's read-only segments
//! (`.text`, `.rodata`, `.eh_frame`; never the writable one, whose
//! relocated pages are the process's own). A pull or a round of pod
//! creations faults in code the idle daemon never runs again: `.text`
//! resident went from 6.2 MiB after start to 8.7 MiB after the pod-cycle
//! bench. [`release_read_only_segments`] unmaps them once the node is
//! quiet; the next call maps what it runs again from the page cache
//! (minor faults, no read from disk while the pages stay cached).

use std::ffi::{c_int, c_void};
use std::ops::Range;

// ELF dynamic section tags (elf.h); the libc crate does not have them.
const DT_NULL: i64 = 0;
const DT_PLTRELSZ: i64 = 2;
const DT_RELA: i64 = 7;
const DT_RELASZ: i64 = 8;
const DT_JMPREL: i64 = 23;

/// A program header, as much of it as the spans need.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub kind: u32,
    pub flags: u32,
    pub vaddr: usize,
    pub filesz: usize,
}

/// Unmaps the whole pages of the executable's RELA tables (`.rela.dyn`,
/// `.rela.plt`); returns the bytes given back. Call once the process has
/// started (the loader is done with them before `main`).
pub fn release_relocation_tables() -> usize {
    executable().map_or(0, |x| release(table_spans(x.base, &x.segments, &x.dynamic)))
}

/// Unmaps the whole pages of every read-only PT_LOAD segment of the
/// executable (its code and constants); returns the bytes given back.
/// Pages the process runs or reads again are mapped again on access.
pub fn release_read_only_segments() -> usize {
    executable().map_or(0, |x| release(segment_spans(x.base, &x.segments)))
}

/// Unmaps the whole pages of each span; each lies in a read-only,
/// file-backed PT_LOAD segment of the executable.
fn release(spans: Vec<Range<usize>>) -> usize {
    // SAFETY: sysconf has no failure mode for _SC_PAGESIZE on Linux.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let mut released = 0;
    for span in spans {
        let Some(pages) = whole_pages(&span, page) else {
            continue;
        };
        // SAFETY: `pages` lies inside a read-only, file-backed PT_LOAD
        // segment of the executable (checked by the span's maker):
        // dropping its pages loses nothing, a later access reads the file
        // (or the page cache) again.
        let rc =
            unsafe { libc::madvise(pages.start as *mut c_void, pages.len(), libc::MADV_DONTNEED) };
        if rc == 0 {
            released += pages.len();
        }
    }
    released
}

/// Where the loader put the executable: its load address, its program
/// headers and its dynamic section's entries (up to `DT_NULL`).
struct Executable {
    base: usize,
    segments: Vec<Segment>,
    dynamic: Vec<(i64, u64)>,
}

/// The executable as the loader reports it; `None` if it does not.
fn executable() -> Option<Executable> {
    let mut found: Option<Executable> = None;
    // SAFETY: the callback only reads the loader's program headers and
    // the executable's mapped dynamic section, within their stated sizes,
    // and writes to `found`, which outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(first_object), (&raw mut found).cast::<c_void>());
    }
    found
}

/// `dl_iterate_phdr` callback: reads the first object, the executable,
/// into the `Option<Executable>` at `data`; stops there.
unsafe extern "C" fn first_object(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `data` is the Option passed by `executable`; `info` and its
    // program headers are valid for this call (glibc).
    let (found, info) = unsafe { (&mut *data.cast::<Option<Executable>>(), &*info) };
    if info.dlpi_phdr.is_null() {
        return 1;
    }
    // SAFETY: glibc hands out `dlpi_phnum` headers at `dlpi_phdr`.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    let base = info.dlpi_addr as usize;
    let mut dynamic = Vec::new();
    if let Some(d) = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC) {
        let start = base.wrapping_add(d.p_vaddr as usize) as *const [i64; 2];
        for i in 0..d.p_memsz as usize / 16 {
            // SAFETY: PT_DYNAMIC is mapped, `p_memsz / 16` pairs of 8-byte
            // words.
            let [tag, value] = unsafe { start.add(i).read_unaligned() };
            if tag == DT_NULL {
                break;
            }
            dynamic.push((tag, value as u64));
        }
    }
    *found = Some(Executable {
        base,
        segments: phdrs
            .iter()
            .map(|p| Segment {
                kind: p.p_type,
                flags: p.p_flags,
                vaddr: p.p_vaddr as usize,
                filesz: p.p_filesz as usize,
            })
            .collect(),
        dynamic,
    });
    1
}

/// The file-backed bytes of each read-only PT_LOAD segment, as address
/// ranges. A writable segment is never among them: its relocated pages
/// (and `.data`, `.bss`) exist only in this process.
pub fn segment_spans(base: usize, segments: &[Segment]) -> Vec<Range<usize>> {
    segments
        .iter()
        .filter(|s| s.kind == libc::PT_LOAD && s.flags & libc::PF_W == 0 && s.filesz > 0)
        .filter_map(|s| {
            let start = base.checked_add(s.vaddr)?;
            Some(start..start.checked_add(s.filesz)?)
        })
        .collect()
}

/// The RELA tables the dynamic section names, as address ranges, each
/// kept only when it lies inside a read-only PT_LOAD segment's file
/// bytes. glibc makes the dynamic section's addresses absolute when it
/// can write it (x86_64, arm64) and leaves them relative to `base`
/// otherwise: an address below `base` is taken as relative.
pub fn table_spans(base: usize, segments: &[Segment], dynamic: &[(i64, u64)]) -> Vec<Range<usize>> {
    let value = |tag: i64| {
        dynamic
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, v)| *v as usize)
    };
    let absolute = |addr: usize| {
        if addr < base {
            base.wrapping_add(addr)
        } else {
            addr
        }
    };
    let read_only = |span: &Range<usize>| {
        segments.iter().any(|s| {
            let start = base.wrapping_add(s.vaddr);
            s.kind == libc::PT_LOAD
                && s.flags & libc::PF_W == 0
                && span.start >= start
                && span.end <= start.saturating_add(s.filesz)
        })
    };
    [(DT_RELA, DT_RELASZ), (DT_JMPREL, DT_PLTRELSZ)]
        .into_iter()
        .filter_map(|(at, size)| {
            let start = absolute(value(at)?);
            let len = value(size)?;
            Some(start..start.checked_add(len)?)
        })
        .filter(|span| !span.is_empty() && read_only(span))
        .collect()
}

/// The whole pages inside `span`: the pages it shares with other
/// sections at either end are kept.
fn whole_pages(span: &Range<usize>, page: usize) -> Option<Range<usize>> {
    let start = span.start.checked_next_multiple_of(page)?;
    let end = span.end / page * page;
    (end > start).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: usize = 0x5555_0000_0000;

    fn segments() -> Vec<Segment> {
        vec![
            // The first, read-only segment: headers, .dynsym, .rela.*, .rodata.
            Segment {
                kind: libc::PT_LOAD,
                flags: libc::PF_R,
                vaddr: 0,
                filesz: 0x60_0000,
            },
            Segment {
                kind: libc::PT_LOAD,
                flags: libc::PF_R | libc::PF_X,
                vaddr: 0x61_0000,
                filesz: 0xb0_0000,
            },
            Segment {
                kind: libc::PT_LOAD,
                flags: libc::PF_R | libc::PF_W,
                vaddr: 0x115_0000,
                filesz: 0x1a_0000,
            },
        ]
    }

    #[test]
    fn both_tables_relative_or_absolute() {
        let relative = [
            (DT_RELA, 0x35f0),
            (DT_RELASZ, 0x1a_e2f0),
            (DT_JMPREL, 0x1b_18e0),
            (DT_PLTRELSZ, 0x720),
        ];
        let want = vec![
            BASE + 0x35f0..BASE + 0x1b_18e0,
            BASE + 0x1b_18e0..BASE + 0x1b_2000,
        ];
        assert_eq!(table_spans(BASE, &segments(), &relative), want);
        let absolute = relative.map(|(t, v)| match t {
            DT_RELA | DT_JMPREL => (t, v + BASE as u64),
            _ => (t, v),
        });
        assert_eq!(table_spans(BASE, &segments(), &absolute), want);
    }

    #[test]
    fn tables_outside_a_read_only_segment_are_left_alone() {
        // In the writable segment, past the file bytes, missing a size.
        for dynamic in [
            vec![(DT_RELA, 0x115_1000), (DT_RELASZ, 0x1000)],
            vec![(DT_RELA, 0x5f_f000), (DT_RELASZ, 0x2000)],
            vec![(DT_RELA, 0x1000)],
            vec![(DT_RELA, 0x1000), (DT_RELASZ, 0)],
            vec![(DT_RELA, u64::MAX - 8), (DT_RELASZ, 0x100)],
        ] {
            assert!(
                table_spans(BASE, &segments(), &dynamic).is_empty(),
                "{dynamic:x?}"
            );
        }
    }

    #[test]
    fn only_whole_pages_are_given_back() {
        assert_eq!(
            whole_pages(&(0x35f0..0x1b_18e0), 0x1000),
            Some(0x4000..0x1b_1000)
        );
        assert_eq!(whole_pages(&(0x1000..0x3000), 0x1000), Some(0x1000..0x3000));
        assert_eq!(whole_pages(&(0x1100..0x1f00), 0x1000), None);
        assert_eq!(whole_pages(&(0x1100..0x2f00), 0x1000), None);
    }

    #[test]
    fn only_read_only_loaded_segments_are_spans() {
        let mut segs = segments();
        segs.push(Segment {
            kind: libc::PT_GNU_RELRO,
            flags: libc::PF_R,
            vaddr: 0x115_0000,
            filesz: 0x8000,
        });
        segs.push(Segment {
            kind: libc::PT_LOAD,
            flags: libc::PF_R,
            vaddr: 0x200_0000,
            filesz: 0,
        });
        assert_eq!(
            segment_spans(BASE, &segs),
            vec![BASE..BASE + 0x60_0000, BASE + 0x61_0000..BASE + 0x111_0000]
        );
        let overflowing = [Segment {
            kind: libc::PT_LOAD,
            flags: libc::PF_R,
            vaddr: usize::MAX - 0x1000,
            filesz: 0x2000,
        }];
        assert!(segment_spans(BASE, &overflowing).is_empty());
    }

    #[test]
    fn this_test_binary_gives_its_code_back_and_runs_on() {
        // Its code, constants and tables are read-only file pages.
        let released = release_read_only_segments();
        assert!(released > 0, "the code segment is many pages");
        assert_eq!(released % 4096, 0);
        // The code it runs and the constants it reads come back.
        let words: Vec<String> = ["forty", "two"].iter().map(|w| w.to_uppercase()).collect();
        assert_eq!(words.join(" "), "FORTY TWO");
        assert_eq!(format!("{}", 6 * 7), "42");
        assert!(release_read_only_segments() > 0);
    }

    #[test]
    fn this_test_binary_gives_its_tables_back_and_runs_on() {
        // The test binary is a PIE too; its tables are read-only pages
        // the loader is done with.
        let released = release_relocation_tables();
        assert!(released > 0, "a PIE has a RELA table of whole pages");
        assert_eq!(released % 4096, 0);
        // Its code and data still work, and a second call is harmless.
        assert_eq!(format!("{}", 6 * 7), "42");
        release_relocation_tables();
    }
}
