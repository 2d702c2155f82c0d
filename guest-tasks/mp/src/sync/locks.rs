//! Python's synchronization primitives, shared between processes through
//! the host: `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`, `Event`,
//! `Condition` and `Barrier`.

use super::{Error, created, timeout, wit};
use std::cell::OnceCell;
use std::time::Duration;

/// Python's `multiprocessing.Lock`. A lock held by a process that ends is
/// released by the host.
///
/// ```no_run
/// let lock = mp::Lock::new();
/// {
///     let _held = lock.lock().unwrap();
///     // ... critical section ...
/// }
/// assert!(lock.try_acquire().unwrap());
/// lock.release().unwrap();
/// ```
pub struct Lock {
    pub(super) inner: wit::Lock,
}

/// Holds a [`Lock`] until dropped (Python's `with lock:`).
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}

impl Lock {
    pub fn new() -> Lock {
        Lock { inner: created("Lock", wit::Lock::create(false)) }
    }

    /// Waits for the lock and takes it.
    pub fn acquire(&self) -> Result<(), Error> {
        self.inner.acquire(None)?;
        Ok(())
    }

    /// Takes the lock if it is free; whether it did.
    pub fn try_acquire(&self) -> Result<bool, Error> {
        Ok(self.inner.acquire(Some(0))?)
    }

    /// Waits at most `timeout` for the lock; whether it took it.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        Ok(self.inner.acquire(self::timeout(Some(timeout)))?)
    }

    pub fn release(&self) -> Result<(), Error> {
        Ok(self.inner.release()?)
    }

    /// Takes the lock until the guard is dropped.
    pub fn lock(&self) -> Result<LockGuard<'_>, Error> {
        self.acquire()?;
        Ok(LockGuard { lock: self })
    }
}

impl Default for Lock {
    fn default() -> Self {
        Lock::new()
    }
}

handle_serde!("Lock", Lock, wit::Lock, |h| h.inner, |w| Lock { inner: w });

/// Python's `multiprocessing.RLock`: a [`Lock`] its owner may take again
/// (and must release as many times).
///
/// ```no_run
/// let lock = mp::RLock::new();
/// lock.acquire().unwrap();
/// lock.acquire().unwrap();
/// lock.release().unwrap();
/// lock.release().unwrap();
/// ```
pub struct RLock(Lock);

impl RLock {
    pub fn new() -> RLock {
        RLock(Lock { inner: created("RLock", wit::Lock::create(true)) })
    }
}

impl Default for RLock {
    fn default() -> Self {
        RLock::new()
    }
}

impl std::ops::Deref for RLock {
    type Target = Lock;
    fn deref(&self) -> &Lock {
        &self.0
    }
}

handle_serde!("RLock", RLock, wit::Lock, |h| h.0.inner, |w| RLock(Lock { inner: w }));

/// Python's `multiprocessing.Semaphore` (and, from
/// [`Semaphore::bounded`], `BoundedSemaphore`).
///
/// ```no_run
/// let s = mp::Semaphore::new(2);
/// s.acquire().unwrap();
/// assert_eq!(s.get_value().unwrap(), 1);
/// s.release().unwrap();
/// ```
pub struct Semaphore {
    pub(super) inner: wit::Semaphore,
}

impl Semaphore {
    pub fn new(value: u32) -> Semaphore {
        Semaphore { inner: created("Semaphore", wit::Semaphore::create(value, false)) }
    }

    /// A `BoundedSemaphore`: releasing past `value` is an error.
    pub fn bounded(value: u32) -> Semaphore {
        Semaphore { inner: created("BoundedSemaphore", wit::Semaphore::create(value, true)) }
    }

    pub fn acquire(&self) -> Result<(), Error> {
        self.inner.acquire(None)?;
        Ok(())
    }

    pub fn try_acquire(&self) -> Result<bool, Error> {
        Ok(self.inner.acquire(Some(0))?)
    }

    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        Ok(self.inner.acquire(self::timeout(Some(timeout)))?)
    }

    pub fn release(&self) -> Result<(), Error> {
        Ok(self.inner.release()?)
    }

    pub fn get_value(&self) -> Result<u32, Error> {
        Ok(self.inner.get_value()?)
    }
}

handle_serde!("Semaphore", Semaphore, wit::Semaphore, |h| h.inner, |w| Semaphore { inner: w });

/// Python's `BoundedSemaphore(value)`.
#[allow(non_snake_case)]
pub fn BoundedSemaphore(value: u32) -> Semaphore {
    Semaphore::bounded(value)
}

/// Python's `multiprocessing.Event`.
///
/// ```no_run
/// let e = mp::Event::new();
/// e.set().unwrap();
/// assert!(e.wait(None).unwrap());
/// ```
pub struct Event {
    pub(super) inner: wit::Event,
}

impl Event {
    pub fn new() -> Event {
        Event { inner: created("Event", wit::Event::create()) }
    }

    pub fn set(&self) -> Result<(), Error> {
        Ok(self.inner.set()?)
    }

    pub fn clear(&self) -> Result<(), Error> {
        Ok(self.inner.clear()?)
    }

    pub fn is_set(&self) -> Result<bool, Error> {
        Ok(self.inner.is_set()?)
    }

    /// Waits until the flag is set (at most `timeout`); the flag.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool, Error> {
        Ok(self.inner.wait(self::timeout(timeout))?)
    }
}

impl Default for Event {
    fn default() -> Self {
        Event::new()
    }
}

handle_serde!("Event", Event, wit::Event, |h| h.inner, |w| Event { inner: w });

/// Python's `multiprocessing.Condition`: [`acquire`](Condition::acquire)
/// its lock, then [`wait`](Condition::wait) or [`notify`](Condition::notify).
///
/// ```no_run
/// let c = mp::Condition::new(None);
/// let _held = c.lock().unwrap();
/// c.notify_all().unwrap();
/// ```
pub struct Condition {
    pub(super) inner: wit::Condition,
    lock: OnceCell<Lock>,
}

impl Condition {
    /// Over `lock`, or over a new `RLock` for `None`.
    pub fn new(lock: Option<&Lock>) -> Condition {
        Condition { inner: created("Condition", wit::Condition::create(lock.map(|l| &l.inner))), lock: OnceCell::new() }
    }

    /// The condition's lock.
    pub fn get_lock(&self) -> Result<&Lock, Error> {
        if let Some(lock) = self.lock.get() {
            return Ok(lock);
        }
        let lock = Lock { inner: self.inner.get_lock()? };
        Ok(self.lock.get_or_init(|| lock))
    }

    pub fn acquire(&self) -> Result<(), Error> {
        self.get_lock()?.acquire()
    }

    pub fn release(&self) -> Result<(), Error> {
        self.get_lock()?.release()
    }

    /// Holds the lock until the guard is dropped (Python's `with cond:`).
    pub fn lock(&self) -> Result<LockGuard<'_>, Error> {
        self.get_lock()?.lock()
    }

    /// Releases the lock, waits for a notification (at most `timeout`), takes
    /// the lock back; false if it timed out.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool, Error> {
        Ok(self.inner.wait(self::timeout(timeout))?)
    }

    pub fn notify(&self, n: u32) -> Result<(), Error> {
        Ok(self.inner.notify(n)?)
    }

    pub fn notify_all(&self) -> Result<(), Error> {
        Ok(self.inner.notify_all()?)
    }
}

handle_serde!("Condition", Condition, wit::Condition, |h| h.inner, |w| {
    Condition { inner: w, lock: OnceCell::new() }
});

/// Python's `multiprocessing.Barrier`.
///
/// ```no_run
/// let b = mp::Barrier::new(1);
/// assert_eq!(b.wait(None).unwrap(), 0);
/// ```
pub struct Barrier {
    pub(super) inner: wit::Barrier,
}

impl Barrier {
    /// A barrier for `parties` processes (at least 1).
    pub fn new(parties: u32) -> Barrier {
        Barrier { inner: created("Barrier", wit::Barrier::create(parties.max(1))) }
    }

    /// Waits for every party (at most `timeout`); this party's arrival index.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<u32, Error> {
        Ok(self.inner.wait(self::timeout(timeout))?)
    }

    pub fn abort(&self) -> Result<(), Error> {
        Ok(self.inner.abort()?)
    }

    pub fn reset(&self) -> Result<(), Error> {
        Ok(self.inner.reset()?)
    }

    pub fn parties(&self) -> Result<u32, Error> {
        Ok(self.inner.parties()?)
    }

    pub fn n_waiting(&self) -> Result<u32, Error> {
        Ok(self.inner.n_waiting()?)
    }

    pub fn broken(&self) -> Result<bool, Error> {
        Ok(self.inner.broken()?)
    }
}

handle_serde!("Barrier", Barrier, wit::Barrier, |h| h.inner, |w| Barrier { inner: w });
