//! Compiled code that no guest can reach: sealed in memory, passed by descriptor.
//!
//! A worker runs native code that the root host compiled, so whoever can
//! change that code between the root and the worker runs outside every
//! sandbox. The code therefore never touches a file system: the root
//! serializes a program once into a `memfd` and seals it (no write, no
//! resize, no further seals), so not even the root can change it after, and
//! hands the descriptor itself to each worker (inherited by an exec'd worker,
//! sent as `SCM_RIGHTS` to the zygote). No path that can be granted with
//! `--dir` leads to it, nothing is left behind when the host is killed, and
//! its name cannot be reused by another program while it is mapped. Before
//! mapping it, the worker checks that what it was handed is sealed and is the
//! code its start message describes (length and digest).

use super::protocol::{CodeId, Start};
use crate::error::LoadError;
use crate::program::{Code, Program, ProgramInner, ProgramKind, first_line, unsupported_imports};
use crate::runtime::{Engines, HostInner};
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use std::hash::Hasher;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};
use wasmtime::Module;
use wasmtime::component::Component;

/// The seals that make the code immutable for everyone, its maker included.
fn seals() -> SealFlag {
    SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL
}

/// A program's compiled code, serialized and sealed in memory.
#[derive(Debug)]
pub(crate) struct Sealed {
    fd: OwnedFd,
    id: CodeId,
}

impl Sealed {
    /// The sealed code of `program`, made on first use and kept with it.
    pub(crate) fn of(program: &Program) -> std::io::Result<Arc<Sealed>> {
        let cache = &program.inner.backend_data;
        if let Some(sealed) = cache.get().and_then(|data| data.clone().downcast::<Sealed>().ok()) {
            return Ok(sealed);
        }
        let bytes = match &program.inner.code {
            Code::Component(pre) => pre.component().serialize(),
            Code::Core(pre) => pre.module().serialize(),
        }
        .map_err(std::io::Error::other)?;
        let sealed = Arc::new(Sealed::seal(&bytes)?);
        // Two first uses may race: both seal, one is kept, both are valid.
        let kept = cache.get_or_init(|| sealed.clone());
        Ok(kept.clone().downcast::<Sealed>().unwrap_or(sealed))
    }

    fn seal(bytes: &[u8]) -> std::io::Result<Sealed> {
        let fd = memfd_create(c"host-compiled-code", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes)?;
        let fd = OwnedFd::from(file);
        fcntl(&fd, FcntlArg::F_ADD_SEALS(seals()))?;
        Ok(Sealed { fd, id: CodeId { len: bytes.len() as u64, digest: digest(bytes) } })
    }

    /// What a worker checks the descriptor against.
    pub(crate) fn id(&self) -> CodeId {
        self.id
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn digest(bytes: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(bytes);
    hasher.finish()
}

/// Checks that `fd` holds sealed code matching `id`; the sealed code.
fn verify(fd: OwnedFd, id: CodeId) -> Result<Sealed, String> {
    let present = fcntl(&fd, FcntlArg::F_GET_SEALS).map_err(|e| format!("not sealed code: {e}"))?;
    let required = (SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW).bits();
    if present & required != required {
        return Err("the compiled code handed over is not sealed".into());
    }
    let file = std::fs::File::from(fd);
    let size = file.metadata().map_err(|e| format!("cannot look at the compiled code: {e}"))?.len();
    if size != id.len {
        return Err("the compiled code handed over is not the program's".into());
    }
    // Read at offsets, never through the file position: every process that
    // inherited the descriptor shares it.
    let mut bytes = vec![0; size as usize];
    file.read_exact_at(&mut bytes, 0).map_err(|e| format!("cannot read the compiled code: {e}"))?;
    if digest(&bytes) != id.digest {
        return Err("the compiled code handed over is not the program's".into());
    }
    Ok(Sealed { fd: OwnedFd::from(file), id })
}

/// A worker's compiled code, from the sealed descriptor it was handed,
/// linked against `engines`.
pub(crate) fn load(engines: &Engines, fd: OwnedFd, start: &Start) -> Result<(Code, Arc<Sealed>), LoadError> {
    let name = start.source.as_ref().map_or_else(|| "the program".to_string(), |p| p.display().to_string());
    let sealed = verify(fd, start.code).map_err(|why| LoadError::new(format!("{name}: {why}")))?;
    // Mapped through the descriptor itself: no path but our own /proc entry.
    let path = format!("/proc/self/fd/{}", sealed.fd.as_raw_fd());
    let unreadable =
        |e: wasmtime::Error| LoadError::new(format!("cannot load the compiled code of {name}: {}", first_line(&e)));
    let unlinkable = |e: wasmtime::Error| unsupported_imports(&name, &e);
    // SAFETY: the code was serialized by the root host for this engine
    // configuration and is sealed: nobody can change it while it is mapped.
    let code = if start.core {
        let module = unsafe { Module::deserialize_file(&engines.engine, &path) }.map_err(unreadable)?;
        Code::Core(engines.core_linker.instantiate_pre(&module).map_err(unlinkable)?)
    } else {
        let component = unsafe { Component::deserialize_file(&engines.engine, &path) }.map_err(unreadable)?;
        Code::Component(engines.component_linker.instantiate_pre(&component).map_err(unlinkable)?)
    };
    Ok((code, Arc::new(sealed)))
}

/// The program a worker runs, from its compiled code; its children are
/// handed the same sealed code.
pub(crate) fn program(host: &Arc<HostInner>, start: &Start, code: Code, sealed: Arc<Sealed>) -> Program {
    let kind = match (&code, start.entries.is_empty() && start.has_main) {
        (Code::Core(_), _) => ProgramKind::CoreModule,
        (Code::Component(_), true) => ProgramKind::Command,
        (Code::Component(_), false) => ProgramKind::Program,
    };
    let backend_data: OnceLock<Arc<dyn std::any::Any + Send + Sync>> = OnceLock::new();
    let _ = backend_data.set(sealed);
    Program {
        inner: Arc::new(ProgramInner {
            host: host.clone(),
            path: start.source.clone(),
            code,
            entries: start.entries.clone(),
            has_main: start.has_main,
            kind,
            backend_data,
        }),
    }
}

/// Where a sealed descriptor came from, as the zygote keys its programs: the
/// kernel's identity of the memory file, unique while it is mapped.
pub(crate) fn identity(fd: &OwnedFd) -> std::io::Result<(u64, u64)> {
    let stat = nix::sys::stat::fstat(fd)?;
    Ok((stat.st_dev, stat.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_code_cannot_be_changed_and_is_verified() {
        let sealed = Sealed::seal(b"compiled").unwrap();
        let mut file = std::fs::File::from(sealed.fd.try_clone().unwrap());
        assert!(file.write_all(b"evil").is_err(), "the seal forbids writing");
        assert!(file.set_len(2).is_err(), "the seal forbids shrinking");
        let id = sealed.id();
        assert!(verify(sealed.fd.try_clone().unwrap(), id).is_ok());
        let other = CodeId { digest: id.digest ^ 1, ..id };
        assert!(verify(sealed.fd.try_clone().unwrap(), other).unwrap_err().contains("not the program's"));
        // An unsealed memory file is refused, whatever it holds.
        let open = memfd_create(c"open", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
        std::fs::File::from(open.try_clone().unwrap()).write_all(b"compiled").unwrap();
        assert!(verify(open, id).unwrap_err().contains("not sealed"));
    }
}
