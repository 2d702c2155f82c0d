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
            ("task_done too many", "Err(\"task_done() called too many times\")"),
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
            ("send on a read-only end", "Err(\"connection is read-only\")"),
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
            ("rlock release unheld", "Err(\"cannot release un-acquired lock\")"),
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
            ("notify without the lock", "Err(\"cannot notify on un-acquired lock\")"),
            ("semaphore value", "Ok(1)"),
            ("semaphore try when 0", "Ok(false)"),
            ("semaphore over release", "Ok(3)"),
            ("bounded over release", "Err(\"semaphore or lock released too many times\")"),
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
    let steps: Vec<&str> = out.stdout_lines().into_iter().filter(|l| l.starts_with("waiter: ")).collect();
    assert_eq!(steps, ["waiter: Ok(\"event\")", "waiter: Ok(\"waiting\")", "waiter: Ok(\"notified true\")"]);
}

/// A process blocked in get, recv, acquire, wait or join is terminated at
/// once, and a consumer terminated in `get` takes no item with it.
#[test]
fn terminate_while_blocked() {
    let report = scenario("blocked");
    for what in ["get", "recv", "acquire", "event", "condition", "barrier", "join"] {
        check(&report, &[(format!("terminated in {what}").as_str(), "Some(-15)")]);
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
            ("garbage token", "Err(UnknownObject(\"`nonsense` is not a token\"))"),
            ("handle in a message", "Ok(())"),
            ("huge message", "Err(true)"),
            ("queue still works", "Ok([1])"),
            ("child exitcode", "Some(0)"),
        ],
    );
    let out = run(&[s(&guest("sync-scenarios")), "--", "hostile"]);
    assert!(
        out.stdout.contains(
            "handle in a message: Ok(\"Queue objects should only be shared between processes through inheritance\")"
        ),
        "{out:#?}"
    );
    assert!(out.stdout.contains("open of a second-hand token: Err(NotGiven("), "{out:#?}");
}

#[test]
fn producer_consumer_example() {
    let out = run(&[s(&guest("ipc-producer-consumer"))]);
    out.assert_status(0);
    check(&out.report(), &[("consumed", "300"), ("total", "45150"), ("left in queue", "0")]);
}

#[test]
fn pipe_pingpong_example() {
    let out = run(&[s(&guest("ipc-pipe-pingpong"))]);
    out.assert_status(0);
    check(&out.report(), &[("round trips", "10000"), ("child exitcode", "Some(0)")]);
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
    let producer = program.command().entry("produce").input(&(&queue, 100u64)).spawn().unwrap();
    assert_eq!(join(&producer).code(), 0);
    let items: Vec<u64> = (0..100).map(|_| queue.get().unwrap()).collect();
    assert_eq!(items, (0..100).collect::<Vec<_>>());
    assert_eq!(queue.get_timeout::<u64>(false, None), Err(host::sync::Error::Empty));
    let lock = host::sync::Lock::new(&host).unwrap();
    assert!(lock.acquire(true, None).unwrap());
    assert!(!lock.acquire(false, None).unwrap());
    lock.release().unwrap();
    assert!(lock.release().is_err());
}

/// Runs `host run --backend <under test> ARGS...` and measures the peak
/// resident set of the host and every process it waited for (the kernel's
/// `ru_maxrss` of the reaped child, in bytes). Bounded by the hang safety net.
// Reaped by `wait4`, which std's `wait` cannot replace: it gives no rusage.
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&str]) -> (Output, u64) {
    use std::io::Read;
    let mut child = host_command()
        .args(["run", "--backend", backend_name()])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the host binary");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let pid = child.id();
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if watchdog.recv_timeout(HANG).is_err() {
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    });
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    let _ = done.send(());
    assert_eq!(waited, pid as libc::pid_t, "wait4 of the host");
    let output = Output {
        status: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    (output, usage.ru_maxrss as u64 * 1024)
}

/// Issue 8.3, the hostile guest: under `--max-memory 16MiB` it puts 300
/// items of 1 MiB on a queue nobody reads. The puts past its budget (the
/// default `--max-shared`, 64 MiB) fail with a quota error that names the
/// flag, a taken item gives its room back, and the host does not grow
/// beyond what an idle run costs plus that budget.
#[test]
fn a_queue_nobody_reads_is_bounded() {
    use host::sync::budget::{DEFAULT_MAX_SHARED, ITEM_OVERHEAD};
    let (idle, idle_rss) = run_measured(&[s(&guest("hello"))]);
    idle.assert_status(0);
    let (out, rss) = run_measured(&["--max-memory", "16MiB", s(&guest("shared-limits")), "--", "flood", "300"]);
    out.assert_status(0);
    let fits = DEFAULT_MAX_SHARED / ((1 << 20) + ITEM_OVERHEAD);
    let report = out.report();
    check(
        &report,
        &[
            ("put", fits.to_string().as_str()),
            ("quota", "true"),
            ("queued", fits.to_string().as_str()),
            ("get after the flood", "true"),
            ("put after a get", "true"),
        ],
    );
    assert!(report["error"].contains("quota exceeded") && report["error"].contains("--max-shared"), "{out:#?}");
    let bound = idle_rss + DEFAULT_MAX_SHARED + (64 << 20);
    assert!(
        rss < bound,
        "host peak RSS {} MiB, over {} MiB (idle run: {} MiB)",
        rss >> 20,
        bound >> 20,
        idle_rss >> 20
    );
}

/// `--max-shared` sets the budget: 4 MiB fit three items of 1 MiB.
#[test]
fn max_shared_sets_the_budget() {
    let out = run(&["--max-shared", "4MiB", s(&guest("shared-limits")), "--", "flood", "300"]);
    out.assert_status(0);
    check(&out.report(), &[("put", "3"), ("quota", "true"), ("put after a get", "true")]);
    assert!(out.stdout.contains("over its limit of 4194304 (--max-shared)"), "{out:#?}");
    run(&["--max-shared", "lots", s(&guest("shared-limits"))]).assert_bad_input();
}

/// Each process has its own budget: a child parks all it may and ends; its
/// parent may still put on the same queue, and finds every item the child
/// left there.
#[test]
fn each_process_has_its_own_budget() {
    let out = run(&["--max-shared", "4MiB", s(&guest("shared-limits")), "--", "per-process", "65536"]);
    out.assert_status(0);
    let fits = (4u64 << 20) / (65536 + host::sync::budget::ITEM_OVERHEAD);
    let report = out.report();
    check(
        &report,
        &[
            ("child put", fits.to_string().as_str()),
            ("child exitcode", "Some(0)"),
            ("parent put after the child's end", "true"),
            ("parent got", (fits + 1).to_string().as_str()),
        ],
    );
    assert!(report["child error"].contains("--max-shared"), "{out:#?}");
}

/// A pipe whose reader never reads holds its writer back once a window of
/// bytes is in flight; the blocked writer is terminated at once, and the
/// reader still gets every message that was in flight.
#[test]
fn a_pipe_whose_reader_lags_holds_its_writer_back() {
    use host::sync::{PIPE_WINDOW, budget::ITEM_OVERHEAD};
    let cost = 64 << 10;
    let window = (PIPE_WINDOW / cost).to_string();
    let size = (cost - ITEM_OVERHEAD).to_string();
    let out = run(&[s(&guest("shared-limits")), "--", "pipe-flood", &size, &window]);
    out.assert_status(0);
    check(
        &out.report(),
        &[
            ("sent before the terminate", window.as_str()),
            ("writer exitcode", "Some(-15)"),
            ("received", window.as_str()),
        ],
    );
}

/// Objects are bounded too: a process may create and free as many as it
/// likes, but one that keeps them is refused past the limit (the object
/// cannot be made, so the process fails with a message naming the limit).
#[test]
fn objects_are_bounded_and_freed_ones_give_their_room_back() {
    use host::sync::budget::DEFAULT_MAX_SHARED_OBJECTS;
    let out = run(&[s(&guest("shared-limits")), "--", "objects", "10000"]);
    out.assert_status(1);
    check(&out.report(), &[("created and dropped", "10000")]);
    // It reports every 1024 objects kept: the last report is the limit.
    let kept = out.stdout_lines().into_iter().rfind(|l| l.starts_with("kept: "));
    assert_eq!(kept, Some(format!("kept: {DEFAULT_MAX_SHARED_OBJECTS}").as_str()), "{out:#?}");
    let limit = format!(
        "quota exceeded: this process would hold {} shared objects, over its limit of {DEFAULT_MAX_SHARED_OBJECTS}",
        DEFAULT_MAX_SHARED_OBJECTS + 1
    );
    assert!(out.process_stderr().contains(&limit), "{out:#?}");
    assert!(out.process_stderr().contains("cannot create a Lock"), "{out:#?}");
}

/// Every kind of object past the budget is refused with a quota error the
/// guest takes from the WIT's `create` functions (the SDK's constructors
/// panic with it, as Python raises), not a trap; one freed, one more fits.
#[test]
fn every_kind_of_object_past_the_budget_is_an_error_the_guest_takes() {
    let out = run(&[s(&guest("shared-limits")), "--", "every-kind"]);
    out.assert_status(0);
    let report = out.report();
    for kind in ["queue", "lock", "semaphore", "event", "condition", "barrier", "array", "pipe"] {
        let refused = report.get(kind).unwrap_or_else(|| panic!("{kind}: {out:#?}"));
        assert!(refused.starts_with("quota exceeded") && refused.contains("shared objects"), "{kind}: {out:#?}");
    }
    check(&report, &[("after one is freed", "created")]);
}

/// A manager's containers count as objects, and a refused one is an error
/// the guest can handle (`Manager::dict` returns it), not a trap.
#[test]
fn a_refused_manager_dict_is_an_error_the_guest_handles() {
    use host::sync::budget::DEFAULT_MAX_SHARED_OBJECTS;
    let out = run(&[s(&guest("shared-limits")), "--", "dicts"]);
    out.assert_status(0);
    let kept = DEFAULT_MAX_SHARED_OBJECTS.to_string();
    check(&out.report(), &[("dicts kept", kept.as_str()), ("first dict", "7")]);
    let refused = out.stdout_lines().into_iter().find(|l| l.starts_with("refused: ")).unwrap_or_default().to_string();
    assert!(refused.contains("quota exceeded"), "{out:#?}");
}

/// The embedder's own puts are bounded by the same budget.
#[test]
fn the_embedders_puts_are_bounded() {
    let host = builder().max_shared(1 << 20).build().unwrap();
    let queue = host::sync::Queue::new(&host, 0).unwrap();
    let item = "x".repeat((64 << 10) - 2);
    let fits = (1u64 << 20) / ((64 << 10) + host::sync::budget::ITEM_OVERHEAD);
    for _ in 0..fits {
        queue.put(&item).unwrap();
    }
    match queue.put(&item) {
        Err(host::sync::Error::Quota { kind: host::sync::QuotaKind::Bytes, limit, .. }) => assert_eq!(limit, 1 << 20),
        other => panic!("{other:?}"),
    }
    let _: String = queue.get().unwrap();
    queue.put(&item).unwrap();
}

/// Issue 8.4: a parent puts ten items on a queue, starts a consumer holding
/// it and returns at once; the consumer opens the queue only after its
/// parent has ended, and still gets all ten. Five runs: it used to be racy.
#[test]
fn a_queue_outlives_the_parent_that_hands_it_on() {
    for _ in 0..5 {
        let out = run(&[s(&guest("ipc-orphan-queue"))]);
        out.assert_status(0);
        check(&out.report(), &[("consumed", "10"), ("sum", "45"), ("parent", "returns")]);
    }
}

/// Items a consumer took ahead of its gets (the native backend leases an
/// unbounded queue's next items with a get's answer) are never lost nor
/// delivered twice: a consumer that ends after `n` gets leaves the rest in
/// order; a live consumer busy elsewhere gives them up to a getter that
/// waits; a terminated one leaves every item it did not get.
#[test]
fn items_a_consumer_did_not_get_stay_in_the_queue_in_order() {
    let host = host();
    let program = host.load(guest("data-path")).unwrap();
    let item = |i: u64| i.to_le_bytes().to_vec();
    let fill = |queue: &host::sync::Queue, items: std::ops::Range<u64>| {
        items.for_each(|i| queue.put(&item(i)).unwrap());
    };
    let drain = |queue: &host::sync::Queue| {
        std::iter::from_fn(|| queue.get_timeout::<Vec<u8>>(false, None).ok()).collect::<Vec<_>>()
    };
    // The relay has put its first item (so it was answered, and any lease
    // came with the answer) and taken its second (then it blocks in its
    // put to `full`, which holds one).
    let until_two_taken = |queue: &host::sync::Queue, full: &host::sync::Queue| {
        while full.qsize().unwrap() < 1 || queue.qsize().unwrap() > 98 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    };
    let (input, output) = (host::sync::Queue::new(&host, 0).unwrap(), host::sync::Queue::new(&host, 0).unwrap());

    // Ends after 10 gets: the other 90 wait in the queue, in order.
    fill(&input, 0..100);
    let relay = program.command().entry("relay").input(&(&input, &output, 10u64)).spawn().unwrap();
    assert!(join(&relay).success());
    assert_eq!(input.qsize().unwrap(), 90);
    assert_eq!(drain(&output), (0..10).map(item).collect::<Vec<_>>());
    assert_eq!(drain(&input), (10..100).map(item).collect::<Vec<_>>());

    // Busy in a put to a full queue after two gets: a getter that waits
    // gets the rest, in order; then terminated.
    let full = host::sync::Queue::new(&host, 1).unwrap();
    fill(&input, 0..100);
    let relay = program.command().entry("relay").input(&(&input, &full, 100u64)).spawn().unwrap();
    until_two_taken(&input, &full);
    let got: Vec<Vec<u8>> = (2..100).map(|_| input.get().unwrap()).collect();
    assert_eq!(got, (2..100).map(item).collect::<Vec<_>>());
    relay.terminate().unwrap();
    assert_eq!(join(&relay).code(), -15);
    assert_eq!(drain(&full), vec![item(0)]);

    // Terminated while busy: every item it did not get stays, in order.
    fill(&input, 0..100);
    let relay = program.command().entry("relay").input(&(&input, &full, 100u64)).spawn().unwrap();
    until_two_taken(&input, &full);
    relay.terminate().unwrap();
    assert_eq!(join(&relay).code(), -15);
    assert_eq!(drain(&full), vec![item(0)]);
    assert_eq!(drain(&input), (2..100).map(item).collect::<Vec<_>>());
}

/// A consumer killed mid-stream (`SIGKILL` on the native backend, where it
/// counts the leased items it takes in memory its root reads) loses nothing
/// it did not get and gets nothing twice: what it relayed is a prefix of
/// the items, and what is left in the queue is the rest, in order, but for
/// the one item it may have got and not yet relayed as it was killed. On
/// an unbounded queue (leased ahead) and a bounded one.
#[test]
fn a_consumer_killed_mid_stream_loses_nothing_it_did_not_get() {
    let host = host();
    let program = host.load(guest("data-path")).unwrap();
    let item = |i: u64| i.to_le_bytes().to_vec();
    let count = 2000u64;
    for maxsize in [0, count as u32] {
        let input = host::sync::Queue::new(&host, maxsize).unwrap();
        // Bounded: each relayed item is answered before the next get.
        let output = host::sync::Queue::new(&host, count as u32).unwrap();
        (0..count).for_each(|i| input.put(&item(i)).unwrap());
        // One more than there are: a relay as fast as the test still waits
        // for its kill.
        let relay = program.command().entry("relay").input(&(&input, &output, count + 1)).spawn().unwrap();
        while output.qsize().unwrap() < count / 4 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        relay.kill().unwrap();
        assert_eq!(join(&relay).code(), -9);
        let drain = |queue: &host::sync::Queue| {
            std::iter::from_fn(|| queue.get_timeout::<Vec<u8>>(false, None).ok()).collect::<Vec<_>>()
        };
        let relayed = drain(&output);
        let left = drain(&input);
        let k = relayed.len() as u64;
        assert_eq!(relayed, (0..k).map(item).collect::<Vec<_>>(), "maxsize {maxsize}");
        let first_left = count - left.len() as u64;
        assert!(first_left == k || first_left == k + 1, "maxsize {maxsize}: relayed {k}, left from {first_left}");
        assert_eq!(left, (first_left..count).map(item).collect::<Vec<_>>(), "maxsize {maxsize}");
    }
}
