//! Seed 003, the pool: `Pool(3)`, ten `apply_async` tasks that each print
//! their pid and number and sleep one second, then `close` and `join`.
//! Three workers share the ten tasks: three distinct pids, about 4 s.

use std::time::Duration;

fn worker(num: u32) {
    println!("----pid={} num={num}---", mp::getpid());
    std::thread::sleep(Duration::from_secs(1));
}

mp::entries!(worker);

fn main() {
    // A pool of at most three processes.
    let pool = mp::Pool::new(3);
    for i in 0..10 {
        println!("---{i}--");
        // Non-blocking: the task runs in a worker while we go on.
        pool.apply_async(mp::target!(worker), i);
    }
    // No more tasks; wait until every worker has finished.
    pool.close();
    pool.join().unwrap();
}
