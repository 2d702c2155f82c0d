//! `mp::fork()` (issue 13), through the `fork` test program: on the native
//! backend a real fork of the worker, on the thread backend a clean refusal
//! naming the backend that can. Every scenario runs on both backends; only
//! order and outcomes are checked, never how long anything took.

mod common;

use common::*;
use std::collections::HashMap;

/// Runs `fork SCENARIO` with `options` before the program; on the native
/// backend it must end with `done: SCENARIO` and exit 0, and its report is
/// returned. On the thread backend the fork is refused: exit 1, the error
/// named, and `None`.
fn scenario(name: &str, options: &[&str]) -> Option<(Output, HashMap<String, String>)> {
    let program = guest("fork");
    let mut args: Vec<&str> = options.to_vec();
    args.extend([s(&program), "--", name]);
    let out = run(&args);
    if is_thread_backend() {
        assert_refused(&out);
        return None;
    }
    out.assert_status(0);
    assert_eq!(out.stdout_lines().last(), Some(&format!("done: {name}").as_str()), "{out:#?}");
    let report = out.report();
    Some((out, report))
}

/// The thread backend's refusal: nothing forked, a clear `Unsupported`
/// error that names `--backend native`, exit 1.
fn assert_refused(out: &Output) {
    out.assert_status(1);
    let last = out.stdout_lines().last().copied().unwrap_or_default();
    assert!(last.contains("fork: Unsupported: "), "{out:#?}");
    assert!(last.contains("thread backend"), "{out:#?}");
    assert!(last.contains("--backend native"), "{out:#?}");
    assert_eq!(out.summaries().len(), 1, "one process only: {out:#?}");
    assert!(!out.stdout.contains("child-"), "no child ran: {out:#?}");
}

fn get<'a>(report: &'a HashMap<String, String>, key: &str) -> &'a str {
    report.get(key).unwrap_or_else(|| panic!("no {key:?} in {report:?}"))
}

#[test]
fn fork_copies_the_whole_process() {
    let Some((out, report)) = scenario("copy", &[]) else {
        return;
    };
    // Heap, stack and globals: set before the fork, changed after it on
    // each side, and each side sees only its own changes.
    assert_eq!(get(&report, "child-numbers"), "[1, 2, 3, 4]", "{out:#?}");
    assert_eq!(get(&report, "child-local"), "70");
    assert_eq!(get(&report, "child-global"), "3");
    assert_eq!(get(&report, "child-exitcode"), "Some(0)");
    assert_eq!(get(&report, "numbers"), "[1, 2, 3]");
    assert_eq!(get(&report, "local"), "8");
    assert_eq!(get(&report, "global"), "2");
}

/// The random source is not copied with the process: the child's secure
/// random bytes are not its parent's.
#[test]
fn a_forked_child_draws_its_own_random_bytes() {
    let Some((out, report)) = scenario("random", &[]) else {
        return;
    };
    assert_eq!(get(&report, "random").len(), 32, "{out:#?}");
    assert_ne!(get(&report, "random"), get(&report, "child-random"), "{out:#?}");
}

#[test]
fn fork_returns_child_and_parent() {
    let Some((out, report)) = scenario("returns", &[]) else {
        return;
    };
    let pid = get(&report, "pid");
    assert_eq!(pid, out.summaries()[0].pid.to_string());
    let child = get(&report, "child-pid");
    assert_ne!(child, pid);
    assert_eq!(get(&report, "forked-pid"), format!("Some({child})"), "{out:#?}");
    assert_eq!(get(&report, "child-ppid"), pid);
    assert_eq!(get(&report, "forked-name"), "Process-1");
    assert_eq!(get(&report, "child-name"), "Process-1");
    assert_eq!(get(&report, "forked-exitcode"), "Some(7)");
    assert_eq!(get(&report, "forked-alive"), "false");
    assert_eq!(get(&report, "second-name"), "Process-2");
}

#[test]
fn forked_child_can_be_terminated_and_joined() {
    let Some((out, report)) = scenario("terminate", &[]) else {
        return;
    };
    assert_eq!(get(&report, "alive"), "true", "{out:#?}");
    assert_eq!(get(&report, "exitcode"), "Some(-15)");
    assert_eq!(get(&report, "alive-after"), "false");
}

#[test]
fn fork_in_a_loop_reaps_every_child() {
    let Some((out, report)) = scenario("many", &[]) else {
        return;
    };
    // Each child ended with its own copy of the loop counter as its code.
    assert_eq!(get(&report, "reaped"), "100", "{out:#?}");
    assert_eq!(get(&report, "distinct-pids"), "100");
}

#[test]
fn forked_child_inherits_the_deadline() {
    // The parent ends at once; its child sleeps for an hour. The run ends
    // because the child has the time left of its parent's `--timeout`,
    // which terminates it (a child with no deadline would hang the run).
    let Some((out, report)) = scenario("deadline", &["--timeout", "2s"]) else {
        return;
    };
    assert_eq!(get(&report, "forked"), "true");
    assert!(
        out.process_stderr().contains("timeout: the process ran past its time limit"),
        "the forked child ends by its deadline: {out:#?}"
    );
}

#[test]
fn fork_past_the_process_cap_is_refused() {
    // The parent and its first child fill a cap of 2: the second fork is
    // refused; once the first child has ended, a third succeeds.
    let Some((out, report)) = scenario("cap", &["--max-processes", "2"]) else {
        return;
    };
    assert_eq!(get(&report, "second"), "ProcessLimit", "{out:#?}");
    assert_eq!(get(&report, "third"), "Some(0)");
}

#[test]
fn buffered_output_is_printed_once() {
    let Some((out, _)) = scenario("output", &[]) else {
        return;
    };
    assert_eq!(out.stdout, "before child\nparent\ndone: output\n", "{out:#?}");
}

#[test]
fn forked_child_starts_children_of_its_own() {
    let Some((out, report)) = scenario("nested", &[]) else {
        return;
    };
    assert_eq!(get(&report, "child-grandchild-exitcode"), "Some(5)", "{out:#?}");
    assert_eq!(get(&report, "child-exitcode"), "Some(0)");
}

#[test]
fn a_daemon_cannot_fork() {
    // The daemon rule comes first, on every backend.
    let out = run(&[s(&guest("fork")), "--", "daemon"]);
    out.assert_status(0);
    assert_eq!(out.report().get("child-daemon").map(String::as_str), Some("DaemonChildren"), "{out:#?}");
}

#[test]
fn shared_objects_stay_usable_on_both_sides() {
    // The child takes what its parent put before the fork and puts back
    // its answer, which the parent gets.
    let Some((out, report)) = scenario("shared", &[]) else {
        return;
    };
    assert_eq!(get(&report, "child-exitcode"), "Some(0)", "{out:#?}");
    assert_eq!(get(&report, "got"), "Ok(42)");
}

#[test]
fn granted_files_are_read_on_both_sides() {
    // A file read before the fork leaves the worker's blocking pool with a
    // thread that the child has not: the fork waits for it to go, so the
    // child's own reads still work.
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "note.txt", "hello\n");
    let grant = format!("{}::/data", s(dir.path()));
    let Some((out, report)) = scenario("files", &["--dir", &grant]) else {
        return;
    };
    assert_eq!(get(&report, "before"), r#"Ok("hello")"#, "{out:#?}");
    assert_eq!(get(&report, "child-read"), r#"Ok("hello")"#);
    assert_eq!(get(&report, "child-again"), r#"Ok("hello")"#);
    assert_eq!(get(&report, "child-exitcode"), "Some(0)");
    assert_eq!(get(&report, "after"), r#"Ok("hello")"#);
}

#[test]
fn a_spawned_child_stays_its_parents_alone() {
    // Forked while a spawned child runs: the forked child cannot join it
    // (its handle is closed there), and the parent still ends it and
    // reaps it; the forked child is the parent's second child.
    let Some((out, report)) = scenario("with-child", &[]) else { return };
    assert_eq!(get(&report, "child-sees-spawned"), r#"Err("Closed")"#, "{out:#?}");
    assert_eq!(get(&report, "child-exitcode"), "Some(0)");
    assert_eq!(get(&report, "spawned-alive"), "true");
    assert_eq!(get(&report, "spawned-exitcode"), "Some(-15)");
    assert_eq!(get(&report, "forked-name"), "Process-2");
}

/// Where output is labelled (`--count 2`), a forked child's lines carry its
/// own label from the fork on, as a spawned child's do; its parent's
/// unfinished line is ended at the fork, printed once.
#[test]
fn a_forked_childs_lines_carry_its_own_label() {
    let out = run(&["--count", "2", s(&guest("fork")), "--", "output"]);
    if is_thread_backend() {
        out.assert_status(1);
        return;
    }
    out.assert_status(0);
    let mut lines = out.stdout_lines();
    lines.sort();
    let expected = [
        "Process-1/Process-1: child",
        "Process-1: before ",
        "Process-1: done: output",
        "Process-1: parent",
        "Process-2/Process-1: child",
        "Process-2: before ",
        "Process-2: done: output",
        "Process-2: parent",
    ];
    assert_eq!(lines, expected, "{out:#?}");
}
