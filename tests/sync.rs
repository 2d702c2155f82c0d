//! Shared objects between processes (`Queue`, `Pipe`, `Lock`, `Event`,
//! `Semaphore`, `Condition`, `Barrier`, `Value`, `Array`), on the backend
//! this build selects: each object's semantics and timeouts, terminating a
//! process blocked on each, a lock whose holder ends (released), hostile use,
//! the three example programs, and the embedding API.
//!
//! The scenarios run in the `sync-scenarios` program and print `key: value`
//! lines. Only outcomes are checked, never how long anything took.

mod common;

use common::*;
use std::collections::HashMap;

/// Runs a scenario; it must exit 0. Its report.
fn scenario(name: &str) -> HashMap<String, String> {
    let out = run(&[s(&guest("sync-scenarios")), "--", name]);
    out.assert_status(0);
    out.report()
}

fn check(report: &HashMap<String, String>, expected: &[(&str, &str)]) {
    for (key, value) in expected {
        assert_eq!(
            report.get(*key).map(String::as_str),
            Some(*value),
            "{key} in {report:#?}"
        );
    }
}

#[test]
fn queue_semantics_and_timeouts() {
    check(
        &scenario("queue"),
        &[
            ("get_nowait on empty", "Err(Empty)"),
            ("get_timeout on empty", "Err(Empty)"),
            ("put_nowait on full", "Err(Full)"),
            ("put_timeout on full", "Err(Full)"),
            ("qsize", "Ok(2)"),
            ("fifo", "(1, 2)"),
            ("empty", "Ok(true)"),
            ("put after close", "Err(Closed)"),
            ("joinable join", "Ok(())"),
            (
                "task_done too many",
                "Err(\"task_done() called too many times\")",
            ),
        ],
    );
}

#[test]
fn pipe_semantics_and_end_of_file() {
    check(
        &scenario("pipe"),
        &[
            ("poll before send", "Ok(false)"),
            ("poll after send", "Ok(true)"),
            ("echo", "Ok(\"echo hi\")"),
            ("recv after the child ended", "Err(Eof)"),
            ("send after the child ended", "Err(BrokenPipe)"),
            (
                "send on a read-only end",
                "Err(\"connection is read-only\")",
            ),
            ("one-way recv", "Ok(5)"),
            ("recv after close", "Err(Eof)"),
            ("recv after a holder's end", "Err(Eof)"),
        ],
    );
}

/// A lock held by a process that ends (however it ends) is released.
#[test]
fn locks_and_a_holder_that_ends() {
    check(
        &scenario("lock"),
        &[
            ("rlock reacquire", "Ok(true)"),
            (
                "rlock release unheld",
                "Err(\"cannot release un-acquired lock\")",
            ),
            ("lock release unheld", "Err(\"release unlocked lock\")"),
            ("lock try while held", "Ok(false)"),
            ("lock timeout while held", "Ok(false)"),
            ("lock after holder return", "Ok(true)"),
            ("lock after holder panic", "Ok(true)"),
            ("lock after holder terminate", "Ok(true)"),
        ],
    );
}

#[test]
fn event_condition_semaphore_barrier_value_array() {
    let report = scenario("others");
    check(
        &report,
        &[
            ("event is_set", "Ok(false)"),
            ("event wait timeout", "Ok(false)"),
            ("event after set", "Ok(true)"),
            (
                "notify without the lock",
                "Err(\"cannot notify on un-acquired lock\")",
            ),
            ("semaphore value", "Ok(1)"),
            ("semaphore try when 0", "Ok(false)"),
            ("semaphore over release", "Ok(3)"),
            (
                "bounded over release",
                "Err(\"semaphore or lock released too many times\")",
            ),
            ("barrier indices", "[0, 1, 2]"),
            ("barrier timeout", "Err(BrokenBarrier)"),
            ("barrier broken", "Ok(true)"),
            ("barrier after reset", "Ok(false)"),
            ("float value", "Ok(2.5)"),
            ("array", "Ok([1, 20, 3])"),
            ("array out of range", "Err(\"array index 3 out of range\")"),
        ],
    );
    // The waiter's three steps, in order (the report keeps the first).
    let out = run(&[s(&guest("sync-scenarios")), "--", "others"]);
    let steps: Vec<&str> = out
        .stdout_lines()
        .into_iter()
        .filter(|l| l.starts_with("waiter: "))
        .collect();
    assert_eq!(
        steps,
        [
            "waiter: Ok(\"event\")",
            "waiter: Ok(\"waiting\")",
            "waiter: Ok(\"notified true\")"
        ]
    );
}

/// A process blocked in get, recv, acquire, wait or join is terminated at
/// once, and a consumer terminated in `get` takes no item with it.
#[test]
fn terminate_while_blocked() {
    let report = scenario("blocked");
    for what in [
        "get",
        "recv",
        "acquire",
        "event",
        "condition",
        "barrier",
        "join",
    ] {
        check(
            &report,
            &[(format!("terminated in {what}").as_str(), "Some(-15)")],
        );
    }
    check(&report, &[("item after a terminated consumer", "Ok(7)")]);
}

/// Handles never given, handles smuggled in messages, huge messages and
/// closed handles are clear errors; the host and the process go on.
#[test]
fn hostile_use() {
    check(
        &scenario("hostile"),
        &[
            ("forged token", "Err(NotGiven(\"queue 1\"))"),
            (
                "garbage token",
                "Err(UnknownObject(\"`nonsense` is not a token\"))",
            ),
            ("handle in a message", "Ok(())"),
            ("huge message", "Err(true)"),
            ("queue still works", "Ok([1])"),
            ("child exitcode", "Some(0)"),
        ],
    );
    let out = run(&[s(&guest("sync-scenarios")), "--", "hostile"]);
    assert!(
        out.stdout.contains("handle in a message: Ok(\"Queue objects should only be shared between processes through inheritance\")"),
        "{out:#?}"
    );
    assert!(
        out.stdout
            .contains("open of a second-hand token: Err(NotGiven("),
        "{out:#?}"
    );
}

#[test]
fn producer_consumer_example() {
    let out = run(&[s(&guest("ipc-producer-consumer"))]);
    out.assert_status(0);
    check(
        &out.report(),
        &[
            ("consumed", "300"),
            ("total", "45150"),
            ("left in queue", "0"),
        ],
    );
}

#[test]
fn pipe_pingpong_example() {
    let out = run(&[s(&guest("ipc-pipe-pingpong"))]);
    out.assert_status(0);
    check(
        &out.report(),
        &[("round trips", "10000"), ("child exitcode", "Some(0)")],
    );
}

#[test]
fn lock_counter_example() {
    let out = run(&[s(&guest("ipc-lock-counter"))]);
    out.assert_status(0);
    check(&out.report(), &[("counter", "40000")]);
}

/// The embedder creates a queue, hands it to two processes, and reads what
/// they report; a handle the embedder drops is freed.
#[test]
fn embedder_queue_between_processes() {
    let host = host();
    let program = host.load(guest("ipc-queue-throughput")).unwrap();
    let queue = host::sync::Queue::new(&host, 0).unwrap();
    let producer = program
        .command()
        .entry("produce")
        .input(&(&queue, 100u64))
        .spawn()
        .unwrap();
    assert_eq!(join(&producer).code(), 0);
    let items: Vec<u64> = (0..100).map(|_| queue.get().unwrap()).collect();
    assert_eq!(items, (0..100).collect::<Vec<_>>());
    assert_eq!(
        queue.get_timeout::<u64>(false, None),
        Err(host::sync::Error::Empty)
    );
    let lock = host::sync::Lock::new(&host).unwrap();
    assert!(lock.acquire(true, None).unwrap());
    assert!(!lock.acquire(false, None).unwrap());
    lock.release().unwrap();
    assert!(lock.release().is_err());
}
