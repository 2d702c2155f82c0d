//! Test program: writes `ARG` MiB (default 256) of `x` to stdout without a
//! single newline, 64 KiB per write: a hostile guest for the host's output
//! bounds.
use std::io::Write;

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let chunk = vec![b'x'; 64 << 10];
    let mut out = std::io::stdout().lock();
    for _ in 0..mib * 16 {
        out.write_all(&chunk).unwrap();
    }
    out.flush().unwrap();
}
