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
