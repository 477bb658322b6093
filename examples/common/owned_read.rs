//! `OwnedRead`: a file read that owns its buffer, shared by the demo and the file server.
#![allow(dead_code)] // each example uses part of it

use std::{io, os::fd::BorrowedFd, pin::Pin};

use mio::{Registry, Token};
use mio_aio::{Errno, ReadAt, SourceApi};

/// A file read that owns its buffer, so that it can outlive the code that started it.
///
/// mio-aio operations borrow their buffers (a `ReadAt<'a>` holds a `&'a mut [u8]`) and give
/// no way to get a buffer back. That suits a read whose buffer lives in an enclosing scope (like
/// the batch above), but a server starts reads as requests arrive and finishes them in any
/// order, across iterations of its loop, and must then look at the data. So each of its reads
/// owns a heap buffer, lends it to a `ReadAt`, and only touches it again once that operation
/// is complete and dropped.
pub struct OwnedRead<'f> {
    /// The operation; `None` once finished. Always dropped before `buf` is freed or read.
    op: Option<Pin<Box<ReadAt<'f>>>>,
    /// The buffer `op` reads into, from `Box::into_raw`; freed in `Drop`.
    buf: *mut [u8],
    /// Where in the file the read starts.
    pub offset: u64,
    /// Once finished: the byte count, or the error.
    len: usize,
    error: Option<Errno>,
}

impl<'f> OwnedRead<'f> {
    /// Registers a read of `len` bytes at `offset` with token `token`, and submits it.
    pub fn start(
        registry: &Registry,
        token: Token,
        fd: BorrowedFd<'f>,
        offset: u64,
        len: usize,
    ) -> io::Result<Self> {
        let buf = Box::into_raw(vec![0u8; len].into_boxed_slice());
        let mut read = OwnedRead {
            op: None,
            buf,
            offset,
            len: 0,
            error: None,
        };
        // SAFETY: `buf` is a live allocation that this `OwnedRead` owns alone. The only
        // reference made to it is handed to the `ReadAt`, which is stored in `read.op` at once;
        // `buf` is not used again until that operation has been dropped (`finish`, `Drop`), and
        // dropping a mio-aio operation waits until the kernel is done with the buffer.
        let slice: &'f mut [u8] = unsafe { &mut *buf };
        let mut op = ReadAt::read_at(fd, offset, slice, 0);
        // Register first, then pin: the operation must not move once submitted.
        let registered = registry.register(&mut op, token, mio_aio::AIO);
        let op = read.op.insert(Box::pin(op));
        registered?;
        op.as_mut().submit()?;
        Ok(read)
    }

    /// Once the read's event has arrived: the bytes read, or the error. `None` while the read
    /// is still in flight.
    pub fn finish(&mut self) -> Option<io::Result<&[u8]>> {
        if let Some(op) = self.op.as_mut() {
            match op.as_mut().aio_return() {
                Err(Errno::EINPROGRESS) => return None,
                Ok(n) => self.len = n,
                Err(e) => self.error = Some(e),
            }
            // The kernel is done with the buffer: end the operation's borrow of it.
            self.op = None;
        }
        if let Some(e) = self.error {
            return Some(Err(e.into()));
        }
        // SAFETY: the operation that borrowed the buffer is gone (`op` is `None`), so this
        // shared reference is the only one, and it lives no longer than `&self`.
        let buf: &[u8] = unsafe { &*self.buf };
        Some(Ok(&buf[..self.len.min(buf.len())]))
    }
}

impl Drop for OwnedRead<'_> {
    fn drop(&mut self) {
        // If the read is still in flight, this cancels it and waits for the kernel.
        self.op = None;
        // SAFETY: `buf` came from `Box::into_raw` in `start`, is freed only here, and the
        // operation that borrowed it has just been dropped.
        drop(unsafe { Box::from_raw(self.buf) });
    }
}
