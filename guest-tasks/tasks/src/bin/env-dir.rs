//! Test program: what the sandbox grants. Prints every environment variable
//! as `KEY=VALUE`, lists directory argv[1] (default `/data`) as
//! `entry: NAME` lines or `no access: ERROR`, and, given argv[2], prints that
//! file as `file: CONTENT` or `no file: ERROR`.
fn main() {
    for (key, value) in std::env::vars() {
        println!("{key}={value}");
    }
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/data".to_string());
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            let mut names: Vec<String> =
                entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            for name in names {
                println!("entry: {name}");
            }
        }
        Err(e) => println!("no access: {e}"),
    }
    if let Some(file) = std::env::args().nth(2) {
        match std::fs::read_to_string(&file) {
            Ok(content) => println!("file: {}", content.trim_end()),
            Err(e) => println!("no file: {e}"),
        }
    }
}
