//! `--no-cache` and the compile cache as the command line sees it.
//!
//! The library keeps compiled programs in the user's cache directory
//! ([`host::CompileCache`]); `--no-cache` turns that off for one run, and
//! so does a `--dir` grant that would let a guest reach the cache: compiled
//! code a guest could write is code run outside every sandbox.

use clap::Args;
use host::CompileCache;
use std::path::{Path, PathBuf};

/// The compile cache's flag, shared by the subcommands that load programs.
#[derive(Args, Debug, Clone, Copy)]
pub(super) struct CacheArgs {
    /// Compile the program anew and keep nothing on disk. By default the
    /// compiled code is kept in the user's cache directory
    /// ($XDG_CACHE_HOME/mp-host, else ~/.cache/mp-host), so that the next
    /// load is quick; MP_HOST_CACHE_DIR=DIR moves it, MP_HOST_CACHE=off
    /// turns it off.
    #[arg(long)]
    no_cache: bool,
}

impl CacheArgs {
    /// The cache for a run that grants the guests `dirs` (host paths).
    pub(super) fn setting(self, dirs: &[&Path]) -> CompileCache {
        if self.no_cache {
            return CompileCache::Off;
        }
        let Some(cache) = CompileCache::Default.dir() else {
            return CompileCache::Off;
        };
        let cache = resolve(&cache);
        for dir in dirs {
            let granted = resolve(dir);
            if cache.starts_with(&granted) || granted.starts_with(&cache) {
                tracing::warn!(
                    "compile cache off for this run: --dir {} would let a guest reach it ({})",
                    dir.display(),
                    cache.display()
                );
                return CompileCache::Off;
            }
        }
        CompileCache::Dir(cache)
    }
}

/// `path`, absolute, with its symbolic links resolved as far as it exists
/// (a relative cache directory that does not exist yet is still compared
/// with the grants as the directory it will be).
fn resolve(path: &Path) -> PathBuf {
    let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while !existing.as_os_str().is_empty() {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |p, part| p.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    path.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_that_reaches_the_cache_turns_it_off() {
        let base = tempfile::tempdir().unwrap();
        let cache = base.path().join("cache").join("mp-host");
        // SAFETY: this test module is the only one that sets this variable.
        unsafe { std::env::set_var(host::CACHE_DIR_ENV, &cache) };
        let on = CacheArgs { no_cache: false };
        assert_eq!(on.setting(&[base.path()]), CompileCache::Off, "a grant above the cache");
        assert_eq!(on.setting(&[&cache.join("x")]), CompileCache::Off, "a grant inside it");
        let elsewhere = base.path().join("data");
        std::fs::create_dir(&elsewhere).unwrap();
        assert!(matches!(on.setting(&[&elsewhere]), CompileCache::Dir(_)));
        // A relative cache directory, not made yet, below a granted one.
        let cwd = std::env::current_dir().unwrap();
        // SAFETY: as above.
        unsafe { std::env::set_var(host::CACHE_DIR_ENV, "not-made-yet/mp-host") };
        assert_eq!(on.setting(&[&cwd]), CompileCache::Off, "a grant above a relative cache");
        assert_eq!(CacheArgs { no_cache: true }.setting(&[]), CompileCache::Off);
        unsafe { std::env::remove_var(host::CACHE_DIR_ENV) };
    }
}
