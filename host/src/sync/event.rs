//! `Event`: a flag processes can wait on.

use super::wait_for;
use std::sync::Mutex;
use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Event {
    flag: Mutex<bool>,
    changed: Notify,
}

impl Event {
    pub(crate) fn set(&self, value: bool) {
        *self.flag.lock().unwrap() = value;
        if value {
            self.changed.notify_waiters();
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        *self.flag.lock().unwrap()
    }

    /// Waits until the flag is set; its value when the wait ends.
    pub(crate) async fn wait(&self, timeout: Option<u64>) -> bool {
        wait_for(&self.changed, timeout, || self.is_set().then_some(())).await.is_some()
    }
}
