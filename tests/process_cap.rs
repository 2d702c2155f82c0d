//! The process cap: every live process of a run counts, nested ones
//! included, on both backends (`--max-processes`, `HostBuilder::max_processes`).
//!
//! A hostile guest (`fork-bomb`: two children of itself per level, depth 30)
//! must end by itself under the cap, every start past it refused with the
//! process-limit error, and the host's memory small; a guest's `Pool` counts
//! too; a slot is free again as soon as its process has ended.

mod common;

use common::*;
use host::{Error, Host, Pool};

/// The host's peak RSS a fork bomb under `--max-processes 200` may cause.
const ONE_GIB_IN_KIB: u64 = 1 << 20;

#[test]
fn a_fork_bomb_ends_by_itself_at_the_cap_with_every_start_past_it_refused() {
    let (out, peak_rss_kib) = run_with_peak_rss(&["--max-processes", "200", s(&guest("fork-bomb")), "--", "30"]);
    out.assert_status(0);
    assert_eq!(out.summaries().len(), 1, "{out:#?}");
    let lines = out.stdout_lines();
    let started = lines.iter().filter(|l| **l == "started").count();
    let refused: Vec<&&str> = lines.iter().filter(|l| l.starts_with("refused: ")).collect();
    let others: Vec<&&str> = lines.iter().filter(|l| **l != "started" && !l.starts_with("refused: ")).collect();
    assert!(others.is_empty(), "only starts and refusals, no other error or failed child: {others:?}");
    // A refusal means 200 processes were alive: the root and 199 children.
    assert!(!refused.is_empty(), "a depth-30 bomb must reach the cap (started {started})");
    assert!(started >= 199, "the cap was reached, so at least 199 children started: {started}");
    for line in &refused {
        assert!(
            line.starts_with("refused: 200: ") && line.contains("--max-processes") && line.contains("Errno 11"),
            "a refusal is the process-limit error (EAGAIN) naming the limit: {line}"
        );
    }
    assert!(peak_rss_kib < ONE_GIB_IN_KIB, "the host's peak RSS must stay under 1 GiB: {peak_rss_kib} KiB");
}

#[test]
fn the_cap_frees_up_as_processes_end() {
    // The guest and 4 children fill a cap of 5; a fifth child is refused;
    // once the 4 are terminated and joined, 4 more start.
    let out = run(&["--max-processes", "5", s(&guest("process-cap")), "--", "refill", "4"]);
    out.assert_status(0);
    let report = out.report();
    assert_eq!(report.get("first").map(String::as_str), Some("4"), "{out:#?}");
    let extra = report.get("extra").cloned().unwrap_or_default();
    assert!(extra.starts_with("ProcessLimit: ") && extra.contains("5 live processes"), "{out:#?}");
    assert_eq!(report.get("second").map(String::as_str), Some("4"), "{out:#?}");
}

#[test]
fn a_guest_pool_past_the_cap_fails_cleanly_and_a_smaller_one_works() {
    let out = run(&["--max-processes", "4", s(&guest("process-cap")), "--", "pool", "8"]);
    out.assert_status(0);
    let report = out.report();
    let pool = report.get("pool").cloned().unwrap_or_default();
    assert!(
        pool.starts_with("cannot start the pool's workers") && pool.contains("--max-processes"),
        "Pool(8) under a cap of 4 is refused with the process-limit error: {out:#?}"
    );
    assert_eq!(report.get("small pool").map(String::as_str), Some("[1, 4, 9]"), "{out:#?}");
}

#[test]
fn the_library_refuses_a_start_past_the_cap_until_a_process_ends() {
    let host = builder().max_processes(2).build().expect("a host");
    assert_eq!(host.max_processes(), 2);
    let program = host.load(guest("sleep")).expect("load");
    let first = sleeper(&program);
    let second = sleeper(&program);
    let third = program.command().arg("3600").stdout(host::Stdio::null()).create();
    assert_eq!(third.start(), Err(Error::ProcessLimit { limit: 2 }));
    assert!(third.start().unwrap_err().to_string().contains("--max-processes"));
    assert_eq!(third.pid(), None, "a refused process never started");
    assert_eq!(third.exitcode(), None);
    // Killed (SIGKILL on the native backend): its reaper gives the slot back.
    first.kill().unwrap();
    assert_eq!(join(&first).code(), -9);
    third.start().expect("a slot is free once a process has ended");
    // A pool's workers count too.
    let pool_program = host.load(guest("pool-square")).expect("load");
    let Err(refused) = Pool::builder(&pool_program).processes(1).build() else {
        panic!("a pool worker must not fit past the cap");
    };
    assert!(refused.to_string().contains("--max-processes"), "{refused}");
    for process in [&second, &third] {
        process.terminate().unwrap();
        assert_eq!(join(process).code(), -15);
    }
    let pool = Pool::builder(&pool_program).processes(2).build().expect("room for two workers again");
    let squares: Vec<i64> = pool.map("square", [3i64]).unwrap();
    assert_eq!(squares, vec![9]);
    pool.terminate();
}

#[test]
fn each_backend_has_a_default_cap_and_the_cli_documents_the_flag() {
    let host = Host::builder()
        .backend(backend())
        .worker_program(env!("CARGO_BIN_EXE_host"))
        .compile_cache(compile_cache())
        .build()
        .expect("a host");
    assert_eq!(host.max_processes(), backend().default_max_processes());
    assert!(backend().default_max_processes() >= if is_thread_backend() { 10_000 } else { 1_000 });
    let help = host_raw(&["run", "--help"]);
    help.assert_status(0);
    assert!(help.stdout.contains("--max-processes"), "{help:#?}");
}

/// Starts `process`, retrying while the cap is full: until the processes
/// that hold the slots have ended. Bounded by the hang safety net only.
fn start_once_there_is_room(process: &host::Process) {
    let began = std::time::Instant::now();
    loop {
        match process.start() {
            Ok(()) => return,
            Err(Error::ProcessLimit { .. }) if began.elapsed() < HANG => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(error) => panic!("{} cannot start: {error}", process.name()),
        }
    }
}

#[test]
fn the_slots_of_orphans_come_back_whoever_reaps_them() {
    let host = builder().max_processes(2).build().expect("a host");
    let program = host.load(guest("process-cap")).expect("load");
    let sleep = host.load(guest("sleep")).expect("load");
    // An orphan the root adopts: the host waits for it, then both slots are free.
    let parent = program.command().args(["orphan", "300"]).stdout(host::Stdio::null()).spawn().expect("spawn");
    assert_eq!(join(&parent).code(), 0);
    host.wait();
    let sleepers: Vec<_> = (0..2).map(|_| sleeper(&sleep)).collect();
    for sleeper in &sleepers {
        sleeper.kill().unwrap();
        join(sleeper);
    }
    // A parent killed outright (SIGKILL on the native backend, where its
    // child becomes an orphan nobody announced): the child's slot still
    // comes back once it ends.
    let out = host::Capture::new();
    let parent =
        program.command().entry("hold").input(&300u64).stdout(host::Stdio::capture(&out)).spawn().expect("spawn");
    wait_for_output(&out, "child started");
    parent.kill().unwrap();
    assert_eq!(join(&parent).code(), -9);
    let sleepers: Vec<_> = (0..2).map(|_| sleep.command().arg("3600").stdout(host::Stdio::null()).create()).collect();
    for sleeper in &sleepers {
        start_once_there_is_room(sleeper);
    }
    for sleeper in &sleepers {
        sleeper.kill().unwrap();
        join(sleeper);
    }
}
