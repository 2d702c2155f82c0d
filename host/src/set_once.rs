//! A value set once, which threads wait for (blocking) and tasks await: a
//! process's end, a pool task's result.
//!
//! The setter wakes the waiters only when there are some: a condition
//! variable's notify is a system call (a futex wake) even with nobody
//! waiting, and most values are set before anyone waits for them, or with
//! nobody ever waiting. No wake-up is lost: a waiter finds the value unset
//! and counts itself as waiting in one hold of the lock, and the setter
//! sets the value and reads the counts in one hold of the same lock. If the
//! setter holds it first, the waiter finds the value and does not wait; if
//! the waiter does, the setter finds it counted, and by then the waiter
//! can be woken: a thread joins the condition variable's queue as it lets
//! the lock go (atomically), and a task has enabled its `Notified` before
//! it takes the lock. A waiter uncounts itself (under the lock) when it
//! leaves, however it leaves; a notify for one that has just left is a
//! spare one, harmless.
//!
//! A thread that finds the value unset first watches it for a moment
//! ([`crate::watch`]) before it sleeps: a short process (a trivial one on
//! the thread backend ends tens of microseconds after its start) is then
//! seen ending by a thread still awake, where a sleeping one's cpu would
//! first have to be woken.

use crate::watch::{WATCH, watch};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

pub(crate) struct SetOnce<T> {
    state: Mutex<State<T>>,
    /// For threads in [`wait`](SetOnce::wait).
    set: Condvar,
    /// For tasks in [`wait_async`](SetOnce::wait_async).
    notify: tokio::sync::Notify,
    /// Set (under the lock) with the value: what a watching thread reads.
    is_set: AtomicBool,
    /// Threads watching for the value in [`wait`](SetOnce::wait), before
    /// they would sleep.
    watching: AtomicUsize,
}

struct State<T> {
    value: Option<T>,
    /// Threads in [`SetOnce::wait`], between finding the value unset and
    /// waking.
    blocked: usize,
    /// Tasks in [`SetOnce::wait_async`], likewise.
    awaiting: usize,
}

impl<T> Default for SetOnce<T> {
    fn default() -> SetOnce<T> {
        SetOnce {
            state: Mutex::new(State { value: None, blocked: 0, awaiting: 0 }),
            set: Condvar::new(),
            notify: tokio::sync::Notify::new(),
            is_set: AtomicBool::new(false),
            watching: AtomicUsize::new(0),
        }
    }
}

impl<T> SetOnce<T> {
    /// Sets the value, unless it is set (the first value stays); whether it
    /// did.
    pub(crate) fn set(&self, value: T) -> bool {
        self.set_then(value, || ())
    }

    /// [`set`](Self::set), with `before_waking` run once the value is set and
    /// before any waiter wakes: what a woken waiter must find done.
    pub(crate) fn set_then(&self, value: T, before_waking: impl FnOnce()) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.value.is_some() {
            return false;
        }
        state.value = Some(value);
        self.is_set.store(true, Ordering::Release);
        let (blocked, awaiting) = (state.blocked, state.awaiting);
        drop(state);
        before_waking();
        if blocked > 0 {
            self.set.notify_all();
        }
        if awaiting > 0 {
            self.notify.notify_waiters();
        }
        true
    }

    pub(crate) fn is_set(&self) -> bool {
        self.is_set.load(Ordering::Acquire)
    }

    /// Whether a thread is watching for the value this moment (it sees it
    /// sooner if the setter then offers it the cpu they may share).
    pub(crate) fn is_watched(&self) -> bool {
        self.watching.load(Ordering::Acquire) > 0
    }

    /// Blocks until the value is set or `timeout` passes; whether it is set.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> bool {
        // A timeout too long to add to the clock is as good as none.
        let now = Instant::now();
        let deadline = timeout.and_then(|t| now.checked_add(t));
        // Watching decides nothing: what follows finds the value or sleeps.
        self.watching.fetch_add(1, Ordering::AcqRel);
        watch(deadline.map_or(now + WATCH, |deadline| deadline.min(now + WATCH)), || self.is_set().then_some(()));
        self.watching.fetch_sub(1, Ordering::AcqRel);
        let mut state = self.state.lock().unwrap();
        if state.value.is_some() {
            return true;
        }
        state.blocked += 1;
        while state.value.is_none() {
            state = match deadline {
                None => self.set.wait(state).unwrap(),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    self.set.wait_timeout(state, left).unwrap().0
                }
            };
        }
        state.blocked -= 1;
        state.value.is_some()
    }

    /// [`wait`](Self::wait), without blocking a thread.
    pub(crate) async fn wait_async(&self, timeout: Option<Duration>) -> bool {
        match timeout {
            None => {
                self.until_set().await;
                true
            }
            Some(t) => tokio::time::timeout(t, self.until_set()).await.is_ok(),
        }
    }

    async fn until_set(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut state = self.state.lock().unwrap();
            if state.value.is_some() {
                return;
            }
            state.awaiting += 1;
        }
        let _counted = Awaiting(self);
        // Woken only once the value is set: `notify_waiters` is called
        // after it is, and only then.
        notified.await;
    }
}

impl<T: Clone> SetOnce<T> {
    pub(crate) fn get(&self) -> Option<T> {
        self.state.lock().unwrap().value.clone()
    }
}

/// A task counted in [`State::awaiting`], uncounted however its wait ends
/// (its future may be dropped: a timeout, a terminate).
struct Awaiting<'a, T>(&'a SetOnce<T>);

impl<T> Drop for Awaiting<'_, T> {
    fn drop(&mut self) {
        self.0.state.lock().unwrap().awaiting -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A thread watching for the value is seen as watching (its setter
    /// offers it the cpu), and no longer once it has the value.
    #[test]
    fn a_watching_waiter_is_seen_until_it_has_the_value() {
        let once = Arc::new(SetOnce::<u8>::default());
        assert!(!once.is_watched());
        let waiter = {
            let once = once.clone();
            // Short waits, over and over: each begins with a watch.
            std::thread::spawn(move || while !once.wait(Some(Duration::from_millis(1))) {})
        };
        while !once.is_watched() {
            std::hint::spin_loop();
        }
        assert!(once.set(1));
        waiter.join().unwrap();
        assert!(!once.is_watched());
    }

    /// Many threads and tasks wait while the value is set: every one wakes
    /// (a lost wake-up would hang this test).
    #[test]
    fn every_waiter_wakes() {
        for _ in 0..50 {
            let once = Arc::new(SetOnce::default());
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let once = once.clone();
                    std::thread::spawn(move || once.wait(None))
                })
                .collect();
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    let once = once.clone();
                    runtime.spawn(async move { once.wait_async(None).await })
                })
                .collect();
            assert!(once.set(7));
            assert!(!once.set(8), "the first value stays");
            for thread in threads {
                assert!(thread.join().unwrap());
            }
            for task in tasks {
                assert!(runtime.block_on(task).unwrap());
            }
            assert_eq!(once.get(), Some(7));
        }
    }

    #[test]
    fn a_wait_times_out_uncounted() {
        let once = SetOnce::<u8>::default();
        assert!(!once.wait(Some(Duration::from_millis(1))));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        assert!(!runtime.block_on(once.wait_async(Some(Duration::from_millis(1)))));
        let state = once.state.lock().unwrap();
        assert_eq!((state.blocked, state.awaiting), (0, 0));
    }
}
