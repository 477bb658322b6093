//! The kernel AIO engine (placeholder until the real one lands).

use std::{io, sync::Arc};

use nix::{errno::Errno, sys::aio::AioCancelStat};

use super::driver::Completion;

#[derive(Debug)]
pub(crate) struct Kaio {}

impl Kaio {
    pub(crate) fn new(_max_in_flight: usize) -> io::Result<Kaio> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "kernel AIO engine not built yet"))
    }
    pub(crate) fn submit(&self, _batch: &[Arc<Completion>]) -> Result<usize, Errno> {
        Err(Errno::ENOSYS)
    }
    pub(crate) fn reap(&self) {}
    pub(crate) fn wait(&self, _c: &Completion) {}
    pub(crate) fn cancel(&self, _c: &Arc<Completion>) -> AioCancelStat {
        AioCancelStat::AioNotCanceled
    }
}
