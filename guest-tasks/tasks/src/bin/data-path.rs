//! Test program for the binary data path: byte items pass through a pool,
//! a queue and a pipe and must come back byte for byte.
//!
//! - `echo_bytes(item)`: a pool task that returns its byte item as it is;
//! - `square(x)`: a pool task, for the order of results under automatic
//!   chunking;
//! - `relay((input, output, n))`: takes `n` byte items from one queue and
//!   puts each on the other;
//! - `pipe_echo((end, n))`: receives `n` byte messages on a pipe's end and
//!   sends each back;
//! - `pool_bytes(items)`: maps `echo_bytes` over the items on a pool of its
//!   own (the guest's pool interface) and exits 0 if every item came back,
//!   in order, else 1.
//!
//! Run as a program, `main` does all of it within one process tree and
//! prints `data-path: ok`.
use mp::{Connection, Pool, Process, Queue, target};

fn echo_bytes(item: Vec<u8>) -> Vec<u8> {
    item
}

fn square(x: i64) -> i64 {
    x * x
}

fn relay((input, output, n): (Queue<Vec<u8>>, Queue<Vec<u8>>, u64)) {
    for _ in 0..n {
        let item = input.get().expect("get");
        output.put(&item).expect("put");
    }
}

fn pipe_echo((end, n): (Connection, u64)) {
    for _ in 0..n {
        let message: Vec<u8> = end.recv().expect("recv");
        end.send(&message).expect("send");
    }
}

fn pool_bytes(items: Vec<Vec<u8>>) {
    let pool = Pool::new(2);
    let back: Vec<Vec<u8>> = pool.map(target!(echo_bytes), items.iter().cloned()).expect("map");
    let auto: Vec<i64> = pool.map(target!(square), 0..1001).expect("map");
    let in_order = auto.iter().enumerate().all(|(i, &sq)| sq == (i * i) as i64);
    mp::exit(if back == items && in_order { 0 } else { 1 });
}

mp::entries!(echo_bytes, square, relay, pipe_echo, pool_bytes);

/// Items of every byte value, empty, and large.
fn items() -> Vec<Vec<u8>> {
    vec![
        vec![],
        vec![0],
        vec![255, 0, 128],
        (0..=255).collect(),
        (0..(1usize << 20) + 3).map(|i| (i * 31 % 251) as u8).collect(),
    ]
}

fn main() {
    let items = items();
    let (input, output) = (Queue::new(), Queue::new());
    let n = items.len() as u64;
    let p = Process::with_handles(target!(relay), (&input, &output, n));
    p.start().expect("start");
    for item in &items {
        input.put(item).expect("put");
    }
    let relayed: Vec<Vec<u8>> = items.iter().map(|_| output.get().expect("get")).collect();
    p.join().expect("join");
    assert_eq!(relayed, items, "the queue changed the items");
    let p = Process::new(target!(pool_bytes), items.clone());
    p.start().expect("start");
    p.join().expect("join");
    assert_eq!(p.exitcode(), Some(0), "the pool changed the items");
    println!("data-path: ok");
}
