//! A pool's smallest task: `square` takes a number and returns its square.
//!
//! `seq 1 100000 | host map target/guests/pool-square.wasm --entry square --workers 2`
//! prints the squares in order. Run as a program, `main` squares 1..=10 on
//! a pool of two workers.

fn square(x: i64) -> i64 {
    x * x
}

mp::entries!(square);

fn main() {
    let pool = mp::Pool::new(2);
    let squares: Vec<i64> = pool.map(mp::target!(square), 1..=10).unwrap();
    println!("{squares:?}");
    pool.close();
    pool.join().unwrap();
}
