//! Issue 8.4: nothing is lost when a parent ends first. The parent puts ten
//! numbers on a queue, starts a consumer holding it and returns at once,
//! without joining. The consumer opens the queue only after a pause (so
//! that its parent has surely ended by then; before the fix the queue was
//! freed with the parent) and reports how many items it got and their sum:
//! `consumed: 10`, `sum: 45`.
use mp::{Process, Queue, target};
use std::time::Duration;

const ITEMS: u64 = 10;

/// Takes the queue as raw JSON (its token), to open it late.
fn consumer(raw: serde_json::Value) {
    std::thread::sleep(Duration::from_millis(300));
    let q: Queue<u64> = match serde_json::from_value(raw) {
        Ok(q) => q,
        Err(error) => {
            println!("open: {error}");
            mp::exit(3);
        }
    };
    let (mut count, mut sum) = (0, 0);
    while count < ITEMS {
        match q.get_timeout(Duration::from_secs(60)) {
            Ok(item) => {
                count += 1;
                sum += item;
            }
            Err(error) => {
                println!("get: {error}");
                break;
            }
        }
    }
    println!("consumed: {count}");
    println!("sum: {sum}");
    mp::exit(if count == ITEMS { 0 } else { 4 });
}

mp::entries!(consumer);

fn main() {
    let q: Queue<u64> = Queue::new();
    for i in 0..ITEMS {
        q.put(&i).expect("put");
    }
    let p = Process::with_handles(target!(consumer), &q);
    p.start().expect("start");
    println!("parent: returns");
}
