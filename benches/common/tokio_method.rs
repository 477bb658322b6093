//! tokio: mio-aio's async layer (`mio_aio::tokio::AioFileExt`) and the baselines a tokio user
//! would otherwise pick, `tokio::fs::File` and `spawn_blocking` + `pread`. All on a
//! multi-thread runtime with the default number of workers; QD tasks run concurrently.

use std::{
    io::{self, SeekFrom},
    os::{fd::AsFd, unix::fs::FileExt},
    sync::Arc,
};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{
    data,
    measure::{AlignedBuf, Counter, PhaseFlag, Rng, Window},
    spec::{MioBackend, Point, Regime, RunError as Error, RunParams, Sample, Workload, BLOCK},
    verify::Lane,
};

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().build()
}

/// QD tasks on one shared `std::fs::File`, each awaiting `AioFileExt::read_at` (or
/// `write_at`) on its own aligned buffer, one operation after another.
#[cfg(feature = "tokio")]
pub fn run_aio(backend: MioBackend, point: &Point, params: &RunParams) -> Result<Sample, Error> {
    use mio_aio::tokio::AioFileExt;

    backend.select()?;
    run_tasks(
        point,
        params,
        |file, workload, mut buf, offset| async move {
            let n = match workload {
                Workload::RandRead => {
                    AioFileExt::read_at(&*file, buf.as_mut_slice(), offset).await?
                }
                Workload::RandWrite => AioFileExt::write_at(&*file, buf.as_slice(), offset).await?,
            };
            Ok((buf, n))
        },
    )
}

/// Without the `tokio` feature the layer does not exist: its rows say so.
#[cfg(not(feature = "tokio"))]
pub fn run_aio(_: MioBackend, _: &Point, _: &RunParams) -> Result<Sample, Error> {
    Err(Error::NotApplicable("needs --features tokio".into()))
}

/// QD tasks, each with its own `tokio::fs::File` (its own file position): `seek`, then
/// `read_exact` or `write_all`.
pub fn run_fs(point: &Point, params: &RunParams) -> Result<Sample, Error> {
    let rt = runtime()?;
    let phase = Arc::new(PhaseFlag::default());
    let mut files = Vec::new();
    for _ in 0..point.qd {
        let mut o = tokio::fs::OpenOptions::new();
        o.read(true).write(true);
        if point.regime == Regime::Direct {
            o.custom_flags(data::O_DIRECT);
        }
        files.push(rt.block_on(o.open(&params.file))?);
    }
    if point.regime == Regime::Direct {
        // tokio::fs::File reads and writes through its own buffer, which is not aligned: try
        // once before spending a whole point on it.
        let probe = rt.block_on(files[0].read(&mut [0u8; BLOCK]));
        if let Err(e) = probe {
            return Err(match e.raw_os_error() {
                Some(libc::EINVAL) => Error::NotApplicable("EINVAL".into()),
                _ => Error::Io(e),
            });
        }
    }
    let tasks: Vec<_> = files
        .into_iter()
        .enumerate()
        .map(|(i, mut file)| {
            let (phase, workload, region, qd) = (
                phase.clone(),
                point.workload,
                params.layout().region(point.workload),
                point.qd,
            );
            rt.spawn(async move {
                let mut counter = Counter::new(qd);
                let mut rng = Rng::new(i as u64);
                let mut buf = vec![0x5a_u8; BLOCK];
                loop {
                    let started = counter.start();
                    let offset = region.pick(&mut rng, 0, 1) * BLOCK as u64;
                    file.seek(SeekFrom::Start(offset)).await?;
                    match workload {
                        Workload::RandRead => drop(file.read_exact(&mut buf).await?),
                        Workload::RandWrite => file.write_all(&buf).await?,
                    }
                    if !counter.done(&phase, 1, started) {
                        file.flush().await?;
                        return io::Result::Ok(counter);
                    }
                }
            })
        })
        .collect();
    let (window, counters) = time_tasks(&rt, &phase, params, tasks)?;
    let mut counters_ok = Vec::new();
    for c in counters {
        match c {
            Ok(c) => counters_ok.push(c),
            // tokio::fs::File reads and writes through its own unaligned buffer.
            Err(e) if point.regime == Regime::Direct && e.raw_os_error() == Some(libc::EINVAL) => {
                return Err(Error::NotApplicable("EINVAL".into()))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(window.sample(counters_ok))
}

/// QD tasks, each sending `pread`/`pwrite` calls on a shared `std::fs::File` to tokio's
/// blocking pool with `spawn_blocking`, one at a time.
pub fn run_spawn_blocking(point: &Point, params: &RunParams) -> Result<Sample, Error> {
    run_tasks(
        point,
        params,
        |file, workload, mut buf, offset| async move {
            tokio::task::spawn_blocking(move || {
                let n = match workload {
                    Workload::RandRead => file.read_at(buf.as_mut_slice(), offset),
                    Workload::RandWrite => file.write_at(buf.as_slice(), offset),
                };
                n.map(|n| (buf, n))
            })
            .await
            .map_err(io::Error::other)?
        },
    )
}

/// Runs QD tasks on a multi-thread runtime (default workers, I/O enabled), each its own
/// aligned buffer, calling `op(file, workload, buffer, offset)` one operation after another
/// on one shared file until the window closes. `op` gives the buffer back with the count.
fn run_tasks<F, Fut>(point: &Point, params: &RunParams, op: F) -> Result<Sample, Error>
where
    F: Fn(Arc<std::fs::File>, Workload, AlignedBuf, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = io::Result<(AlignedBuf, usize)>> + Send,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()?;
    let phase = Arc::new(PhaseFlag::default());
    let file = Arc::new(data::open(&params.file, point.regime)?);
    let tasks: Vec<_> = (0..point.qd)
        .map(|i| {
            let (phase, file, op) = (phase.clone(), file.clone(), op.clone());
            let (workload, qd) = (point.workload, point.qd);
            let lane = Lane::new(params, workload, file.as_fd(), i, qd);
            rt.spawn(async move {
                let mut counter = Counter::new(qd);
                let mut rng = Rng::new(i as u64);
                let mut buf = AlignedBuf::new(BLOCK);
                let mut lane = lane?;
                loop {
                    let started = counter.start();
                    let planned = lane.next(&mut rng);
                    lane.prepare(&planned, buf.as_mut_slice());
                    if !planned.skip {
                        let (b, n) = op(file.clone(), workload, buf, planned.offset).await?;
                        buf = b;
                        if n != BLOCK {
                            return Err(io::Error::other(format!("short transfer: {n} bytes")));
                        }
                    }
                    lane.check(&planned, buf.as_slice())?;
                    if !counter.done(&phase, 1, started) {
                        counter.verified = lane.verified;
                        return io::Result::Ok(counter);
                    }
                }
            })
        })
        .collect();
    let (window, counters) = time_tasks(&rt, &phase, params, tasks)?;
    let counters = counters.into_iter().collect::<io::Result<Vec<_>>>()?;
    Ok(window.sample(counters))
}

/// Runs the timed window over the running `tasks`, then collects what each returned.
fn time_tasks(
    rt: &tokio::runtime::Runtime,
    phase: &PhaseFlag,
    params: &RunParams,
    tasks: Vec<tokio::task::JoinHandle<io::Result<Counter>>>,
) -> io::Result<(Window, Vec<io::Result<Counter>>)> {
    let window = Window::run_timed(phase, params);
    let counters = rt.block_on(async {
        let mut v = Vec::new();
        for t in tasks {
            v.push(t.await.map_err(io::Error::other)?);
        }
        io::Result::Ok(v)
    })?;
    Ok((window, counters))
}
