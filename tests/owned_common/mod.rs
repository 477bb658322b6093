//! Helpers shared by the owned-buffer tests (`tests/owned.rs`, `tests/tokio_owned.rs`).
#![allow(dead_code)] // each test binary uses part of it

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use mio_aio::owned::{IoBuf, IoBufMut};

/// A heap buffer that records when it is freed.
#[derive(Debug)]
pub struct Tracked {
    data: Vec<u8>,
    freed: Arc<AtomicBool>,
}

impl Tracked {
    /// A zeroed buffer of `len` bytes, and the flag its drop sets.
    pub fn new(len: usize) -> (Tracked, Arc<AtomicBool>) {
        let freed = Arc::new(AtomicBool::new(false));
        let buf = Tracked {
            data: vec![0u8; len],
            freed: freed.clone(),
        };
        (buf, freed)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.freed.store(true, Ordering::SeqCst);
    }
}

// SAFETY: the bytes are the `Vec`'s heap allocation, which moving `Tracked` does not move and
// which is freed only when `Tracked` is dropped.
unsafe impl IoBuf for Tracked {
    fn stable_ptr(&self) -> *const u8 {
        self.data.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.data.len()
    }
}

// SAFETY: as above; `Tracked` owns the `Vec` exclusively.
unsafe impl IoBufMut for Tracked {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.data.as_mut_ptr()
    }
}
