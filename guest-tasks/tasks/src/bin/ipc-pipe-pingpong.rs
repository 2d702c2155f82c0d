//! Seed 004 (Pipe): 10,000 round trips between a parent and a child over a
//! duplex pipe; the child answers each number with the number plus one, and
//! ends when the parent closes its end (the child reads end-of-file).
use mp::{Connection, Pipe, Process, SyncError, target};

const ROUNDS: u64 = 10_000;

fn ponger(conn: Connection) {
    loop {
        match conn.recv::<u64>() {
            Ok(n) => conn.send(&(n + 1)).expect("send"),
            Err(SyncError::Eof) => break,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

mp::entries!(ponger);

fn main() {
    let (here, there) = Pipe(true);
    let p = Process::with_handles(target!(ponger), &there);
    p.start().expect("start");
    // The child holds its end now: close ours, as Python's idiom does.
    drop(there);
    let mut count = 0u64;
    for i in 0..ROUNDS {
        here.send(&i).expect("send");
        let answer: u64 = here.recv().expect("recv");
        assert_eq!(answer, i + 1);
        count += 1;
    }
    here.close();
    p.join().expect("join");
    println!("round trips: {count}");
    println!("child exitcode: {:?}", p.exitcode());
}
