//! Hostile test program: tries the network. Connects to 127.0.0.1:argv[1],
//! binds a listener on 127.0.0.1:0 and looks up `localhost`, printing
//! `connect: ok|ERROR`, `bind: ok|ERROR` and `lookup: ok|ERROR`.
use std::net::{TcpListener, TcpStream, ToSocketAddrs};

fn show<T, E: std::fmt::Display>(result: Result<T, E>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    }
}

fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "80".to_string());
    println!("connect: {}", show(TcpStream::connect(format!("127.0.0.1:{port}"))));
    println!("bind: {}", show(TcpListener::bind("127.0.0.1:0")));
    println!("lookup: {}", show("localhost:80".to_socket_addrs()));
}
