//! How many bytes of sealed-segment data, read by copy for fetches, the
//! broker may hold at once.
//!
//! The active segment is served from its mapping, which costs no memory of
//! the broker's own; a sealed segment is read through io_uring into a buffer
//! that lives until the answer has been written to the client's socket. A
//! client that pipelines fetches and never reads the answers would pin one
//! buffer per fetch; a budget shared by every core bounds the sum, and a
//! read that does not fit is refused (`BUSY`, retriable) rather than waited
//! for, so that slow clients cannot stall the reads of the others.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

/// A shared allowance of bytes. Clones share it.
#[derive(Debug, Clone)]
pub struct ReadBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: usize,
    used: AtomicUsize,
}

impl ReadBudget {
    pub fn new(limit: usize) -> Self {
        ReadBudget {
            inner: Arc::new(Inner {
                limit,
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// Takes `n` bytes if they fit; they return when the charge drops.
    pub fn try_take(&self, n: usize) -> Option<ReadCharge> {
        let mut used = self.inner.used.load(Ordering::Relaxed);
        loop {
            let next = used.checked_add(n).filter(|t| *t <= self.inner.limit)?;
            match self.inner.used.compare_exchange_weak(
                used,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(ReadCharge {
                        inner: self.inner.clone(),
                        n,
                    })
                }
                Err(now) => used = now,
            }
        }
    }

    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Bytes held by reads right now.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }
}

impl PartialEq for ReadBudget {
    /// Budgets are equal when they are the same allowance.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for ReadBudget {}

/// Bytes taken from a [`ReadBudget`], given back on drop.
#[derive(Debug)]
pub struct ReadCharge {
    inner: Arc<Inner>,
    n: usize,
}

impl ReadCharge {
    /// Gives back all but `n` bytes (a read that came back shorter).
    pub fn shrink_to(&mut self, n: usize) {
        if n < self.n {
            self.inner.used.fetch_sub(self.n - n, Ordering::Relaxed);
            self.n = n;
        }
    }

    /// `data`, as `Bytes` that keep this charge until the last clone drops.
    pub fn hold(mut self, data: Vec<u8>) -> Bytes {
        self.shrink_to(data.len());
        Bytes::from_owner(Charged {
            data,
            _charge: self,
        })
    }
}

impl Drop for ReadCharge {
    fn drop(&mut self) {
        self.inner.used.fetch_sub(self.n, Ordering::Relaxed);
    }
}

struct Charged {
    data: Vec<u8>,
    _charge: ReadCharge,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_bounded_and_return_on_drop() {
        let b = ReadBudget::new(100);
        let c1 = b.try_take(60).unwrap();
        assert!(b.try_take(41).is_none());
        let mut c2 = b.try_take(40).unwrap();
        assert_eq!(b.used(), 100);
        c2.shrink_to(10);
        assert_eq!(b.used(), 70);
        let bytes = c1.hold(vec![1; 20]);
        assert_eq!(b.used(), 30);
        let slice = bytes.slice(5..10);
        drop(bytes);
        assert_eq!(b.used(), 30, "a slice keeps the charge");
        drop(slice);
        drop(c2);
        assert_eq!(b.used(), 0);
        assert!(b.try_take(usize::MAX).is_none());
    }
}
