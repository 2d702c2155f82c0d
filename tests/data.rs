//! The binary data path (MessagePack between host and guests), on the
//! backend this build selects: byte items of every value, empty and large,
//! come back exactly through a pool (the embedding API's and a guest's
//! own), a queue and a pipe, as entry arguments and as JSON on `host map`;
//! `map` without a chunk size (chunked as Python does) keeps the order.

mod common;

use common::*;

/// Items of every byte value, empty, and large (several MiB in all).
fn items() -> Vec<Vec<u8>> {
    vec![
        vec![],
        vec![0],
        vec![255, 0, 128],
        (0..=255).collect(),
        (0..(3usize << 20) + 5).map(|i| (i * 31 % 251) as u8).collect(),
        (0..(1usize << 20)).map(|i| (i % 7) as u8).collect(),
    ]
}

#[test]
fn bytes_round_trip_exactly_through_a_pool() {
    let host = host();
    let program = host.load(guest("data-path")).unwrap();
    let pool = host::Pool::new(&program, 2).unwrap();
    let items = items();
    let back: Vec<Vec<u8>> = pool.map("echo_bytes", items.iter().cloned()).unwrap();
    assert!(back == items, "the pool changed the items");
    let one: Vec<u8> = pool.apply("echo_bytes", &items[4]).unwrap();
    assert!(one == items[4], "apply changed the item");
    let chunked: Vec<Vec<u8>> = pool.map_chunked("echo_bytes", items.iter().cloned(), 4).unwrap();
    assert!(chunked == items, "a chunked map changed the items");
}

#[test]
fn bytes_round_trip_exactly_through_a_queue() {
    let host = host();
    let program = host.load(guest("data-path")).unwrap();
    let input = host::sync::Queue::new(&host, 0).unwrap();
    let output = host::sync::Queue::new(&host, 0).unwrap();
    let items = items();
    let relay = program.command().entry("relay").input(&(&input, &output, items.len() as u64)).spawn().unwrap();
    for item in &items {
        input.put(item).unwrap();
    }
    let back: Vec<Vec<u8>> = items.iter().map(|_| output.get().unwrap()).collect();
    assert_eq!(join(&relay).code(), 0);
    assert!(back == items, "the queue changed the items");
}

#[test]
fn bytes_round_trip_exactly_through_a_pipe() {
    let host = host();
    let program = host.load(guest("data-path")).unwrap();
    let (mine, theirs) = host::sync::Connection::pipe(&host, true).unwrap();
    let items = items();
    let echo = program.command().entry("pipe_echo").input(&(&theirs, items.len() as u64)).spawn().unwrap();
    drop(theirs);
    for item in &items {
        mine.send(item).unwrap();
        let back: Vec<u8> = mine.recv().unwrap();
        assert!(&back == item, "the pipe changed an item of {} bytes", item.len());
    }
    assert_eq!(join(&echo).code(), 0);
}

/// Bytes as a child's spawn argument, and through the guest's own pool
/// interface: the guest checks what comes back.
#[test]
fn bytes_round_trip_exactly_in_a_guests_own_pool() {
    let host = host();
    let program = host.load(guest("data-path")).unwrap();
    let child = program.command().entry("pool_bytes").input(&items()).spawn().unwrap();
    assert_eq!(join(&child).code(), 0);
    let out = run(&[s(&guest("data-path"))]);
    out.assert_status(0);
    assert_eq!(out.stdout_lines(), ["data-path: ok"]);
}

/// `map` without a chunk size takes Python's (about four chunks per
/// worker): every size, below and above the number of chunks, gives every
/// result in order.
#[test]
fn automatic_chunks_keep_the_order() {
    let host = host();
    let program = host.load(guest("data-path")).unwrap();
    let pool = host::Pool::new(&program, 3).unwrap();
    for n in [0i64, 1, 2, 11, 12, 13, 1000, 10_007] {
        let squares: Vec<i64> = pool.map("square", 0..n).unwrap();
        assert_eq!(squares, (0..n).map(|x| x * x).collect::<Vec<_>>(), "n = {n}");
        let imap: Vec<i64> = pool.imap("square", 0..n, 5).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(imap, squares, "imap, n = {n}");
    }
}

/// `host map` reads JSON lines and prints JSON lines, whatever the guests'
/// format: bytes show as arrays of numbers, an argument of the wrong type
/// as an error on its line.
#[test]
fn host_map_speaks_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "input.jsonl", "[1,2,255]\n[]\n\"x\"\n");
    let program = guest("data-path");
    let args = ["map", s(&program), "--entry", "echo_bytes", "--backend", backend_name(), "--input", s(&file)];
    let out = host_with(&args, &[]);
    out.assert_status(1);
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 3, "{out:#?}");
    assert_eq!(lines[..2], ["[1,2,255]", "[]"]);
    assert!(lines[2].starts_with("{\"error\":") && lines[2].contains("bad arguments"), "{out:#?}");
}
