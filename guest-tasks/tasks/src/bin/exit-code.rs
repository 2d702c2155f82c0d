//! Test program: exits with the code given as argv[1] (default 0), through
//! `mp::exit` so that the code reaches the host (on `wasm32-wasip2`,
//! `std::process::exit` only tells success from failure). A plain WASI
//! command: it imports nothing of `mp:host`.
fn main() {
    let code: i32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    println!("exiting with {code}");
    mp::exit(code);
}
