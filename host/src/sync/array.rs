//! `Value` and `Array`: numbers in the host, with a lock beside them.
//!
//! Each single read or write is atomic; a read-modify-write needs the lock
//! (`get_lock`), as in Python.

use super::{Error, Number, Numbers};
use std::sync::Mutex;

pub(crate) struct Array {
    values: Mutex<Numbers>,
    /// The registry id of the array's `RLock`.
    pub(crate) lock_id: u64,
}

impl Array {
    pub(crate) fn new(values: Numbers, lock_id: u64) -> Array {
        Array { values: Mutex::new(values), lock_id }
    }

    pub(crate) fn len(&self) -> u64 {
        match &*self.values.lock().unwrap() {
            Numbers::Ints(v) => v.len() as u64,
            Numbers::Floats(v) => v.len() as u64,
        }
    }

    pub(crate) fn get(&self, index: u32) -> Result<Number, Error> {
        let values = self.values.lock().unwrap();
        let i = index as usize;
        match &*values {
            Numbers::Ints(v) => v.get(i).map(|&n| Number::Int(n)),
            Numbers::Floats(v) => v.get(i).map(|&n| Number::Float(n)),
        }
        .ok_or_else(|| Error::Invalid(format!("array index {index} out of range")))
    }

    /// Sets one element; an integer is stored in a float array as a float,
    /// a float in an integer array is refused (Python's `TypeError`).
    pub(crate) fn set(&self, index: u32, value: Number) -> Result<(), Error> {
        let mut values = self.values.lock().unwrap();
        let i = index as usize;
        let out_of_range = || Error::Invalid(format!("array index {index} out of range"));
        match (&mut *values, value) {
            (Numbers::Ints(v), Number::Int(n)) => *v.get_mut(i).ok_or_else(out_of_range)? = n,
            (Numbers::Floats(v), Number::Int(n)) => *v.get_mut(i).ok_or_else(out_of_range)? = n as f64,
            (Numbers::Floats(v), Number::Float(n)) => *v.get_mut(i).ok_or_else(out_of_range)? = n,
            (Numbers::Ints(_), Number::Float(_)) => {
                return Err(Error::Invalid("an integer array cannot hold a float".into()));
            }
        }
        Ok(())
    }

    pub(crate) fn get_all(&self) -> Numbers {
        self.values.lock().unwrap().clone()
    }
}
