//! Issue 8.3, as a hostile guest: what a process parks in the host's shared
//! objects is bounded. One scenario per first argument, each printing
//! `key: value` lines for the tests:
//! - `flood N`: puts N items of 1 MiB on a queue nobody reads, until a put
//!   fails; then takes one item and puts again (the budget comes back);
//! - `pipe-flood SIZE EXPECTED`: a child sends SIZE-byte messages to a
//!   reader that never reads, counting them in a `Value`; the parent waits
//!   until EXPECTED went through (a full window), then a while more, and
//!   reports the count (the sender is blocked), terminates the sender and
//!   drains what was in flight;
//! - `objects N`: creates and drops N locks (freed objects give their room
//!   back), then creates locks and keeps them until the host refuses one
//!   (the process fails, naming the limit);
//! - `every-kind`: keeps locks until the host refuses one, then asks for
//!   one more object of every kind through the WIT's `create` functions
//!   (`KIND: ` each refusal, which the guest takes), frees one and creates
//!   again;
//! - `dicts`: creates manager dicts and keeps them until the host refuses
//!   one, which `Manager::dict` returns as an error (the process goes on);
//! - `per-process SIZE`: a child puts SIZE-byte items until its budget is
//!   spent and ends; the parent, on the same queue, may still put (each
//!   process has its own budget) and gets every item the child parked.
use mp::{Connection, Lock, Pipe, Process, Queue, SyncError, Value, target};
use std::time::Duration;

fn report(key: &str, value: impl std::fmt::Display) {
    println!("{key}: {value}");
}

/// A string whose JSON form is exactly `size` bytes.
fn item(size: usize) -> String {
    "x".repeat(size.saturating_sub(2))
}

/// Puts until a put fails; how many went in, and the error.
fn fill(q: &Queue<String>, size: usize, most: usize) -> (usize, Option<SyncError>) {
    let item = item(size);
    for n in 0..most {
        if let Err(error) = q.put(&item) {
            return (n, Some(error));
        }
    }
    (most, None)
}

fn flood(n: usize) {
    let q: Queue<String> = Queue::new();
    let (put, error) = fill(&q, 1 << 20, n);
    report("put", put);
    match error {
        Some(error) => {
            report("error", &error);
            report("quota", matches!(error, SyncError::Quota { .. }));
        }
        None => report("error", "none"),
    }
    report("queued", q.qsize().map_or(0, |n| n));
    report("get after the flood", q.get_nowait().map(|s| s.len()).is_ok());
    report("put after a get", q.put(&item(1 << 20)).is_ok());
}

fn writer((w, sent, size): (Connection, Value<i64>, usize)) {
    let message = vec![7u8; size];
    loop {
        w.send_bytes(&message).expect("send");
        sent.set(sent.get().expect("get") + 1).expect("set");
    }
}

fn pipe_flood(size: usize, expected: i64) {
    let (r, w) = Pipe(false);
    let sent = Value::new(0i64);
    let p = Process::with_handles(target!(writer), (&w, &sent, size));
    p.start().expect("start");
    drop(w);
    while sent.get().expect("get") < expected {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Had the sender not been held back, it would be far beyond by now.
    std::thread::sleep(Duration::from_millis(300));
    report("sent before the terminate", sent.get().expect("get"));
    p.terminate().expect("terminate");
    p.join().expect("join");
    report("writer exitcode", format!("{:?}", p.exitcode()));
    let mut received = 0;
    loop {
        match r.recv_bytes() {
            Ok(message) if message.len() == size => received += 1,
            Ok(other) => panic!("a message of {} bytes", other.len()),
            Err(SyncError::Eof) => break,
            Err(error) => panic!("recv: {error}"),
        }
    }
    report("received", received);
}

fn objects(n: usize) {
    for _ in 0..n {
        drop(Lock::new());
    }
    report("created and dropped", n);
    let mut kept = Vec::new();
    loop {
        // The host refuses the one past the limit: the process fails here.
        kept.push(Lock::new());
        if kept.len() % 1024 == 0 {
            report("kept", kept.len());
        }
    }
}

fn every_kind() {
    use mp::bindings::mp::host::sync as wit;
    let mut kept = Vec::new();
    while let Ok(lock) = wit::Lock::create(false) {
        kept.push(lock);
    }
    report("locks kept", kept.len());
    let refusals = [
        ("queue", wit::Queue::create(0, false).err()),
        ("lock", wit::Lock::create(true).err()),
        ("semaphore", wit::Semaphore::create(1, false).err()),
        ("event", wit::Event::create().err()),
        ("condition", wit::Condition::create(None).err()),
        ("barrier", wit::Barrier::create(2).err()),
        ("array", wit::SharedArray::create(&wit::Numbers::Ints(vec![1])).err()),
        ("pipe", wit::create_pipe(false).err()),
    ];
    for (kind, refused) in refusals {
        report(kind, refused.map_or("created".to_string(), |error| SyncError::from(error).to_string()));
    }
    kept.pop();
    report("after one is freed", if wit::Event::create().is_ok() { "created" } else { "refused" });
}

fn dicts() {
    let manager = mp::Manager::new().expect("a manager");
    let mut kept = Vec::new();
    loop {
        match manager.dict::<String, u64>() {
            Ok(dict) => kept.push(dict),
            Err(error) => {
                report("dicts kept", kept.len());
                report("refused", error);
                break;
            }
        }
    }
    // What it holds still works.
    kept[0].set("k".into(), &7).expect("a set");
    report("first dict", kept[0].get(&"k".into()).expect("a get").unwrap_or_default());
}

fn child_fill((q, size): (Queue<String>, usize)) {
    let (put, error) = fill(&q, size, usize::MAX);
    report("child put", put);
    report("child error", error.map_or("none".to_string(), |e| e.to_string()));
}

fn per_process(size: usize) {
    let q: Queue<String> = Queue::new();
    let p = Process::with_handles(target!(child_fill), (&q, size));
    p.start().expect("start");
    p.join().expect("join");
    report("child exitcode", format!("{:?}", p.exitcode()));
    report("parent put after the child's end", q.put(&item(size)).is_ok());
    let mut got = 0;
    while q.get_nowait().is_ok() {
        got += 1;
    }
    report("parent got", got);
}

mp::entries!(writer, child_fill);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize| -> usize { args.get(i).and_then(|a| a.parse().ok()).expect("a number argument") };
    match args.first().map(String::as_str) {
        Some("flood") => flood(number(1)),
        Some("pipe-flood") => pipe_flood(number(1), number(2) as i64),
        Some("objects") => objects(number(1)),
        Some("per-process") => per_process(number(1)),
        Some("dicts") => dicts(),
        Some("every-kind") => every_kind(),
        other => {
            eprintln!(
                "unknown scenario {other:?}: flood N | pipe-flood SIZE EXPECTED | objects N | every-kind | dicts | per-process SIZE"
            );
            mp::exit(2);
        }
    }
}
