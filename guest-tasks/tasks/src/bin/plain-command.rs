//! Test program: a plain WASI preview 2 command that does not use the SDK
//! (not the `program` world).
fn main() {
    println!("plain command ok");
}
