//! `--verify`: every operation's bytes are checked, not only its byte count.
//!
//! Each in-flight slot of a method (one per unit of queue depth: an operation of the per-op loop,
//! one position of a batch, one tokio task or thread) is a [`Lane`]. With `--verify` the lane
//! picks its blocks from its own residue class (`block ≡ lane mod QD`), so no two operations in
//! flight ever touch one block, and then:
//!
//! * a read's buffer is poisoned before the operation and, once it completed, must hold exactly
//!   the block's content (`pattern`, stamp 0: reads go to the read region, which no write row
//!   touches). A wrong offset, another operation's buffer, a buffer never written (completion
//!   reported early or twice) or a stale one all differ from it;
//! * a write writes the block's pattern with a stamp unique to that write (lane, sequence, and a
//!   random value of the process) and, once it completed, the block is read back with `pread`
//!   and must hold exactly that: a write to the wrong offset, from the wrong buffer, or reported
//!   complete before it happened leaves other bytes there.
//!
//! A mismatch is an error of the point ("verify mismatch: …"), which fails the run. Without
//! `--verify` a lane only picks random blocks of its region.
//!
//! Test hook: with `--verify`, `MIO_AIO_BENCH_FAULT=wrong-offset` sends lane 0's operation
//! number [`FAULT_AT`] to the next block, and `MIO_AIO_BENCH_FAULT=lost-op` skips that operation
//! while the method goes on as if it had completed. Both must fail the point
//! (`scripts/verify_selftest.sh` checks that they do); unset, nothing is injected.

use std::{
    fs::File,
    io,
    os::{fd::BorrowedFd, unix::fs::FileExt},
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

use super::{
    data::Region,
    measure::{AlignedBuf, Rng},
    pattern,
    spec::{RunParams, Workload, BLOCK},
};

/// The test hook's variable.
pub const FAULT_VAR: &str = "MIO_AIO_BENCH_FAULT";

/// The operation of lane 0 the test hook breaks (early enough for the shortest quick point).
pub const FAULT_AT: u64 = 20;

/// A deliberate error, for proving that verification catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The operation goes to the next block.
    WrongOffset,
    /// The operation is not issued; the method carries on as if it had completed.
    LostOp,
}

impl Fault {
    /// The fault the environment asks for (only ever read with `--verify`).
    pub fn from_env() -> io::Result<Option<Fault>> {
        match std::env::var(FAULT_VAR).as_deref() {
            Err(_) | Ok("") => Ok(None),
            Ok("wrong-offset") => Ok(Some(Fault::WrongOffset)),
            Ok("lost-op") => Ok(Some(Fault::LostOp)),
            Ok(other) => Err(io::Error::other(format!(
                "{FAULT_VAR}={other:?}: wrong-offset or lost-op"
            ))),
        }
    }
}

/// A random 64-bit value of this process, top bit set.
fn process_nonce() -> u64 {
    static NONCE: OnceLock<u64> = OnceLock::new();
    *NONCE.get_or_init(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng::new(now ^ u64::from(std::process::id()) << 32).next_u64() | 1 << 63
    })
}

/// One operation a lane is about to do.
#[derive(Clone, Copy, Debug)]
pub struct Planned {
    /// The block whose content is expected afterwards.
    pub block: u64,
    /// Where the operation is issued (the block's offset unless the test hook moved it).
    pub offset: u64,
    /// Set only by the test hook: do not issue the operation.
    pub skip: bool,
    /// The write's stamp (0 for reads).
    stamp: u64,
    seq: u64,
}

/// One in-flight slot of a method: picks the blocks and, with `--verify`, checks the bytes.
#[derive(Debug)]
pub struct Lane {
    region: Region,
    workload: Workload,
    lane: u64,
    lanes: u64,
    seq: u64,
    fault: Option<Fault>,
    /// With `--verify`: a handle to read written blocks back, and two block buffers.
    checker: Option<(File, AlignedBuf, Vec<u8>)>,
    /// Operations whose bytes were checked.
    pub verified: u64,
}

impl Lane {
    /// Lane `lane` of `lanes` (the queue depth) of a point; `fd` is the file the point works
    /// on (read back through it, so in its regime).
    pub fn new(
        params: &RunParams,
        workload: Workload,
        fd: BorrowedFd<'_>,
        lane: usize,
        lanes: usize,
    ) -> io::Result<Lane> {
        let checker = if params.verify {
            let file = File::from(fd.try_clone_to_owned()?);
            Some((file, AlignedBuf::new(BLOCK), vec![0u8; BLOCK]))
        } else {
            None
        };
        let verify = params.verify;
        Ok(Lane {
            region: params.layout().region(workload),
            workload,
            lane: if verify { lane as u64 } else { 0 },
            lanes: if verify { lanes as u64 } else { 1 },
            seq: 0,
            fault: if verify { params.fault } else { None },
            checker,
            verified: 0,
        })
    }

    /// The next operation: a random block of the lane's region.
    #[inline]
    pub fn next(&mut self, rng: &mut Rng) -> Planned {
        self.seq += 1;
        let block = self.region.pick(rng, self.lane, self.lanes);
        let mut op = Planned {
            block,
            offset: block * BLOCK as u64,
            skip: false,
            stamp: 0,
            seq: self.seq,
        };
        if self.checker.is_some() && self.workload == Workload::RandWrite {
            // Unique in this process by (lane, sequence); the process's nonce makes it differ
            // from every earlier run's stamps, so that a lost write cannot find the same bytes
            // left by the same operation of an earlier run. Nonzero: the nonce's top bit.
            op.stamp = process_nonce() ^ ((self.lane + 1) << 40 | self.seq);
        }
        if self.lane == 0 && self.seq == FAULT_AT {
            match self.fault {
                Some(Fault::WrongOffset) => {
                    let last = self.region.first + self.region.blocks - 1;
                    let other = if block < last { block + 1 } else { block - 1 };
                    op.offset = other * BLOCK as u64;
                }
                Some(Fault::LostOp) => op.skip = true,
                None => {}
            }
        }
        op
    }

    /// Before the operation: with `--verify`, poisons a read's buffer or writes the write's
    /// pattern into it (a skipped operation's buffer is left as it is).
    #[inline]
    pub fn prepare(&self, op: &Planned, buf: &mut [u8]) {
        if self.checker.is_none() || op.skip {
            return;
        }
        match self.workload {
            Workload::RandRead => buf.fill(pattern::POISON),
            Workload::RandWrite => pattern::fill(buf, op.block, op.stamp),
        }
    }

    /// After the operation completed: with `--verify`, checks what a read returned in `buf`,
    /// or reads a written block back and checks it.
    #[inline]
    pub fn check(&mut self, op: &Planned, buf: &[u8]) -> io::Result<()> {
        let Some((file, readback, scratch)) = self.checker.as_mut() else {
            return Ok(());
        };
        let got: &[u8] = match self.workload {
            Workload::RandRead => buf,
            Workload::RandWrite => {
                let n = file.read_at(readback.as_mut_slice(), op.block * BLOCK as u64)?;
                if n != BLOCK {
                    return Err(io::Error::other(format!("read-back: {n} bytes")));
                }
                readback.as_slice()
            }
        };
        if !pattern::matches(got, op.block, op.stamp, scratch) {
            let what = match self.workload {
                Workload::RandRead => "a read returned wrong bytes",
                Workload::RandWrite => "a written block reads back wrong",
            };
            return Err(io::Error::other(format!(
                "verify mismatch: {what}: offset {} (block {}), lane {} operation #{}: {}",
                op.block * BLOCK as u64,
                op.block,
                self.lane,
                op.seq,
                pattern::diagnose(got, op.block, op.stamp, scratch)
            )));
        }
        self.verified += 1;
        Ok(())
    }
}
