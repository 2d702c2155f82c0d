//! The zygote's copy of the code its forks run, in anonymous memory.
//!
//! `fork` copies no page-table entry of a file mapping that holds no private
//! page: every page of the host binary's code a forked worker runs faults
//! again in the worker (from the page cache, but a fault all the same, which
//! maps the pages around it too), and a worker's start runs thousands of
//! them. So the zygote, before it forks, replaces each read-only mapping of
//! the binary (its code, read-only data and unwind tables), but its ends
//! short of a huge page, by an anonymous copy of itself at the same address,
//! in transparent huge pages: the fork then copies one entry per 2 MiB, and a
//! worker faults on none of it (what HHVM and Chromium call hugifying their
//! text). The rest of the code a worker runs (the binary's code short of a
//! huge page, the C library's and the loader's, the program's compiled code)
//! is copied the same way in small pages: the fork copies an entry for each
//! page the zygote holds (a few hundred per mapping, far cheaper than the
//! faults they spare: a worker faulted on some forty of them).
//!
//! The cost is the zygote's: the copy (once), and resident memory the size
//! of the code copied, shared with every fork and never written. Tools
//! that map addresses back to a file (`perf`) see anonymous memory in the
//! zygote and its forks.

use nix::sys::mman::{MRemapFlags, MapFlags, MmapAdvise, ProtFlags, madvise, mmap_anonymous, mprotect, mremap, munmap};
use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

/// A transparent huge page, the unit of what is copied: fork copies one
/// entry for each, where it would copy 512 of small pages.
const HUGE_PAGE: usize = 2 << 20;

/// Replaces the huge-page-aligned part of every read-only mapping of this
/// process's executable by an anonymous copy in huge pages, and the rest of
/// every private executable file mapping (its ends, the libraries', the
/// compiled code's) by one in small pages; how many bytes were copied.
/// Nothing is copied without transparent huge pages (the binary's code in
/// small pages would cost every fork more than it spares the forked). Only
/// for a process with one thread: no other may run the code while its
/// mapping is swapped.
pub(super) fn anonymize() -> std::io::Result<usize> {
    let enabled = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")?;
    if enabled.contains("[never]") {
        return Ok(0);
    }
    let exe = std::fs::read_link("/proc/self/exe")?;
    let exe = exe.to_string_lossy();
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut copied = 0;
    for mapping in maps.lines().filter_map(read_only_file_mapping) {
        let (start, end, prot) = (mapping.start, mapping.end, mapping.prot);
        let (middle_start, middle_end) = match mapping.path.trim_end() == exe {
            true => (start.next_multiple_of(HUGE_PAGE), end / HUGE_PAGE * HUGE_PAGE),
            false => (end, end),
        };
        let middle = (middle_start < middle_end).then_some((middle_start, middle_end));
        if let Some((from, to)) = middle {
            copy_in_place(from, to - from, prot, true)?;
            copied += to - from;
        }
        if !prot.contains(ProtFlags::PROT_EXEC) {
            continue;
        }
        let (head_end, tail_start) = middle.unwrap_or((end, end));
        for (from, to) in [(start, head_end), (tail_start, end)] {
            if from < to {
                copy_in_place(from, to - from, prot, false)?;
                copied += to - from;
            }
        }
    }
    Ok(copied)
}

/// A private, read-only mapping of a file, as `/proc/self/maps` lists it.
struct Mapping<'a> {
    start: usize,
    end: usize,
    prot: ProtFlags,
    path: &'a str,
}

/// The mapping a `/proc/self/maps` line describes, if it maps a file
/// (its inode is not 0), privately, and cannot be written.
fn read_only_file_mapping(line: &str) -> Option<Mapping<'_>> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?.as_bytes();
    let (_offset, _device, inode) = (fields.next()?, fields.next()?, fields.next()?);
    let path = fields.next().unwrap_or_default().trim_start();
    if perms.get(1) != Some(&b'-') || perms.get(3) != Some(&b'p') || inode == "0" {
        return None;
    }
    let mut prot = ProtFlags::PROT_READ;
    if perms.get(2) == Some(&b'x') {
        prot |= ProtFlags::PROT_EXEC;
    }
    let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
    Some(Mapping { start, end, prot, path })
}

/// Copies the `len` bytes mapped at `start` into anonymous memory, then
/// moves the copy over the original in one step: in huge pages if `huge`
/// (both then huge-page-aligned), else in small ones.
fn copy_in_place(start: usize, len: usize, prot: ProtFlags, huge: bool) -> std::io::Result<()> {
    let align = if huge { HUGE_PAGE } else { 0 };
    let size = NonZeroUsize::new(len + align).ok_or(std::io::ErrorKind::InvalidInput)?;
    // SAFETY: a new private mapping, nobody else's memory.
    let area =
        unsafe { mmap_anonymous(None, size, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_PRIVATE) }?;
    let base = area.as_ptr() as usize;
    let copy = if huge { base.next_multiple_of(HUGE_PAGE) } else { base };
    // SAFETY: `area` spans `len + align` bytes from `base`, and the copy's
    // `len` bytes from `copy` lie within it; what is unmapped here is the
    // rest of it, which nothing uses.
    unsafe {
        trim(base, copy - base)?;
        trim(copy + len, base + len + align - (copy + len))?;
        let copy = NonNull::new_unchecked(copy as *mut c_void);
        if huge {
            madvise(copy, len, MmapAdvise::MADV_HUGEPAGE)?;
        }
        std::ptr::copy_nonoverlapping(start as *const u8, copy.as_ptr().cast::<u8>(), len);
        mprotect(copy, len, prot)?;
        // The original is replaced atomically: the code that runs this
        // (among the rest) reads the same bytes before and after. Aligned
        // alike, the copy's huge pages move whole.
        let target = Some(NonNull::new_unchecked(start as *mut c_void));
        mremap(copy, len, len, MRemapFlags::MREMAP_MAYMOVE | MRemapFlags::MREMAP_FIXED, target)?;
    }
    Ok(())
}

/// Unmaps `len` bytes at `at`, if any.
///
/// # Safety
/// The range must be ours and unused.
unsafe fn trim(at: usize, len: usize) -> std::io::Result<()> {
    if len > 0 {
        // SAFETY: the caller's.
        unsafe { munmap(NonNull::new_unchecked(at as *mut c_void), len) }?;
    }
    Ok(())
}
