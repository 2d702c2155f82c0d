//! The compile cache: a program compiled once is kept on disk, so that the
//! next run that loads it maps native code instead of compiling it again.
//!
//! An entry is keyed by the program's content (SHA-256 of its binary) and by
//! the engine's configuration (wasmtime's precompile compatibility hash,
//! which covers the wasmtime version, the compiler's settings and the
//! features that change code: fuel, epochs, memory layout). It lives in the
//! user's cache directory by platform convention (`$XDG_CACHE_HOME/mp-host`
//! or `~/.cache/mp-host` on Linux), which `MP_HOST_CACHE_DIR` moves and
//! `MP_HOST_CACHE=off` turns off ([`CompileCache`]).
//!
//! Deserializing compiled code is trusting it to be what this host wrote: so
//! nothing is mapped before it is checked. The directory must be the user's
//! own and writable by nobody else, and every entry has a header (a magic, a
//! format version, the engine's hash, the program's digest, the kind, the
//! length and the SHA-256 of the serialized code) that must match the
//! program being loaded and the bytes that follow, which are read into memory
//! once and checked there, so a change after the check cannot reach the
//! engine. A damaged, truncated or foreign entry is compiled anew and
//! replaced. Entries are written to a private temporary file (0600, in a
//! 0700 directory) and renamed into place: a reader sees a whole entry or
//! none, and hosts racing on one entry each write a valid one.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;

/// The environment variable that moves the cache: a directory.
pub const CACHE_DIR_ENV: &str = "MP_HOST_CACHE_DIR";
/// The environment variable that turns the cache off: `off` (or `0`, `no`, `false`).
pub const CACHE_ENV: &str = "MP_HOST_CACHE";

/// Identifies an entry's format: a file without it is not ours.
const MAGIC: &[u8; 8] = b"mphostc\0";
/// The entry format's version; bumped when the header changes.
const FORMAT: u32 = 1;
/// Magic, format, engine hash, content digest, kind, payload length, payload digest.
const HEADER_LEN: usize = 8 + 4 + 32 + 32 + 1 + 8 + 32;

/// Where a host keeps compiled programs between runs
/// ([`HostBuilder::compile_cache`](crate::HostBuilder::compile_cache)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CompileCache {
    /// The environment decides: off if `MP_HOST_CACHE` is `off` (or `0`,
    /// `no`, `false`), else in `MP_HOST_CACHE_DIR` if set, else in the
    /// user's cache directory (`$XDG_CACHE_HOME/mp-host`, or
    /// `~/.cache/mp-host`; `~/Library/Caches/mp-host` on macOS).
    #[default]
    Default,
    /// In this directory, whatever the environment says.
    Dir(PathBuf),
    /// No cache: every load compiles, nothing is written.
    Off,
}

impl CompileCache {
    /// The directory this setting resolves to now; `None` when the cache is
    /// off (or no home directory is known).
    pub fn dir(&self) -> Option<PathBuf> {
        match self {
            CompileCache::Off => None,
            CompileCache::Dir(dir) => Some(dir.clone()),
            CompileCache::Default => {
                let off = std::env::var(CACHE_ENV)
                    .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "off" | "0" | "no" | "false"));
                if off {
                    return None;
                }
                match std::env::var_os(CACHE_DIR_ENV) {
                    Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
                    _ => user_cache_dir().map(|dir| dir.join("mp-host")),
                }
            }
        }
    }
}

/// The platform's per-user cache directory.
fn user_cache_dir() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let home = || std::env::var_os("HOME").and_then(absolute);
    if cfg!(target_os = "macos") {
        home().map(|h| h.join("Library/Caches"))
    } else if cfg!(windows) {
        std::env::var_os("LOCALAPPDATA").and_then(absolute)
    } else {
        std::env::var_os("XDG_CACHE_HOME").and_then(absolute).or_else(|| home().map(|h| h.join(".cache")))
    }
}

/// What the cache did for one load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The compiled code came from this entry.
    Hit(PathBuf),
    /// Compiled, and kept in this entry for next time.
    Stored(PathBuf),
    /// The entry was unusable (why): compiled anew, and replaced.
    Replaced(PathBuf, String),
    /// Compiled, but could not be kept (why).
    NotStored(String),
}

/// Compiled code that the cache can keep: a component or a core module.
pub(crate) trait Artifact: Sized {
    /// Distinguishes the kinds in an entry's header.
    const KIND: u8;
    fn compile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Self>;
    fn serialize(&self) -> wasmtime::Result<Vec<u8>>;
    /// # Safety
    /// `bytes` must be what [`Artifact::serialize`] made with a compatible engine.
    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self>;
}

impl Artifact for wasmtime::component::Component {
    const KIND: u8 = 1;
    fn compile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Self> {
        Self::new(engine, wasm)
    }
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        wasmtime::component::Component::serialize(self)
    }
    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: the caller's contract.
        unsafe { wasmtime::component::Component::deserialize(engine, bytes) }
    }
}

impl Artifact for wasmtime::Module {
    const KIND: u8 = 2;
    fn compile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Self> {
        Self::new(engine, wasm)
    }
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        wasmtime::Module::serialize(self)
    }
    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: the caller's contract.
        unsafe { wasmtime::Module::deserialize(engine, bytes) }
    }
}

/// A host's compile cache: a directory and the engine whose code it keeps.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    engine: [u8; 32],
}

/// Feeds what a `Hash` writes into SHA-256.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0
    }
}

impl Store {
    /// The cache for `engine` in `dir`.
    pub(crate) fn new(dir: PathBuf, engine: &Engine) -> Store {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        // What this host does with the code (its linking, its probes) is
        // part of the key too: another version of the host starts afresh.
        hasher.write(env!("CARGO_PKG_VERSION").as_bytes());
        Store { dir, engine: hasher.0.finalize().into() }
    }

    /// The directory the entries are in.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the entry for `wasm` (binary) compiled as `A` lives.
    #[cfg(test)]
    fn entry<A: Artifact>(&self, wasm: &[u8]) -> PathBuf {
        self.entry_of::<A>(&Sha256::digest(wasm).into())
    }

    fn entry_of<A: Artifact>(&self, content: &[u8; 32]) -> PathBuf {
        let mut key = Sha256::new();
        key.update(self.engine);
        key.update([A::KIND]);
        key.update(content);
        self.dir.join(format!("{}.cwasm", hex(&key.finalize()[..20])))
    }

    /// Whether a valid entry for `wasm` is there now.
    pub(crate) fn holds<A: Artifact>(&self, wasm: &[u8]) -> bool {
        let content: [u8; 32] = Sha256::digest(wasm).into();
        let Ok(()) = self.check_dir() else {
            return false;
        };
        std::fs::read(self.entry_of::<A>(&content)).is_ok_and(|data| self.verify::<A>(&data, &content).is_ok())
    }

    /// The compiled `wasm`: from its entry if there is a valid one, else
    /// compiled now and kept. A compile error is the program's; the cache's
    /// own troubles only make it compile.
    pub(crate) fn load<A: Artifact>(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<(A, Outcome)> {
        let content: [u8; 32] = Sha256::digest(wasm).into();
        let path = self.entry_of::<A>(&content);
        if let Err(why) = self.check_dir() {
            return Ok((A::compile(engine, wasm)?, Outcome::NotStored(why)));
        }
        let stale = match std::fs::read(&path) {
            Ok(data) => match self.verify::<A>(&data, &content) {
                // SAFETY: the payload is what this host serialized for an
                // engine of the same compatibility hash: its header says so
                // and its SHA-256 matches, checked on this copy in memory,
                // read from a directory only this user can write.
                Ok(payload) => match unsafe { A::deserialize(engine, payload) } {
                    Ok(code) => return Ok((code, Outcome::Hit(path))),
                    Err(error) => {
                        Some(format!("it does not load: {}", format!("{error:#}").lines().next().unwrap_or_default()))
                    }
                },
                Err(why) => Some(why),
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => Some(format!("cannot read it: {error}")),
        };
        let code = A::compile(engine, wasm)?;
        let outcome = match code.serialize().map_err(|e| e.to_string()).and_then(|bytes| {
            self.write::<A>(&path, &content, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }) {
            Ok(()) => match stale {
                Some(why) => Outcome::Replaced(path, why),
                None => Outcome::Stored(path),
            },
            Err(why) => Outcome::NotStored(why),
        };
        Ok((code, outcome))
    }

    /// The payload of entry `data` if it is this engine's code of `content`.
    fn verify<'a, A: Artifact>(&self, data: &'a [u8], content: &[u8; 32]) -> Result<&'a [u8], String> {
        if data.len() < HEADER_LEN {
            return Err("it is truncated".into());
        }
        let (header, payload) = data.split_at(HEADER_LEN);
        if &header[..8] != MAGIC || header[8..12] != FORMAT.to_le_bytes() {
            return Err("it is not a compile cache entry of this host".into());
        }
        if header[12..44] != self.engine {
            return Err("it was compiled by another engine configuration".into());
        }
        if header[44..76] != content[..] || header[76] != A::KIND {
            return Err("it is another program's".into());
        }
        let len = u64::from_le_bytes(header[77..85].try_into().expect("8 bytes"));
        if len != payload.len() as u64 {
            return Err("it is truncated or has bytes added".into());
        }
        if header[85..117] != Sha256::digest(payload)[..] {
            return Err("its code is damaged (digest mismatch)".into());
        }
        Ok(payload)
    }

    /// Writes an entry atomically: a private temporary file, renamed.
    fn write<A: Artifact>(&self, path: &Path, content: &[u8; 32], payload: &[u8]) -> std::io::Result<()> {
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT.to_le_bytes());
        header.extend_from_slice(&self.engine);
        header.extend_from_slice(content);
        header.push(A::KIND);
        header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        header.extend_from_slice(&Sha256::digest(payload));
        // `tempfile` creates the file 0600 with a random name.
        let mut file = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&self.dir)?;
        file.write_all(&header)?;
        file.write_all(payload)?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Makes the directory (0700) if needed, and checks that only this user
    /// can write it: an entry someone else could plant would be code run
    /// outside every sandbox.
    fn check_dir(&self) -> Result<(), String> {
        let dir = &self.dir;
        #[cfg(unix)]
        {
            use std::os::unix::fs::{DirBuilderExt, MetadataExt};
            if !dir.is_dir() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let meta = std::fs::metadata(dir).map_err(|e| format!("cannot use {}: {e}", dir.display()))?;
            if meta.uid() != nix::unistd::geteuid().as_raw() {
                return Err(format!("{} belongs to another user: not used", dir.display()));
            }
            if meta.mode() & 0o022 != 0 {
                return Err(format!("{} is writable by others: not used (chmod 700 it)", dir.display()));
            }
        }
        #[cfg(not(unix))]
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::Module;

    const WAT: &str = "(module (func (export \"f\")))";

    #[test]
    fn an_entry_is_stored_then_hit_and_a_damaged_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let store = Store::new(dir.path().join("c"), &engine);
        let wasm = wat::parse_str(WAT).unwrap();
        let (_, first) = store.load::<Module>(&engine, &wasm).unwrap();
        let Outcome::Stored(path) = first else { panic!("{first:?}") };
        assert!(store.holds::<Module>(&wasm));
        let (module, second) = store.load::<Module>(&engine, &wasm).unwrap();
        assert_eq!(second, Outcome::Hit(path.clone()));
        assert!(module.get_export("f").is_some());

        // One bit flipped in the code: detected, compiled anew, replaced.
        let mut data = std::fs::read(&path).unwrap();
        let last = data.len() - 1;
        data[last] ^= 1;
        std::fs::write(&path, &data).unwrap();
        assert!(!store.holds::<Module>(&wasm));
        let (_, third) = store.load::<Module>(&engine, &wasm).unwrap();
        assert!(matches!(&third, Outcome::Replaced(p, why) if *p == path && why.contains("damaged")), "{third:?}");
        assert_eq!(store.load::<Module>(&engine, &wasm).unwrap().1, Outcome::Hit(path.clone()));

        // Truncated, and another program's entry under this name.
        std::fs::write(&path, &data[..10]).unwrap();
        assert!(
            matches!(store.load::<Module>(&engine, &wasm).unwrap().1, Outcome::Replaced(_, why) if why.contains("truncated"))
        );
        let other = wat::parse_str("(module (func (export \"g\")))").unwrap();
        let (_, outcome) = store.load::<Module>(&engine, &other).unwrap();
        let Outcome::Stored(other_path) = outcome else { panic!() };
        std::fs::copy(&other_path, &path).unwrap();
        assert!(
            matches!(store.load::<Module>(&engine, &wasm).unwrap().1, Outcome::Replaced(_, why) if why.contains("another program"))
        );
    }

    #[test]
    fn another_engine_configuration_is_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let plain = Engine::default();
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        let fuel = Engine::new(&config).unwrap();
        let wasm = wat::parse_str(WAT).unwrap();
        let a = Store::new(dir.path().to_path_buf(), &plain);
        let b = Store::new(dir.path().to_path_buf(), &fuel);
        assert_ne!(a.entry::<Module>(&wasm), b.entry::<Module>(&wasm));
        // An entry of the other engine copied under this one's name is refused.
        let Outcome::Stored(path) = a.load::<Module>(&plain, &wasm).unwrap().1 else { panic!() };
        std::fs::copy(&path, b.entry::<Module>(&wasm)).unwrap();
        assert!(
            matches!(b.load::<Module>(&fuel, &wasm).unwrap().1, Outcome::Replaced(_, why) if why.contains("another engine"))
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_others_can_write_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let engine = Engine::default();
        let store = Store::new(dir.path().to_path_buf(), &engine);
        let wasm = wat::parse_str(WAT).unwrap();
        let outcome = store.load::<Module>(&engine, &wasm).unwrap().1;
        assert!(matches!(&outcome, Outcome::NotStored(why) if why.contains("writable by others")), "{outcome:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
