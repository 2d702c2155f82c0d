//! Many live processes in one host: a run allowed more processes than the
//! kernel's map count would hold in pooled slots takes the dense layout, so
//! that each live instance costs well under one memory mapping, and every
//! process of a large `--count` starts, sleeps and ends by `--timeout`. The
//! README's figure (100,000 processes) comes from the bench; here a few
//! thousand, and no timing.

mod common;

use common::*;

/// How many mappings this (test) process has.
#[cfg(target_os = "linux")]
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().count()
}

#[cfg(target_os = "linux")]
#[test]
fn thousands_of_live_processes_take_few_mappings() {
    if !is_thread_backend() {
        // Native processes are OS processes: their mappings are their own.
        return;
    }
    const N: usize = 2_000;
    let host = builder().max_processes(100_000).build().unwrap();
    let program = host.load(guest("sleep")).unwrap();
    let before = mappings();
    let processes: Vec<_> = (0..N).map(|_| sleeper(&program)).collect();
    assert!(processes.iter().all(|p| p.is_alive()));
    let added = mappings().saturating_sub(before);
    assert!((added as f64) < 0.65 * N as f64, "{N} live processes added {added} mappings: more than 0.65 each");
    for process in &processes {
        process.terminate().unwrap();
    }
    for process in &processes {
        assert_eq!(join(process).code(), -15);
    }
}

#[test]
fn a_large_count_of_sleepers_all_end_at_the_timeout() {
    // The native backend's processes are OS processes: fewer of them.
    let (n, cap) = if is_thread_backend() { (3_000, "100000") } else { (100, "1000") };
    let count = n.to_string();
    let out = run(&["--count", &count, "--max-processes", cap, "--timeout", "3s", "-q", s(&guest("sleep"))]);
    out.assert_status(143);
    let summaries = out.summaries();
    assert_eq!(summaries.len(), n, "one summary per process");
    assert!(summaries.iter().all(|s| s.exitcode == -15), "every one terminated by the timeout");
    let mut names: Vec<&str> = summaries.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), n, "every process once");
}

/// The dense layout's fiber stacks are carved side by side from shared
/// chunks: a guest that recurses without end still ends in a stack overflow
/// trap (wasmtime's own limit, short of the guard below each stack), each
/// of several at once alone, and their stacks serve the next processes.
#[test]
fn a_dense_host_stack_overflow_fails_only_that_process() {
    if !is_thread_backend() {
        // The dense layout is the thread backend's.
        return;
    }
    let out = run(&["--count", "4", "--max-processes", "100000", s(&guest("stack-overflow"))]);
    out.assert_status(1);
    let summaries = out.summaries();
    assert_eq!(summaries.len(), 4, "{out:#?}");
    assert!(summaries.iter().all(|s| s.exitcode == 1), "{out:#?}");
    assert_eq!(out.process_stderr().matches("stack overflow").count(), 4, "{out:#?}");

    let host = builder().max_processes(100_000).build().unwrap();
    let deep = host.load(guest("stack-overflow")).unwrap();
    let hello = host.load(guest("hello")).unwrap();
    let quiet = |program: &host::Program| {
        program.command().stdout(host::Stdio::null()).stderr(host::Stdio::null()).spawn().unwrap()
    };
    assert_eq!(join(&quiet(&deep)).code(), 1);
    let after: Vec<_> = (0..50).map(|_| quiet(&hello)).collect();
    assert!(after.iter().all(|p| join(p).code() == 0), "processes on recycled stacks run");
}

/// A dense layout's linear memory has no reservation: it grows by moving,
/// up to `--max-memory` and no further, and the failure names the limit.
#[test]
fn a_dense_host_memory_grows_up_to_max_memory() {
    if !is_thread_backend() {
        return;
    }
    let out = run(&["--max-processes", "100000", "--max-memory", "64MiB", s(&guest("oom"))]);
    out.assert_status(1);
    assert!(out.stdout_lines().contains(&"allocated 48 MiB"), "the memory grew, moving as it must: {out:#?}");
    assert!(out.process_stderr().contains("64MiB"), "the message names the limit: {out:#?}");
    assert_eq!(out.summaries()[0].exitcode, 1);
}
