//! Test program: copies stdin to stdout until end-of-file, as `cat` does,
//! then reports the byte count on stderr (`copied N bytes`).
use std::io::{Read, Write};

fn main() {
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    let mut buffer = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        match input.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                out.write_all(&buffer[..n]).unwrap();
                total += n as u64;
            }
            Err(e) => panic!("cannot read stdin: {e}"),
        }
    }
    out.flush().unwrap();
    eprintln!("copied {total} bytes");
}
