//! The plain-threads baseline: QD threads, each a loop of `pread` (or `pwrite`) on one shared
//! file.

use std::{
    io,
    os::{fd::AsFd, unix::fs::FileExt},
};

use super::{
    data,
    measure::{AlignedBuf, Counter, PhaseFlag, Rng, Window},
    spec::{Point, RunParams, Sample, Workload, BLOCK},
    verify::Lane,
};

pub fn run(point: &Point, params: &RunParams) -> io::Result<Sample> {
    let file = data::open(&params.file, point.regime)?;
    let phase = PhaseFlag::default();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..point.qd)
            .map(|i| {
                let (file, phase) = (&file, &phase);
                s.spawn(move || -> io::Result<Counter> {
                    let mut counter = Counter::new(point.qd);
                    let mut rng = Rng::new(i as u64);
                    let mut buf = AlignedBuf::new(BLOCK);
                    let mut lane = Lane::new(params, point.workload, file.as_fd(), i, point.qd)?;
                    loop {
                        let started = counter.start();
                        let planned = lane.next(&mut rng);
                        lane.prepare(&planned, buf.as_mut_slice());
                        if !planned.skip {
                            let offset = planned.offset;
                            let n = match point.workload {
                                Workload::RandRead => file.read_at(buf.as_mut_slice(), offset)?,
                                Workload::RandWrite => file.write_at(buf.as_slice(), offset)?,
                            };
                            if n != BLOCK {
                                return Err(io::Error::other("short transfer"));
                            }
                        }
                        lane.check(&planned, buf.as_slice())?;
                        if !counter.done(phase, 1, started) {
                            counter.verified = lane.verified;
                            return Ok(counter);
                        }
                    }
                })
            })
            .collect();
        let window = Window::run_timed(&phase, params);
        let mut counters = Vec::new();
        for w in workers {
            counters.push(w.join().expect("worker panicked")?);
        }
        Ok(window.sample(counters))
    })
}
