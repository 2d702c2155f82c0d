//! The zygote's copy of the host binary's code, in anonymous memory.
//!
//! `fork` copies no page-table entry of a file mapping that holds no private
//! page: every page of the host binary's code a forked worker runs faults
//! again in the worker (from the page cache, but a fault all the same), and
//! a worker's start runs thousands of them. So the zygote, before it forks,
//! replaces each read-only mapping of the binary (its code, read-only data
//! and unwind tables), but its ends short of a huge page, by an anonymous
//! copy of itself at the same address, in transparent huge pages: the fork
//! then copies one entry per 2 MiB, and a worker faults on none of it (what
//! HHVM and Chromium call hugifying their text).
//!
//! The cost is the zygote's: the copy (once), and resident memory the size
//! of the binary's code, shared with every fork and never written. Tools
//! that map addresses back to the binary's file (`perf`) see anonymous
//! memory in the zygote and its forks.

use nix::sys::mman::{MRemapFlags, MapFlags, MmapAdvise, ProtFlags, madvise, mmap_anonymous, mprotect, mremap, munmap};
use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

/// A transparent huge page, the unit of what is copied: fork copies one
/// entry for each, where it would copy 512 of small pages.
const HUGE_PAGE: usize = 2 << 20;

/// Replaces the huge-page-aligned part of every read-only mapping of this
/// process's executable by an anonymous copy in huge pages; how many bytes
/// were copied. The unaligned ends stay mapped from the file. Nothing is
/// copied without transparent huge pages (a copy in small pages would cost
/// every fork more than it spares the forked). Only for a process with one
/// thread: no other may run the code while its mapping is swapped.
pub(super) fn anonymize() -> std::io::Result<usize> {
    let enabled = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")?;
    if enabled.contains("[never]") {
        return Ok(0);
    }
    let exe = std::fs::read_link("/proc/self/exe")?;
    let exe = exe.to_string_lossy();
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut copied = 0;
    for (start, end, prot) in maps.lines().filter_map(|line| read_only_mapping_of(line, &exe)) {
        let (start, end) = (start.next_multiple_of(HUGE_PAGE), end / HUGE_PAGE * HUGE_PAGE);
        if start < end {
            copy_in_place(start, end - start, prot)?;
            copied += end - start;
        }
    }
    Ok(copied)
}

/// The range and protection of a `/proc/self/maps` line, if it maps `exe`
/// and cannot be written.
fn read_only_mapping_of(line: &str, exe: &str) -> Option<(usize, usize, ProtFlags)> {
    if !line.ends_with(exe) {
        return None;
    }
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?.as_bytes();
    if perms.get(1) != Some(&b'-') {
        return None;
    }
    let mut prot = ProtFlags::PROT_READ;
    if perms.get(2) == Some(&b'x') {
        prot |= ProtFlags::PROT_EXEC;
    }
    Some((usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?, prot))
}

/// Copies the `len` bytes mapped at `start` (both huge-page-aligned) into
/// anonymous huge pages, then moves the copy over the original in one step.
fn copy_in_place(start: usize, len: usize, prot: ProtFlags) -> std::io::Result<()> {
    let size = NonZeroUsize::new(len + HUGE_PAGE).ok_or(std::io::ErrorKind::InvalidInput)?;
    // SAFETY: a new private mapping, nobody else's memory.
    let area =
        unsafe { mmap_anonymous(None, size, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_PRIVATE) }?;
    let base = area.as_ptr() as usize;
    let copy = base.next_multiple_of(HUGE_PAGE);
    // SAFETY: `area` spans `len + HUGE_PAGE` bytes from `base`, and the
    // copy's `len` bytes from `copy` lie within it; what is unmapped here
    // is the rest of it, which nothing uses.
    unsafe {
        trim(base, copy - base)?;
        trim(copy + len, base + len + HUGE_PAGE - (copy + len))?;
        let copy = NonNull::new_unchecked(copy as *mut c_void);
        madvise(copy, len, MmapAdvise::MADV_HUGEPAGE)?;
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
