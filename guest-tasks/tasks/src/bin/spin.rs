//! Test program: prints `spinning`, then busy-loops forever without a single
//! call out of the instance (only epoch interruption or fuel can stop it).
use std::hint::black_box;

fn main() {
    println!("spinning");
    let mut x: u64 = 0;
    loop {
        x = black_box(x.wrapping_add(1));
    }
}
