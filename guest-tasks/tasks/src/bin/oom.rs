//! Test program: allocates 1 MiB blocks (each touched, all kept) forever,
//! printing `allocated N MiB` every 16 MiB, until the memory limit stops it.
use std::hint::black_box;

fn main() {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let block = vec![1u8; 1 << 20];
        blocks.push(black_box(block));
        if blocks.len().is_multiple_of(16) {
            println!("allocated {} MiB", blocks.len());
        }
    }
}
