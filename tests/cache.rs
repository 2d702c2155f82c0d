//! The compile cache (`host run`, `host inspect`, the library): a second load
//! of a program uses the code kept from the first; a damaged entry is
//! compiled anew and the run still works; `--no-cache` and `MP_HOST_CACHE=off`
//! write nothing; `MP_HOST_CACHE_DIR` moves the cache. The cache's doings are
//! observed through the `-v` logs and the files it leaves, never timing.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// The entries (`*.cwasm`) in `dir`, if it exists.
fn entries(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(listing) => {
            let mut found: Vec<PathBuf> =
                listing.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "cwasm")).collect();
            found.sort();
            found
        }
        Err(_) => Vec::new(),
    }
}

/// `host -v run --backend B ARGS...` with the cache in `dir`.
fn run_cached(dir: &Path, args: &[&str]) -> Output {
    let mut full = vec!["-v", "run", "--backend", backend_name()];
    full.extend_from_slice(args);
    host_with(&full, &[("MP_HOST_CACHE_DIR", s(dir))])
}

fn assert_hello(out: &Output) {
    out.assert_status(0);
    assert!(out.stdout_lines().first().is_some_and(|l| l.starts_with("hello from pid=")), "{out:#?}");
}

#[test]
fn the_second_run_takes_the_compiled_code_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("moved");
    let first = run_cached(&cache, &[s(&guest("hello"))]);
    assert_hello(&first);
    assert!(first.stderr.contains("compile cache: compiled and stored"), "{first:#?}");
    let stored = entries(&cache);
    assert_eq!(stored.len(), 1, "one entry, in the directory MP_HOST_CACHE_DIR names");

    let second = run_cached(&cache, &[s(&guest("hello"))]);
    assert_hello(&second);
    assert!(second.stderr.contains("compile cache: hit"), "{second:#?}");
    assert!(!second.stderr.contains("compiled and stored"), "{second:#?}");
    assert_eq!(entries(&cache), stored);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache), 0o700, "the directory is the user's alone");
        assert_eq!(mode(&stored[0]), 0o600, "an entry is the user's alone");
    }
}

#[test]
fn a_damaged_entry_is_compiled_anew_and_the_run_works() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().to_path_buf();
    assert_hello(&run_cached(&cache, &[s(&guest("hello"))]));
    let entry = entries(&cache).pop().expect("an entry");
    let whole = std::fs::read(&entry).unwrap();

    // A flipped byte in the compiled code.
    let mut damaged = whole.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(&entry, &damaged).unwrap();
    let out = run_cached(&cache, &[s(&guest("hello"))]);
    assert_hello(&out);
    assert!(out.stderr.contains("entry unusable") && out.stderr.contains("damaged"), "{out:#?}");
    assert_eq!(std::fs::read(&entry).unwrap(), whole, "replaced by a good entry");

    // Truncated, then something that is not an entry at all.
    std::fs::write(&entry, &whole[..whole.len() / 3]).unwrap();
    let out = run_cached(&cache, &[s(&guest("hello"))]);
    assert_hello(&out);
    assert!(out.stderr.contains("truncated"), "{out:#?}");
    std::fs::write(&entry, [b'x'; 4096]).unwrap();
    let out = run_cached(&cache, &[s(&guest("hello"))]);
    assert_hello(&out);
    assert!(out.stderr.contains("not a compile cache entry"), "{out:#?}");

    let out = run_cached(&cache, &[s(&guest("hello"))]);
    assert!(out.stderr.contains("compile cache: hit"), "{out:#?}");
}

#[test]
fn no_cache_and_the_off_switch_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = run_cached(&cache, &["--no-cache", s(&guest("hello"))]);
    assert_hello(&out);
    assert!(!out.stderr.contains("compile cache"), "{out:#?}");
    assert!(!cache.exists(), "--no-cache made {}", cache.display());

    let hello = guest("hello");
    let args = ["run", "--backend", backend_name(), s(&hello)];
    let out = host_with(&args, &[("MP_HOST_CACHE_DIR", s(&cache)), ("MP_HOST_CACHE", "off")]);
    assert_hello(&out);
    assert!(!cache.exists(), "MP_HOST_CACHE=off made {}", cache.display());
}

#[test]
fn a_granted_directory_that_holds_the_cache_turns_it_off() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let grant = format!("{}::/data", s(dir.path()));
    let out = run_cached(&cache, &["--dir", &grant, s(&guest("hello"))]);
    assert_hello(&out);
    assert!(out.stderr.contains("compile cache off for this run"), "{out:#?}");
    assert!(entries(&cache).is_empty(), "a guest could have reached {}", cache.display());
}

#[test]
fn inspect_says_whether_the_code_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let env = [("MP_HOST_CACHE_DIR", s(&cache))];
    let file = guest("hello");
    let first = host_with(&["inspect", s(&file)], &env);
    first.assert_status(0);
    assert!(first.stdout.contains("compiled code: not cached before this load"), "{first:#?}");
    let second = host_with(&["inspect", s(&file)], &env);
    assert!(second.stdout.contains("compiled code: cached in"), "{second:#?}");
    let off = host_with(&["inspect", "--no-cache", s(&file)], &env);
    assert!(off.stdout.contains("compiled code: not cached (the compile cache is off)"), "{off:#?}");
}

#[test]
fn the_library_loads_from_the_cache_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let cache = host::CompileCache::Dir(dir.path().join("lib"));
    let host = builder().compile_cache(cache.clone()).build().unwrap();
    let bytes = std::fs::read(guest("hello")).unwrap();
    assert!(!host.is_cached(&bytes));
    let program = host.load(guest("hello")).unwrap();
    assert!(host.is_cached(&bytes), "the load kept the compiled code");
    assert!(join(&program.command().stdout(host::Stdio::null()).spawn().unwrap()).success());
    drop(host);
    // Another host of the same configuration runs the cached code.
    let again = builder().compile_cache(cache).build().unwrap();
    assert!(again.is_cached(&bytes));
    let program = again.load(guest("hello")).unwrap();
    assert!(join(&program.command().stdout(host::Stdio::null()).spawn().unwrap()).success());
}
