//! Seed 004 (Queue): one producer, three consumers. The producer puts the
//! numbers 1..=300 and then one sentinel (`None`) per consumer; each
//! consumer adds up what it gets until its sentinel and reports its count
//! and sum on a result queue. Every item is consumed exactly once: the
//! counts add up to 300 and the sums to 45150.
use mp::{Process, Queue, target};

const ITEMS: u64 = 300;
const CONSUMERS: usize = 3;

fn producer(q: Queue<Option<u64>>) {
    for i in 1..=ITEMS {
        q.put(&Some(i)).expect("put");
    }
    for _ in 0..CONSUMERS {
        q.put(&None).expect("put a sentinel");
    }
}

fn consumer((q, results): (Queue<Option<u64>>, Queue<(u64, u64)>)) {
    let (mut count, mut sum) = (0, 0);
    while let Some(item) = q.get().expect("get") {
        count += 1;
        sum += item;
    }
    results.put(&(count, sum)).expect("report");
}

mp::entries!(producer, consumer);

fn main() {
    let q: Queue<Option<u64>> = Queue::new();
    let results: Queue<(u64, u64)> = Queue::new();
    let consumers: Vec<Process> =
        (0..CONSUMERS).map(|_| Process::with_handles(target!(consumer), (&q, &results))).collect();
    let producer = Process::with_handles(target!(producer), &q);
    for p in consumers.iter().chain([&producer]) {
        p.start().expect("start");
    }
    let (mut count, mut sum) = (0, 0);
    for _ in 0..CONSUMERS {
        let (c, s) = results.get().expect("a consumer's report");
        count += c;
        sum += s;
    }
    for p in consumers.iter().chain([&producer]) {
        p.join().expect("join");
    }
    println!("consumed: {count}");
    println!("total: {sum}");
    println!("left in queue: {}", q.qsize().expect("qsize"));
}
