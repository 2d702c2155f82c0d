//! Entries for the pool tests, and (as `main`) the guest side of a pool.
//!
//! - `square(x)`: x*x; `whoami()`: the worker's pid; `count()`: how many
//!   times this worker has run it (state that persists between tasks, set
//!   by the initializer `init(start)`); `fail(msg)`: panics; `grow(mib)`:
//!   allocates that many MiB; `sleep_secs(s)`: sleeps, returns the pid;
//!   `text(mib)`: a string of that many MiB.
//! - `main` exercises `mp::Pool` and prints one `key: value` line per check.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static COUNT: AtomicU32 = AtomicU32::new(0);

fn square(x: i64) -> i64 {
    x * x
}

fn whoami() -> u32 {
    mp::getpid()
}

fn init(start: u32) {
    COUNT.store(start, Ordering::SeqCst);
}

fn count() -> u32 {
    COUNT.fetch_add(1, Ordering::SeqCst) + 1
}

fn fail(message: String) {
    panic!("{message}");
}

fn grow(mib: u32) -> usize {
    let block = vec![1u8; (mib as usize) << 20];
    block.iter().map(|&b| b as usize).sum()
}

fn sleep_secs(secs: f64) -> u32 {
    std::thread::sleep(Duration::from_secs_f64(secs));
    mp::getpid()
}

fn text(mib: u32) -> String {
    "x".repeat((mib as usize) << 20)
}

mp::entries!(square, whoami, init, count, fail, grow, sleep_secs, text);

fn main() {
    let pool = mp::Pool::builder().processes(2).build().unwrap();
    let squares: Vec<i64> = pool.map(mp::target!(square), 1..=10).unwrap();
    println!("map: {squares:?}");
    let pairs: Vec<i64> = pool.map_chunked(mp::target!(square), [3, 4], 1).unwrap();
    println!("map_chunked: {pairs:?}");
    println!("apply: {}", pool.apply(mp::target!(square), 7).unwrap());
    let pending = pool.apply_async(mp::target!(square), 12);
    pending.wait();
    println!("apply_async: {} ready={} successful={:?}", pending.get().unwrap(), pending.ready(), pending.successful());
    let failed = pool.apply_async(mp::target!(fail), "boom".to_string());
    match failed.get() {
        Err(mp::TaskError::Failed(_)) => {
            println!("failed: Failed successful={:?}", failed.successful())
        }
        other => println!("failed: unexpected {other:?}"),
    }
    println!("after failure: {}", pool.apply(mp::target!(square), 5).unwrap());
    println!("join before close: {:?}", pool.join());
    pool.close();
    println!("apply after close: {:?}", pool.apply(mp::target!(square), 1));
    println!("join: {:?}", pool.join());
    let recycled = mp::Pool::builder().processes(1).maxtasksperchild(1).build().unwrap();
    let a = recycled.apply(mp::target!(whoami), ()).unwrap();
    let b = recycled.apply(mp::target!(whoami), ()).unwrap();
    println!("recycled: {}", a != b);
    recycled.terminate();
    println!("done");
}
