//! `Lock`, `RLock`, `Semaphore` and `BoundedSemaphore`.
//!
//! A lock records which process holds it (and, for an `RLock`, how many
//! times), so that the registry can release it when that process ends. A
//! `Lock` may be released by any process, as in Python; an `RLock` only by
//! its owner.

use super::{Error, wait_for};
use std::sync::Mutex;
use tokio::sync::Notify;

pub(crate) struct Lock {
    recursive: bool,
    state: Mutex<Owner>,
    changed: Notify,
}

#[derive(Default)]
struct Owner {
    pid: Option<u32>,
    count: u32,
}

impl Lock {
    pub(crate) fn new(recursive: bool) -> Lock {
        Lock { recursive, state: Mutex::new(Owner::default()), changed: Notify::new() }
    }

    /// Takes the lock for `pid` (`count` times over for an `RLock` being
    /// re-taken after a condition wait); false after `timeout`.
    pub(crate) async fn acquire(&self, pid: u32, count: u32, timeout: Option<u64>) -> bool {
        wait_for(&self.changed, timeout, || {
            let mut owner = self.state.lock().unwrap();
            match owner.pid {
                None => {
                    *owner = Owner { pid: Some(pid), count };
                    Some(())
                }
                Some(holder) if self.recursive && holder == pid => {
                    owner.count += count;
                    Some(())
                }
                Some(_) => None,
            }
        })
        .await
        .is_some()
    }

    pub(crate) fn release(&self, pid: u32) -> Result<(), Error> {
        let mut owner = self.state.lock().unwrap();
        match owner.pid {
            None if self.recursive => {
                return Err(Error::Invalid("cannot release un-acquired lock".into()));
            }
            None => return Err(Error::Invalid("release unlocked lock".into())),
            Some(holder) if self.recursive && holder != pid => {
                return Err(Error::Invalid("cannot release un-acquired lock".into()));
            }
            Some(_) => {
                owner.count -= 1;
                if owner.count == 0 || !self.recursive {
                    *owner = Owner::default();
                }
            }
        }
        let free = owner.pid.is_none();
        drop(owner);
        if free {
            self.changed.notify_waiters();
        }
        Ok(())
    }

    /// Releases the lock entirely if `pid` holds it; how many times it held
    /// it (0 if it did not).
    pub(crate) fn release_all(&self, pid: u32) -> u32 {
        let mut owner = self.state.lock().unwrap();
        if owner.pid != Some(pid) {
            return 0;
        }
        let count = owner.count;
        *owner = Owner::default();
        drop(owner);
        self.changed.notify_waiters();
        count
    }

    pub(crate) fn is_owned_by(&self, pid: u32) -> bool {
        self.state.lock().unwrap().pid == Some(pid)
    }
}

pub(crate) struct Semaphore {
    /// The initial value of a bounded semaphore: releases may not exceed it.
    bound: Option<u32>,
    value: Mutex<u32>,
    changed: Notify,
}

impl Semaphore {
    pub(crate) fn new(value: u32, bounded: bool) -> Semaphore {
        Semaphore { bound: bounded.then_some(value), value: Mutex::new(value), changed: Notify::new() }
    }

    pub(crate) async fn acquire(&self, timeout: Option<u64>) -> bool {
        wait_for(&self.changed, timeout, || {
            let mut value = self.value.lock().unwrap();
            (*value > 0).then(|| *value -= 1)
        })
        .await
        .is_some()
    }

    pub(crate) fn release(&self) -> Result<(), Error> {
        let mut value = self.value.lock().unwrap();
        if self.bound.is_some_and(|bound| *value >= bound) || *value == u32::MAX {
            return Err(Error::Invalid("semaphore or lock released too many times".into()));
        }
        *value += 1;
        drop(value);
        self.changed.notify_waiters();
        Ok(())
    }

    pub(crate) fn value(&self) -> u32 {
        *self.value.lock().unwrap()
    }
}
