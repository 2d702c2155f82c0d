//! The W8 benchmark's processes: `produce` puts `n` small messages on a
//! queue, `consume` takes `n` and prints how many it got.
use mp::Queue;

fn produce((q, n): (Queue<u64>, u64)) {
    for i in 0..n {
        q.put(&i).expect("put");
    }
}

fn consume((q, n): (Queue<u64>, u64)) {
    let mut got = 0u64;
    for _ in 0..n {
        q.get().expect("get");
        got += 1;
    }
    println!("consumed: {got}");
}

mp::entries!(produce, consume);

fn main() {
    let q: Queue<u64> = Queue::new();
    let n = 1_000;
    let p = mp::Process::with_handles(mp::target!(produce), (&q, n));
    let c = mp::Process::with_handles(mp::target!(consume), (&q, n));
    p.start().expect("start");
    c.start().expect("start");
    p.join().expect("join");
    c.join().expect("join");
}
