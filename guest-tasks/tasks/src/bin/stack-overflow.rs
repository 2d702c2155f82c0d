//! Test program: unbounded recursion, until the stack overflows (a trap).
use std::hint::black_box;

#[inline(never)]
#[allow(unconditional_recursion)] // on purpose: this program overflows its stack
fn recurse(n: u64) -> u64 {
    // A frame the optimizer can neither drop nor turn into a loop.
    let frame = black_box([n; 32]);
    recurse(black_box(n + 1)).wrapping_add(frame[black_box(n as usize) % 32])
}

fn main() {
    println!("recursing");
    println!("{}", recurse(0));
}
