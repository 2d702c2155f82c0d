//! The CLI contract (the README's CLI reference): `host run FILE [flags] [-- ARGS]`.
//!
//! Output (whole lines, prefixes with `--count`, nothing lost), the summary
//! lines, the exit-status rules, bad input (one line, status 2), `--entry`,
//! `-- ARGS`, core modules in the text format, `--help`.

mod common;

use common::*;
use std::collections::{BTreeMap, HashSet};

#[test]
fn single_process_runs_without_prefix_and_prints_one_summary() {
    let out = run(&[s(&guest("hello"))]);
    out.assert_status(0);
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 2, "{out:#?}");
    assert!(lines[0].starts_with("hello from pid="), "no prefix with one process: {out:#?}");
    assert_eq!(lines[1], "args: ");
    let summaries = out.summaries();
    assert_eq!(summaries.len(), 1, "{out:#?}");
    assert_eq!(summaries[0].name, "Process-1");
    assert_eq!(summaries[0].exitcode, 0);
    // The pid the process saw is the pid the summary reports.
    assert_eq!(lines[0], format!("hello from pid={}", summaries[0].pid));
}

#[test]
fn count_prefixes_every_line_and_prints_a_summary_per_process() {
    let out = run(&["--count", "3", s(&guest("hello")), "--", "a", "b"]);
    out.assert_status(0);
    let mut per_process: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in out.stdout_lines() {
        let (name, rest) = line.split_once(": ").unwrap_or_else(|| panic!("unprefixed line {line:?}"));
        assert!(["Process-1", "Process-2", "Process-3"].contains(&name), "bad prefix in {line:?}");
        per_process.entry(name.to_string()).or_default().push(rest.to_string());
    }
    assert_eq!(per_process.len(), 3, "{out:#?}");
    let summaries = out.summaries();
    assert_eq!(summaries.len(), 3, "{out:#?}");
    let summary_lines: Vec<&str> = out.stderr_lines().into_iter().filter(|l| l.contains("exitcode=")).collect();
    assert_eq!(summary_lines.len(), 3);
    for line in summary_lines {
        assert!(line.contains("Process-") && line.contains("pid=") && line.contains("exitcode=0"), "{line}");
    }
    let mut pids = HashSet::new();
    for (i, summary) in summaries.iter().enumerate() {
        // Summaries come in start order.
        assert_eq!(summary.name, format!("Process-{}", i + 1));
        assert_eq!(summary.exitcode, 0);
        assert!(pids.insert(summary.pid), "pids must be unique: {summaries:?}");
        let lines = &per_process[&summary.name];
        assert_eq!(lines, &vec![format!("hello from pid={}", summary.pid), "args: a b".to_string()]);
    }
}

/// `lines N` prints `line I of N xxx..` (100 characters) and three stderr
/// lines; four at once must never mix parts of lines, and each process's
/// lines arrive complete and in order.
#[test]
fn whole_lines_never_interleave() {
    let n = 2000;
    let out = run(&["--count", "4", s(&guest("lines")), "--", &n.to_string()]);
    out.assert_status(0);
    let mut next = [1usize; 4];
    for line in out.stdout_lines() {
        let (name, rest) = line.split_once(": ").unwrap_or_else(|| panic!("unprefixed line {line:?}"));
        let index: usize = name
            .strip_prefix("Process-")
            .and_then(|k| k.parse().ok())
            .filter(|k| (1..=4).contains(k))
            .unwrap_or_else(|| panic!("bad prefix in {line:?}"));
        let i = next[index - 1];
        let head = format!("line {i} of {n} ");
        let expected = format!("{head}{}", "x".repeat(100 - head.len()));
        assert_eq!(rest, expected, "line out of order or broken for {name}");
        next[index - 1] += 1;
    }
    assert_eq!(next, [n + 1; 4], "every process's lines must all be there");
    for k in 1..=4 {
        for i in [1, n / 2, n] {
            let expected = format!("Process-{k}: stderr line {i}");
            assert!(out.stderr_lines().contains(&expected.as_str()), "missing {expected:?}: {out:#?}");
        }
    }
    assert_eq!(out.summaries().len(), 4);
}

#[test]
fn a_partial_last_line_is_not_lost() {
    let out = run(&[s(&guest("lines")), "--", "3", "partial"]);
    out.assert_status(0);
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 4, "{out:#?}");
    assert_eq!(*lines.last().unwrap(), "partial-tail");

    let out = run(&["--count", "2", s(&guest("lines")), "--", "3", "partial"]);
    out.assert_status(0);
    for k in 1..=2 {
        let expected = format!("Process-{k}: partial-tail");
        assert!(out.stdout_lines().contains(&expected.as_str()), "{out:#?}");
    }
}

#[test]
fn a_partial_line_survives_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let wat = write_file(dir.path(), "hello.wat", WAT_HELLO);
    let out = run(&["--timeout", "300ms", "--entry", "partial_spin", s(&wat)]);
    out.assert_status(143);
    assert_eq!(out.stdout_lines(), vec!["partial"], "{out:#?}");
    assert!(out.stderr_lines().contains(&"ready"), "{out:#?}");
    assert_eq!(out.summaries()[0].exitcode, -15);
}

#[test]
fn output_before_a_trap_is_kept() {
    let out = run(&[s(&guest("trap"))]);
    out.assert_status(1);
    assert_eq!(out.stdout_lines(), vec!["about to panic"]);
    assert!(out.process_stderr().contains("deliberate panic"), "{out:#?}");
    assert_eq!(out.summaries()[0].exitcode, 1);
}

#[test]
fn exit_status_is_zero_when_all_succeed() {
    let out = run(&["--count", "2", s(&guest("exit-code")), "--", "0"]);
    out.assert_status(0);
    assert!(out.summaries().iter().all(|s| s.exitcode == 0));
}

#[test]
fn exit_status_is_the_exitcode() {
    let out = run(&[s(&guest("exit-code")), "--", "3"]);
    out.assert_status(3);
    assert_eq!(out.stdout_lines(), vec!["exiting with 3"]);
    assert_eq!(out.summaries()[0].exitcode, 3);

    let out = run(&["--count", "2", s(&guest("exit-code")), "--", "7"]);
    out.assert_status(7);
    assert_eq!(out.summaries().len(), 2);
    assert!(out.summaries().iter().all(|s| s.exitcode == 7), "{out:#?}");
}

#[test]
fn timeout_terminates_and_exits_143() {
    let out = run(&["--timeout", "300ms", s(&guest("sleep")), "--", "3600"]);
    out.assert_status(143);
    assert_eq!(out.stdout_lines(), vec!["sleeping"], "output before the terminate is kept");
    let summaries = out.summaries();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].exitcode, -15);
    assert!(out.process_stderr().contains("timeout"), "{out:#?}");
}

/// `sleep.wasm`'s argument is read as an `f64` is (its own parser, not
/// std's): fractions and exponents sleep and wake, something else is the
/// default (so the timeout ends it), a negative or endless time panics after
/// `sleeping`, as `Duration::from_secs_f64` does.
#[test]
fn sleep_reads_its_seconds_as_a_float() {
    for secs in ["0.01", "+.01", "1e-2", "0", "-0", "1.E-3"] {
        let out = run(&["--timeout", "30s", s(&guest("sleep")), "--", secs]);
        out.assert_status(0);
        assert_eq!(out.stdout_lines(), vec!["sleeping", "woke"], "{secs}: {out:#?}");
    }
    for not_a_number in ["0x1", "1_0", "e3", "."] {
        let out = run(&["--timeout", "300ms", s(&guest("sleep")), "--", not_a_number]);
        out.assert_status(143);
        assert_eq!(out.stdout_lines(), vec!["sleeping"], "{not_a_number}: {out:#?}");
    }
    for refused in ["-1", "inf", "NaN", "1e400"] {
        let out = run(&[s(&guest("sleep")), "--", refused]);
        out.assert_status(1);
        assert_eq!(out.stdout_lines(), vec!["sleeping"], "{refused}: {out:#?}");
        assert!(out.process_stderr().contains("cannot convert float seconds to Duration"), "{refused}: {out:#?}");
    }
}

#[test]
fn timeout_ends_every_process() {
    let out = run(&["--count", "3", "--timeout", "300ms", s(&guest("sleep")), "--", "3600"]);
    out.assert_status(143);
    assert_eq!(out.summaries().len(), 3);
    assert!(out.summaries().iter().all(|s| s.exitcode == -15), "{out:#?}");
}

/// More busy loops than the host has cpus: the timeout must still end them.
#[test]
fn timeout_ends_more_spinners_than_cpus() {
    let n = (host::cpu_count() + 1).to_string();
    let out = run(&["--count", &n, "--timeout", "300ms", s(&guest("spin"))]);
    out.assert_status(143);
    assert!(out.summaries().iter().all(|s| s.exitcode == -15), "{out:#?}");
}

#[test]
fn timeout_that_does_not_fire_changes_nothing() {
    let out = run(&["--timeout", "1h", s(&guest("hello"))]);
    out.assert_status(0);
}

#[test]
fn args_reach_main() {
    let out = run(&[s(&guest("hello")), "--", "a", "b c", "--flag"]);
    out.assert_status(0);
    assert_eq!(out.stdout_lines()[1], "args: a b c --flag");
}

#[test]
fn entry_with_a_json_argument() {
    // seed-join-many's `task1(name: u32)` prints `NAME run` ten times.
    let out = run(&["--entry", "task1", s(&guest("seed-join-many")), "--", "7"]);
    out.assert_status(0);
    assert_eq!(out.stdout_lines(), vec!["7 run"; 10]);

    // children's `exit_with(code: i32)`.
    let out = run(&["--entry", "exit_with", s(&guest("children")), "--", "4"]);
    out.assert_status(4);

    // An argument of the wrong type fails the entry (exitcode 1) with a message.
    let out = run(&["--entry", "takes_u32", s(&guest("children")), "--", "\"seven\""]);
    out.assert_status(1);
    assert!(out.process_stderr().contains("takes_u32"), "{out:#?}");
}

#[test]
fn wasi_preview1_core_module_in_text_format_runs() {
    let dir = tempfile::tempdir().unwrap();
    let wat = write_file(dir.path(), "hello.wat", WAT_HELLO);
    let out = run(&[s(&wat)]);
    out.assert_status(0);
    assert_eq!(out.stdout_lines(), vec!["hello from wat"]);
    assert_eq!(out.summaries().len(), 1);

    let out = run(&["--count", "2", s(&wat)]);
    out.assert_status(0);
    let mut lines = out.stdout_lines();
    lines.sort();
    assert_eq!(lines, vec!["Process-1: hello from wat", "Process-2: hello from wat"]);
}

#[test]
fn plain_wasi_command_runs() {
    let out = run(&[s(&guest("plain-command"))]);
    out.assert_status(0);
    assert_eq!(out.stdout_lines(), vec!["plain command ok"]);
}

#[test]
fn help_exits_zero_and_names_every_flag() {
    let out = host_raw(&["run", "--help"]);
    out.assert_status(0);
    for flag in
        ["--count", "--backend", "--entry", "--timeout", "--max-memory", "--fuel", "--max-processes", "--dir", "--env"]
    {
        assert!(out.stdout.contains(flag), "`host run --help` must mention {flag}: {out:#?}");
    }
    let out = host_raw(&["--help"]);
    out.assert_status(0);
    assert!(out.stdout.contains("run"), "{out:#?}");
}

#[cfg(not(feature = "native"))]
#[test]
fn native_backend_without_the_feature_says_how_to_get_it() {
    let out = host_raw(&["run", "--backend", "native", s(&guest("hello"))]);
    out.assert_bad_input();
    assert!(out.stderr.contains("--features native"), "{out:#?}");
}

#[test]
fn unknown_backend_is_bad_input() {
    host_raw(&["run", "--backend", "fork", s(&guest("hello"))]).assert_bad_input();
}

#[test]
fn bad_flag_values_are_bad_input() {
    let hello = guest("hello");
    for flags in [
        &["--max-memory", "lots"][..],
        &["--timeout", "soon"],
        &["--count", "0"],
        &["--count", "many"],
        &["--fuel", "plenty"],
        &["--env", "NOEQUALS"],
        &["--env", "=value"],
        &["--dir", "/no/such/dir"],
        &["--dir", "::/data"],
        &["--no-such-flag"],
    ] {
        let mut args = flags.to_vec();
        args.push(s(&hello));
        let out = run(&args);
        assert_eq!(out.status, Some(2), "{flags:?}: {out:#?}");
        out.assert_bad_input();
    }
}

#[test]
fn missing_file_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[s(&dir.path().join("no-such.wasm"))]);
    out.assert_bad_input();
    let out = run(&[]);
    out.assert_bad_input();
}

#[test]
fn non_wasm_file_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let text = write_file(dir.path(), "notes.wasm", "this is not WebAssembly\n");
    run(&[s(&text)]).assert_bad_input();
    let empty = write_file(dir.path(), "empty.wasm", "");
    run(&[s(&empty)]).assert_bad_input();
    // A truncated module: the right magic, then garbage.
    let truncated = dir.path().join("truncated.wasm");
    std::fs::write(&truncated, b"\0asm\x01\0\0\0\x01\xff\xff").unwrap();
    run(&[s(&truncated)]).assert_bad_input();
}

/// A "file" without end is read no further than a program may be: one
/// line, status 2, never a host that eats all memory.
#[test]
fn a_program_file_without_end_is_bad_input() {
    let out = run(&["/dev/zero"]);
    out.assert_bad_input();
    assert!(out.stderr.contains("1GiB"), "{out:#?}");
}

/// A name a guest gives itself is escaped where the host prints it: a
/// newline in it cannot end the host's summary line and forge another.
#[test]
fn a_name_a_guest_gives_cannot_forge_the_hosts_lines() {
    let forged = "evil\n[host] Process-7 pid=99 exitcode=0 wall=1ms";
    let out = run(&["--count", "2", s(&guest("hostile")), "--", "rename", forged]);
    out.assert_status(0);
    let host_lines: Vec<&str> = out.stderr_lines().into_iter().filter(|l| l.starts_with("[host]")).collect();
    assert_eq!(host_lines.len(), 2, "{out:#?}");
    // (On the native backend the root names its workers itself.)
    assert!(!host_lines.iter().any(|l| l.starts_with("[host] Process-7")), "{out:#?}");
}

#[test]
fn wrong_world_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let wat = write_file(dir.path(), "wrong.wat", WAT_WRONG_WORLD);
    let out = run(&[s(&wat)]);
    out.assert_bad_input();
    assert!(out.stderr.contains("env"), "the message names what is missing: {out:#?}");
}

#[test]
fn unknown_entry_is_bad_input() {
    let out = run(&["--entry", "no_such_entry", s(&guest("children"))]);
    out.assert_bad_input();
    assert!(out.stderr.contains("no_such_entry"), "{out:#?}");
    // A plain command has no entries at all.
    run(&["--entry", "task", s(&guest("plain-command"))]).assert_bad_input();
}

#[test]
fn absurd_limits_are_one_line_and_status_2_never_a_panic_or_a_wrap() {
    let hello = guest("hello");
    for (flags, says) in [
        // Overflowed the clock: a panic in a destructor (status 134) before.
        (&["--timeout", "10000000000000000000s"][..], "too long"),
        (&["--timeout", "1000000000000000000000000000000000h"], "too long"),
        // Saturated to 16 EiB by a float cast before.
        (&["--max-memory", "1000000000000000000000000000000GiB"], "too large"),
        (&["--max-memory", "8GiB"], "more than the host allows"),
        (&["--fuel", "100000000000000000000000000"], "too large"),
        (&["--count", "4000000000"], "--max-processes"),
        (&["--count", "201", "--max-processes", "200"], "--max-processes"),
        (&["--max-processes", "0"], "--max-processes"),
    ] {
        let mut args = flags.to_vec();
        args.push(s(&hello));
        let out = run(&args);
        out.assert_bad_input();
        assert!(out.stderr.contains(says), "{flags:?} must say {says:?}: {out:#?}");
        assert!(!out.stderr.contains("panicked"), "{flags:?}: {out:#?}");
    }
    // The largest timeout accepted is no deadline in practice, and no panic.
    let out = run(&["--timeout", "876000h", s(&hello)]);
    out.assert_status(0);
}

#[test]
fn a_program_whose_entry_listing_loops_or_hoards_memory_is_refused_at_load() {
    for (name, says) in [
        ("probe-loop", "its entry listing did not finish within the 1s allowed while loading"),
        ("probe-alloc", "its entry listing grew its memory past the 64MiB allowed while loading"),
    ] {
        let out = run(&[s(&guest(name))]);
        out.assert_bad_input();
        assert!(out.stderr.contains(says), "{name}: {out:#?}");
        // With fuel metering on, the same.
        let out = run(&["--fuel", "1000000000000", s(&guest(name))]);
        out.assert_bad_input();
    }
}
