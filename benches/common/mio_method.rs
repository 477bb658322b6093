//! mio-aio, measured the way an application uses it: one `mio::Poll`, one thread, QD
//! operations in flight.
//!
//! Each in-flight unit (one operation for the per-operation API, one batch for the batch API) is
//! an `async` block that owns its buffer: it creates the operation on that buffer, registers it
//! under its own token, pins and submits it, waits until the loop sees its token, calls
//! `aio_return`, drops the operation and starts the next. Writing the units as `async` blocks is
//! only a way to let each one reuse its buffer without `unsafe`; the "executor" below is the mio
//! event loop itself: it polls a unit exactly when its token comes out of `Poll::poll`.

use std::{
    cell::Cell,
    future::Future,
    io,
    os::fd::{AsFd, BorrowedFd},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll as TaskPoll, Wake, Waker},
    time::{Duration, Instant},
};

use mio::{event, Events, Poll, Registry, Token};
use mio_aio::{Errno, LioCbBuilder, LioOpcode, ReadAt, SourceApi, WriteAt};

use super::{
    data,
    measure::{AlignedBuf, Counter, Phase, PhaseFlag, Rng, Window},
    spec::{MioApi, MioBackend, Point, RunParams, Sample, Workload, BLOCK},
    verify::Lane,
};

/// Runs one point in this process (a child of the benchmark: one backend per process).
pub fn run(
    api: MioApi,
    backend: MioBackend,
    point: &Point,
    params: &RunParams,
) -> io::Result<Sample> {
    backend.select()?;
    let file = data::open(&params.file, point.regime)?;
    let mut poll = Poll::new()?;
    // The units register their operations through a clone of the registry (the same epoll set),
    // while the loop holds `poll` mutably.
    let registry = poll.registry().try_clone()?;
    let phase = PhaseFlag::default();
    let ctx = Ctx {
        fd: file.as_fd(),
        registry: &registry,
        phase: &phase,
        params,
        workload: point.workload,
        qd: point.qd,
        spurious: Cell::new(0),
    };
    let mut buffers = AlignedBuf::new(point.qd * BLOCK);
    let buffers = buffers.as_mut_slice();
    let mut units: Vec<Unit<'_>> = Vec::new();
    match api {
        MioApi::PerOp => {
            for (i, buf) in buffers.chunks_exact_mut(BLOCK).enumerate() {
                units.push(Box::pin(ctx.single_ops(Token(i), buf, i)));
            }
        }
        MioApi::Batch => units.push(Box::pin(ctx.batches(Token(0), buffers, 0, 0))),
        MioApi::HalfBatches => {
            let half = point.qd / 2;
            let (a, b) = buffers.split_at_mut(half * BLOCK);
            units.push(Box::pin(ctx.batches(Token(0), a, 0, 0)));
            units.push(Box::pin(ctx.batches(Token(1), b, 1, half)));
        }
        MioApi::Tokio => return Err(io::Error::other("the tokio layer runs in tokio_method")),
    }
    let (window, counters, interrupted) = event_loop(&mut poll, units, &phase, params)?;
    let mut sample = window.sample(counters);
    sample.interrupted = Some(interrupted);
    sample.spurious = Some(ctx.spurious.get());
    Ok(sample)
}

/// One in-flight unit: finishes with its counter once the window has closed.
type Unit<'a> = Pin<Box<dyn Future<Output = io::Result<Counter>> + 'a>>;

/// What the units share.
struct Ctx<'a> {
    fd: BorrowedFd<'a>,
    registry: &'a Registry,
    phase: &'a PhaseFlag,
    params: &'a RunParams,
    workload: Workload,
    qd: usize,
    /// Events that came while their operation was still in flight (mio allows spurious events).
    spurious: Cell<u64>,
}

impl Ctx<'_> {
    /// Lane `lane` of the point (see `verify`).
    fn lane(&self, lane: usize) -> io::Result<Lane> {
        Lane::new(self.params, self.workload, self.fd, lane, self.qd)
    }

    /// One operation at a time on `buf`, each a new `Source` registered under `token`; the
    /// operations of lane `lane`.
    async fn single_ops(&self, token: Token, buf: &mut [u8], lane: usize) -> io::Result<Counter> {
        let mut counter = Counter::new(self.qd);
        let mut rng = Rng::new(lane as u64);
        let mut lane = self.lane(lane)?;
        loop {
            let planned = lane.next(&mut rng);
            let started = counter.start();
            lane.prepare(&planned, buf);
            if !planned.skip {
                let n = match self.workload {
                    Workload::RandRead => {
                        let op = ReadAt::read_at(self.fd, planned.offset, buf, 0);
                        self.complete(token, op).await?
                    }
                    Workload::RandWrite => {
                        let op = WriteAt::write_at(self.fd, planned.offset, buf, 0);
                        self.complete(token, op).await?
                    }
                };
                if n != BLOCK {
                    return Err(io::Error::other(format!("short transfer: {n} bytes")));
                }
            }
            lane.check(&planned, buf)?;
            if !counter.done(self.phase, 1, started) {
                counter.verified = lane.verified;
                return Ok(counter);
            }
        }
    }

    /// Registers, pins and submits `op`, waits for its event, and returns its result (the
    /// operation is dropped on return, which ends its borrow of the buffer).
    async fn complete<S>(&self, token: Token, mut op: S) -> io::Result<S::Output>
    where
        S: SourceApi + event::Source,
    {
        // Register first, then pin: the operation must not move once submitted.
        self.registry.register(&mut op, token, mio_aio::AIO)?;
        let mut op = Box::pin(op);
        op.as_mut().submit()?;
        loop {
            NextEvent::default().await;
            match op.as_mut().aio_return() {
                Err(Errno::EINPROGRESS) => self.count_spurious(),
                r => return r.map_err(io::Error::from),
            }
        }
    }

    /// Batches of `bufs.len() / BLOCK` operations, one after the other, registered under
    /// `token`; position `j` of a batch is lane `first_lane + j`.
    async fn batches(
        &self,
        token: Token,
        bufs: &mut [u8],
        seed: u64,
        first_lane: usize,
    ) -> io::Result<Counter> {
        let n = bufs.len() / BLOCK;
        let mut counter = Counter::new(self.qd);
        let mut rng = Rng::new(seed.wrapping_add(1000));
        let mut lanes = (first_lane..first_lane + n)
            .map(|l| self.lane(l))
            .collect::<io::Result<Vec<_>>>()?;
        let mut planned = Vec::with_capacity(n);
        loop {
            let started = counter.start();
            planned.clear();
            planned.extend(lanes.iter_mut().map(|l| l.next(&mut rng)));
            let mut builder = LioCbBuilder::with_capacity(n);
            let mut emplaced = 0;
            for ((buf, op), lane) in bufs.chunks_exact_mut(BLOCK).zip(&planned).zip(&lanes) {
                lane.prepare(op, buf);
                if op.skip {
                    continue;
                }
                emplaced += 1;
                builder = match self.workload {
                    Workload::RandRead => {
                        builder.emplace_mut_slice(self.fd, op.offset, buf, 0, LioOpcode::LIO_READ)
                    }
                    Workload::RandWrite => {
                        builder.emplace_slice(self.fd, op.offset, buf, 0, LioOpcode::LIO_WRITE)
                    }
                };
            }
            if emplaced > 0 {
                self.complete_batch(token, builder).await?;
            } else {
                drop(builder); // (only the test hook skips a whole batch)
            }
            for ((buf, op), lane) in bufs.chunks_exact(BLOCK).zip(&planned).zip(&mut lanes) {
                lane.check(op, buf)?;
            }
            if !counter.done(self.phase, n as u64, started) {
                counter.verified = lanes.iter().map(|l| l.verified).sum();
                return Ok(counter);
            }
        }
    }

    /// Registers and submits the batch `builder` holds, waits for its event and checks that
    /// every operation moved one block (the batch is dropped on return, which ends its borrows
    /// of the buffers).
    async fn complete_batch(&self, token: Token, builder: LioCbBuilder<'_>) -> io::Result<()> {
        let mut batch = builder.finish();
        self.registry.register(&mut batch, token, mio_aio::LIO)?;
        batch
            .submit()
            .map_err(|e| io::Error::other(format!("batch submit: {e}")))?;
        loop {
            NextEvent::default().await;
            if !batch.in_progress() {
                break;
            }
            self.count_spurious();
        }
        let bad = batch.into_results(|results| {
            results
                .filter(|r| r.result != Ok(BLOCK as isize))
                .map(|r| r.result)
                .next()
        });
        match bad {
            Some(r) => Err(io::Error::other(format!("batch operation: {r:?}"))),
            None => Ok(()),
        }
    }

    fn count_spurious(&self) {
        if self.phase.get() == Phase::Measure {
            self.spurious.set(self.spurious.get() + 1);
        }
    }
}

/// Pending once, ready the next time: the unit is polled again only when its token has come.
#[derive(Default)]
struct NextEvent {
    waited: bool,
}

impl Future for NextEvent {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> TaskPoll<()> {
        if self.waited {
            TaskPoll::Ready(())
        } else {
            self.waited = true;
            TaskPoll::Pending
        }
    }
}

/// Units are woken by their tokens, never through a `Waker`.
struct NoWake;

impl Wake for NoWake {
    fn wake(self: Arc<Self>) {}
}

/// The mio event loop: polls unit `i` whenever token `i` comes, opens and closes the timed
/// window, counts interrupted waits, and returns once every unit has finished.
fn event_loop(
    poll: &mut Poll,
    units: Vec<Unit<'_>>,
    phase: &PhaseFlag,
    params: &RunParams,
) -> io::Result<(Window, Vec<Counter>, u64)> {
    const DRAIN_LIMIT: Duration = Duration::from_secs(30);
    let mut units = Units::new(units);
    let mut events = Events::with_capacity(1024);
    for i in 0..units.futures.len() {
        units.step(i)?;
    }
    let warmup_end = Instant::now() + Duration::from_secs_f64(params.warmup);
    let mut window: Option<(Window, Instant)> = None;
    let mut interrupted = 0;
    loop {
        let now = Instant::now();
        let timeout = match (phase.get(), window.as_mut()) {
            (Phase::Warmup, _) if now >= warmup_end => {
                let end = now + Duration::from_secs_f64(params.secs);
                window = Some((Window::open(phase), end));
                continue;
            }
            (Phase::Warmup, _) => warmup_end - now,
            (Phase::Measure, Some((w, end))) if now >= *end => {
                w.close(phase);
                continue;
            }
            (Phase::Measure, Some((_, end))) => *end - now,
            _ if units.live == 0 => break,
            _ => DRAIN_LIMIT,
        };
        match poll.poll(&mut events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if phase.get() == Phase::Measure {
                    interrupted += 1;
                }
                continue;
            }
            r => r?,
        }
        if events.is_empty() && timeout == DRAIN_LIMIT {
            return Err(io::Error::other("no completion for 30 s"));
        }
        for ev in events.iter() {
            units.step(ev.token().0)?;
        }
    }
    let (window, _) = window.expect("the window was opened");
    Ok((window, units.into_counters(), interrupted))
}

/// The units of a run and what they returned.
struct Units<'a> {
    futures: Vec<Unit<'a>>,
    finished: Vec<Option<Counter>>,
    live: usize,
    waker: Waker,
}

impl<'a> Units<'a> {
    fn new(futures: Vec<Unit<'a>>) -> Self {
        Units {
            finished: futures.iter().map(|_| None).collect(),
            live: futures.len(),
            futures,
            waker: Waker::from(Arc::new(NoWake)),
        }
    }

    /// Lets unit `i` go on after its token has come.
    fn step(&mut self, i: usize) -> io::Result<()> {
        if self.finished[i].is_none() {
            let mut cx = Context::from_waker(&self.waker);
            if let TaskPoll::Ready(r) = self.futures[i].as_mut().poll(&mut cx) {
                self.finished[i] = Some(r?);
                self.live -= 1;
            }
        }
        Ok(())
    }

    fn into_counters(self) -> Vec<Counter> {
        drop(self.futures);
        self.finished
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect()
    }
}
