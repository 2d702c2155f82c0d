//! Python's `multiprocessing.Value` and `Array` of numbers, shared between
//! processes through the host, each with its own `RLock`.

use super::{Error, Lock, wit};
use std::cell::OnceCell;
use std::marker::PhantomData;

/// A number a [`Value`] or [`Array`] can hold: `i64` or `f64`.
pub trait Number: Copy + sealed::Sealed {
    #[doc(hidden)]
    fn to_wit(self) -> wit::Number;
    #[doc(hidden)]
    fn from_wit(n: wit::Number) -> Result<Self, Error>;
    #[doc(hidden)]
    fn numbers(values: Vec<Self>) -> wit::Numbers;
    #[doc(hidden)]
    fn from_numbers(n: wit::Numbers) -> Result<Vec<Self>, Error>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for i64 {}
    impl Sealed for f64 {}
}

impl Number for i64 {
    fn to_wit(self) -> wit::Number {
        wit::Number::Int(self)
    }
    fn from_wit(n: wit::Number) -> Result<i64, Error> {
        match n {
            wit::Number::Int(n) => Ok(n),
            wit::Number::Float(_) => Err(Error::Invalid("a float where an integer was expected".into())),
        }
    }
    fn numbers(values: Vec<i64>) -> wit::Numbers {
        wit::Numbers::Ints(values)
    }
    fn from_numbers(n: wit::Numbers) -> Result<Vec<i64>, Error> {
        match n {
            wit::Numbers::Ints(v) => Ok(v),
            wit::Numbers::Floats(_) => Err(Error::Invalid("floats where integers were expected".into())),
        }
    }
}

impl Number for f64 {
    fn to_wit(self) -> wit::Number {
        wit::Number::Float(self)
    }
    fn from_wit(n: wit::Number) -> Result<f64, Error> {
        match n {
            wit::Number::Int(n) => Ok(n as f64),
            wit::Number::Float(n) => Ok(n),
        }
    }
    fn numbers(values: Vec<f64>) -> wit::Numbers {
        wit::Numbers::Floats(values)
    }
    fn from_numbers(n: wit::Numbers) -> Result<Vec<f64>, Error> {
        match n {
            wit::Numbers::Ints(v) => Ok(v.into_iter().map(|n| n as f64).collect()),
            wit::Numbers::Floats(v) => Ok(v),
        }
    }
}

/// Python's `multiprocessing.Array` of `i64` or `f64`, with an `RLock`.
///
/// ```no_run
/// let a = mp::Array::new(vec![0i64; 4]);
/// a.set(2, 7).unwrap();
/// assert_eq!(a.to_vec().unwrap(), vec![0, 0, 7, 0]);
/// ```
pub struct Array<T> {
    pub(super) inner: wit::SharedArray,
    lock: OnceCell<Lock>,
    item: PhantomData<T>,
}

impl<T: Number> Array<T> {
    pub fn new(values: Vec<T>) -> Array<T> {
        Array {
            inner: super::created("Array", wit::SharedArray::create(&T::numbers(values))),
            lock: OnceCell::new(),
            item: PhantomData,
        }
    }

    pub fn len(&self) -> Result<u32, Error> {
        Ok(self.inner.len()?)
    }

    pub fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.len()? == 0)
    }

    pub fn get(&self, index: u32) -> Result<T, Error> {
        T::from_wit(self.inner.get(index)?)
    }

    pub fn set(&self, index: u32, value: T) -> Result<(), Error> {
        Ok(self.inner.set(index, value.to_wit())?)
    }

    pub fn to_vec(&self) -> Result<Vec<T>, Error> {
        T::from_numbers(self.inner.get_all()?)
    }

    /// The array's lock (an `RLock`), for read-modify-write sequences.
    pub fn get_lock(&self) -> Result<&Lock, Error> {
        if let Some(lock) = self.lock.get() {
            return Ok(lock);
        }
        let lock = Lock { inner: self.inner.get_lock()? };
        Ok(self.lock.get_or_init(|| lock))
    }
}

handle_serde!("Array", Array<T>, wit::SharedArray, |h| h.inner, |w| {
    Array { inner: w, lock: OnceCell::new(), item: PhantomData }
});

/// Python's `multiprocessing.Value`: one `i64` or `f64` in the host, with
/// an `RLock`.
///
/// ```no_run
/// let v = mp::Value::new(0i64);
/// {
///     let _held = v.get_lock().unwrap().lock().unwrap();
///     v.set(v.get().unwrap() + 1).unwrap();
/// }
/// ```
pub struct Value<T>(Array<T>);

impl<T: Number> Value<T> {
    pub fn new(value: T) -> Value<T> {
        Value(Array::new(vec![value]))
    }

    pub fn get(&self) -> Result<T, Error> {
        self.0.get(0)
    }

    pub fn set(&self, value: T) -> Result<(), Error> {
        self.0.set(0, value)
    }

    pub fn get_lock(&self) -> Result<&Lock, Error> {
        self.0.get_lock()
    }
}

handle_serde!("Value", Value<T>, wit::SharedArray, |h| h.0.inner, |w| {
    Value(Array { inner: w, lock: OnceCell::new(), item: PhantomData })
});
