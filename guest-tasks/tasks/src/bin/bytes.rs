//! Test program: writes the 256 byte values 0..=255 to stdout, in order, with
//! no newline at the end: binary output that must arrive byte for byte.
use std::io::Write;

fn main() {
    let all: Vec<u8> = (0..=255u8).collect();
    let mut out = std::io::stdout().lock();
    out.write_all(&all).unwrap();
    out.flush().unwrap();
}
