//! The W8 benchmark's processes: `produce` puts `n` small messages on a
//! queue, `consume` takes `n` and prints how many it got; `produce_bytes`
//! and `consume_bytes` do the same with byte items of `size` bytes (the
//! consumer checks each one's length and first and last byte).
use mp::Queue;
use serde_bytes::ByteBuf;

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

fn produce_bytes((q, n, size): (Queue<ByteBuf>, u64, u64)) {
    let mut item = vec![0u8; size as usize];
    for i in 0..n {
        let mark = (i % 251) as u8;
        if let Some(first) = item.first_mut() {
            *first = mark;
        }
        if let Some(last) = item.last_mut() {
            *last = mark;
        }
        // Moved in and out of a ByteBuf: no copy.
        let buf = ByteBuf::from(item);
        q.put(&buf).expect("put");
        item = buf.into_vec();
    }
}

fn consume_bytes((q, n, size): (Queue<ByteBuf>, u64, u64)) {
    let mut got = 0u64;
    for i in 0..n {
        let item = q.get().expect("get");
        let mark = (i % 251) as u8;
        assert_eq!(item.len() as u64, size, "item {i} has the wrong size");
        assert!(item.first().is_none_or(|&b| b == mark) && item.last().is_none_or(|&b| b == mark));
        got += 1;
    }
    println!("consumed: {got}");
}

mp::entries!(produce, consume, produce_bytes, consume_bytes);

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
