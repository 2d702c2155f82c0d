//! Hostile test program: overwrites every file it can reach under the
//! directory argv[1] (printing `overwrote PATH` for each), then starts a
//! child of itself, which prints `child ran`: whatever the host keeps for
//! its processes must not be among what a granted directory reaches.
use mp::{Process, target};
use std::path::Path;

fn child() {
    println!("child ran");
}

mp::entries!(child);

fn overwrite(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => overwrite(&path),
            Ok(kind) if kind.is_file() => {
                if std::fs::write(&path, b"\x7fELF hostile bytes").is_ok() {
                    println!("overwrote {}", path.display());
                }
            }
            _ => {}
        }
    }
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/tmp".to_string());
    overwrite(Path::new(&dir));
    let p = Process::new(target!(child), ());
    p.start().expect("start");
    p.join().expect("join");
    println!("child exitcode: {:?}", p.exitcode());
}
