//! Hostile test program: what a guest may ask of the host and must get a
//! clear answer to, never a host crash or unbounded host growth. One
//! scenario per first argument, each printing `key: value` lines:
//! - `pool-huge N`: asks for a pool of N workers (far past the cap);
//! - `unstarted N SIZE drop|keep`: creates N processes, never started, each
//!   with SIZE bytes of arguments, and drops or keeps each;
//! - `queued N SIZE wait|drop|map`: queues N tasks on a pool of one
//!   worker, each with SIZE bytes of arguments, and waits for each (`wait`),
//!   or, the worker kept busy, drops each handle (`drop`) or then maps ten
//!   more items of SIZE (`map`);
//! - `results N SIZE`: maps an entry returning SIZE bytes over N items and
//!   takes none until the pool has ended (every result came), then counts
//!   the results taken (`taken`) and failed (`failed`, the first `error`);
//!   then maps ten more, taking each as it comes (`then taken`);
//! - `handles N`: keeps N handles of itself (each an entry of its
//!   resource table in the host), reporting every 100,000 (`kept`);
//! - `forge HANDLE`: uses a queue handle it was never given, numbered
//!   HANDLE, or (0) its own lock's as a queue's, after printing `forging`;
//! - `deep N`: the entry `deep` returns a value nested N levels (for
//!   `host map --entry deep`);
//! - `rename NAME`: renames itself, then prints a line;
//! - `long-entry N`: creates a child whose entry's name is N bytes long;
//! - `wreck DIR`: removes everything it can under DIR (printing `removed
//!   PATH`), then hands a queue to a child and gets what the child put;
//! - `forever WHAT`: blocks in WHAT (`join`, `get`, `acquire`, `wait`,
//!   `recv`, `barrier`, `pool-get`, `stdin`) with the longest timeout a
//!   guest can give, for `--timeout` to end.
use mp::bindings::mp::host::{pool as wit_pool, process as wit_process, sync as wit_sync};
use mp::{Process, target};
use serde_json::Value;

fn report(key: &str, value: impl std::fmt::Display) {
    println!("{key}: {value}");
}

fn noop(_: serde_bytes::ByteBuf) {}

fn put_one(q: mp::Queue<String>) {
    q.put(&"from the child".to_string()).expect("a put");
}

fn deep(n: u32) -> Value {
    (0..n).fold(Value::Null, |inner, _| Value::Array(vec![inner]))
}

fn big(size: usize) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(vec![7u8; size])
}

fn sleeper(seconds: u64) {
    std::thread::sleep(std::time::Duration::from_secs(seconds));
}

mp::entries!(noop, deep, big, sleeper, put_one);

fn remove_all(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            remove_all(&path);
            let _ = std::fs::remove_dir(&path);
        } else if std::fs::remove_file(&path).is_ok() {
            report("removed", path.display());
        }
    }
}

fn wreck(dir: &str) {
    remove_all(std::path::Path::new(dir));
    let q: mp::Queue<String> = mp::Queue::new();
    let p = Process::with_handles(target!(put_one), &q);
    p.start().expect("start");
    report("got", q.get().expect("a get"));
    p.join().expect("join");
}

/// An hour in seconds, MessagePack-encoded (a `u16`): `sleeper`'s argument.
fn an_hour() -> Vec<u8> {
    let [high, low] = 3600u16.to_be_bytes();
    vec![0xcd, high, low]
}

fn pool_huge(n: u32) {
    match mp::Pool::builder().processes(n).build() {
        Ok(_) => report("pool", "created"),
        Err(error) => report("pool refused", error),
    }
}

fn unstarted(n: usize, size: usize, keep: bool) {
    let args = serde_bytes::ByteBuf::from(vec![7u8; size]);
    let mut kept = Vec::new();
    for i in 1..=n {
        let p = Process::new(target!(noop), args.clone());
        if keep {
            kept.push(p);
        }
        if i % 1000 == 0 {
            report("created", i);
        }
    }
    report("created", n);
}

fn queued(n: usize, size: usize, mode: &str) {
    let pool = mp::Pool::new(1);
    let args = serde_bytes::ByteBuf::from(vec![7u8; size]);
    let _busy = (mode != "wait").then(|| pool.apply_async(target!(sleeper), 3600));
    for i in 1..=n {
        let result = pool.apply_async(target!(noop), args.clone());
        if mode == "wait" {
            result.get().expect("a task");
        }
        if i % 10 == 0 {
            report("queued", i);
        }
    }
    report("queued", n);
    if mode == "map" {
        match pool.map(target!(noop), vec![args; 10]) {
            Ok(_) => report("map", "done"),
            Err(error) => report("map refused", error),
        }
    }
    pool.terminate();
}

fn results(n: usize, size: usize) {
    let pool = mp::Pool::new(2);
    let untaken = pool.imap_unordered(target!(big), vec![size; n]);
    pool.close();
    pool.join().expect("a join");
    let (mut taken, mut failed) = (0, 0);
    for result in untaken {
        match result {
            Ok(bytes) if bytes.len() == size => taken += 1,
            Ok(bytes) => panic!("a result of {} bytes, not {size}", bytes.len()),
            Err(error) => {
                if failed == 0 {
                    report("error", error);
                }
                failed += 1;
            }
        }
    }
    report("taken", taken);
    report("failed", failed);
    let pool = mp::Pool::new(2);
    let taken = pool.imap(target!(big), vec![size; 10]).filter(|r| r.as_ref().is_ok_and(|b| b.len() == size)).count();
    report("then taken", taken);
    pool.terminate();
}

fn handles(n: usize) {
    let mut kept = Vec::new();
    for i in 1..=n {
        kept.push(mp::current_process());
        if i % 100_000 == 0 {
            report("kept", i);
        }
    }
    report("kept", n);
}

fn forge(handle: u32) {
    report("forging", handle);
    let lock = wit_sync::Lock::create(false).expect("a lock");
    let handle = if handle == 0 { lock.take_handle() } else { handle };
    // SAFETY: none: the number names no queue of this process (a handle it
    // was never given, or its lock's), which the host must refuse.
    let forged = unsafe { wit_sync::Queue::from_handle(handle) };
    report("forged qsize", format!("{:?}", forged.qsize()));
}

fn forever(what: &str) {
    let most = Some(u64::MAX);
    report("blocking in", what);
    match what {
        "join" => {
            let child = wit_process::Process::new("sleeper", &an_hour());
            child.start().expect("start");
            let _ = child.join(most);
        }
        "get" => {
            let _ = wit_sync::Queue::new(0, false).get(most);
        }
        "acquire" => {
            let lock = wit_sync::Lock::new(false);
            let _ = lock.acquire(most);
            let _ = lock.acquire(most);
        }
        "wait" => {
            let _ = wit_sync::Event::new().wait(most);
        }
        "recv" => {
            let (r, _w) = wit_sync::pipe(false);
            let _ = r.poll(most);
            let _ = r.recv();
        }
        "barrier" => {
            let _ = wit_sync::Barrier::new(2).wait(most);
        }
        "pool-get" => {
            let pool = wit_pool::Pool::create(Some(1), None, None).expect("a pool");
            let result = pool.apply_async("sleeper", &an_hour());
            let _ = result.get(most);
        }
        "stdin" => {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
        other => panic!("no such call: {other}"),
    }
    report("returned from", what);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let number = |i: usize| -> usize { arg(i).parse().expect("a number argument") };
    match arg(0) {
        "pool-huge" => pool_huge(number(1) as u32),
        "unstarted" => unstarted(number(1), number(2), arg(3) == "keep"),
        "queued" => queued(number(1), number(2), arg(3)),
        "results" => results(number(1), number(2)),
        "handles" => handles(number(1)),
        "forge" => forge(number(1) as u32),
        "long-entry" => {
            let p = wit_process::Process::new(&"e".repeat(number(1)), &[]);
            report("created", p.name());
        }
        "rename" => {
            mp::current_process().set_name(arg(1)).expect("a rename");
            report("renamed", "yes");
        }
        "forever" => forever(arg(1)),
        "wreck" => wreck(arg(1)),
        other => panic!("unknown scenario {other:?}"),
    }
}
