//! Seed: processes share no memory. The child changes its own copy of the
//! global `A` (257 -> 200) and appends to its own copy of `LIST`; the
//! parent's copies are unchanged after the child ends.
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{LazyLock, Mutex};

use mp::{Process, target};

static A: AtomicI32 = AtomicI32::new(257);
static LIST: LazyLock<Mutex<Vec<String>>> = LazyLock::new(|| Mutex::new(vec!["lili".to_string()]));

fn task() {
    A.store(200, Ordering::SeqCst);
    println!("child a={}", A.load(Ordering::SeqCst));
    let mut list = LIST.lock().unwrap();
    list.push("duijie".to_string());
    println!("child list={:?}", *list);
}

mp::entries!(task);

fn main() {
    let p = Process::new(target!(task), ());
    p.start().expect("start");
    p.join().expect("join");
    println!("parent a={}", A.load(Ordering::SeqCst));
    println!("parent list={:?}", *LIST.lock().unwrap());
}
