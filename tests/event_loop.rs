//! The loop thread never blocks on storage: with 32 reads outstanding on a filesystem that
//! takes 200 ms per read, a timer and a TCP echo served by the same mio loop stay on time.
//!
//! A loop blocked by a read would be at least 200 ms late; the bound is 50 ms, generous for a
//! noisy 2-core machine. CI runs this file under every backend (`MIO_AIO_BACKEND`).

mod support;

/// A FUSE filesystem as libfuse sets one up by default (`FUSE_ASYNC_DIO`), files served with
/// direct I/O, so every read reaches the filesystem and takes 200 ms.
#[cfg(target_os = "linux")]
#[test]
fn slow_reads_do_not_block_timer_or_socket() {
    run_loop(support::fuse::SlowFsOptions::default());
}

/// A FUSE filesystem whose direct I/O is synchronous (no `FUSE_ASYNC_DIO`): io_uring would run
/// each read inline in `io_uring_enter`, so the per-file policy must queue them with
/// `IOSQE_ASYNC` (and kernel AIO hand them to workers) from the first one, with no setting.
#[cfg(target_os = "linux")]
#[test]
fn slow_synchronous_direct_io_does_not_block() {
    run_loop(support::fuse::SlowFsOptions {
        async_dio: false,
        ..Default::default()
    });
}

#[cfg(target_os = "linux")]
fn run_loop(options: support::fuse::SlowFsOptions) {
    use std::{
        io::{ErrorKind, Read, Write},
        net::TcpStream,
        os::fd::AsFd,
        time::{Duration, Instant},
    };

    use mio::{net::TcpListener, Events, Interest, Poll, Token};
    use mio_aio::{ReadAt, SourceApi};
    use support::fuse::{expected, SlowFs, SlowFsOptions};

    const READS: usize = 32;
    const LEN: usize = 4096;
    // Every bound is a fraction of the injected delay: a stall shows as at least DELAY.
    const DELAY: Duration = Duration::from_millis(200);
    const BOUND: Duration = Duration::from_millis(200 / 4);
    // The client's round trip also waits for the client thread to be scheduled, which on a busy
    // 2-core machine alone has taken half the delay; still below a full stall.
    const ECHO_BOUND: Duration = Duration::from_millis(200 * 3 / 4);
    const TICK: Duration = Duration::from_millis(200 / 10);
    const LISTENER: Token = Token(1000);
    const CONN: Token = Token(1001);

    let Some(fs) = SlowFs::mount_or_skip(SlowFsOptions {
        read_delay: DELAY,
        ..options
    }) else {
        return;
    };
    println!("backend: {}", mio_aio::backend().unwrap());
    let file = std::fs::File::open(fs.path()).unwrap();

    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(128);
    let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .unwrap();

    // The client pings every 5 ms and records each round trip.
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        let mut worst = Duration::ZERO;
        let mut byte = [0u8; 1];
        for i in 0..120u32 {
            let t = Instant::now();
            s.write_all(&[i as u8]).unwrap();
            s.read_exact(&mut byte).unwrap();
            assert_eq!(byte[0], i as u8);
            worst = worst.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(5));
        }
        worst
    });

    let mut bufs = vec![[0u8; LEN]; READS];
    let mut worst_submit = Duration::ZERO;
    let mut ops: Vec<_> = bufs
        .iter_mut()
        .enumerate()
        .map(|(i, buf)| {
            // Distinct offsets, so no read can be served from a cache.
            let mut op = ReadAt::read_at(file.as_fd(), (i * 65536) as u64, buf, 0);
            poll.registry()
                .register(&mut op, Token(i), mio_aio::AIO)
                .unwrap();
            let mut op = Box::pin(op);
            let t = Instant::now();
            op.as_mut().submit().unwrap();
            worst_submit = worst_submit.max(t.elapsed());
            Some(op)
        })
        .collect();
    let started = Instant::now();

    let mut conn: Option<mio::net::TcpStream> = None;
    let mut done = 0;
    let mut next_tick = Instant::now() + TICK;
    let mut worst_tick = Duration::ZERO;
    let mut ticks = 0;
    let mut interrupts = 0;
    while done < READS || !client.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "loop did not finish"
        );
        let timeout = next_tick.saturating_duration_since(Instant::now());
        match poll.poll(&mut events, Some(timeout)) {
            Err(e) if e.kind() == ErrorKind::Interrupted => interrupts += 1,
            r => r.unwrap(),
        }
        let now = Instant::now();
        if now >= next_tick {
            worst_tick = worst_tick.max(now - next_tick);
            ticks += 1;
            next_tick += TICK;
            while next_tick <= now {
                next_tick += TICK;
            }
        }
        for ev in events.iter() {
            match ev.token() {
                LISTENER => {
                    let (mut s, _) = listener.accept().unwrap();
                    poll.registry()
                        .register(&mut s, CONN, Interest::READABLE)
                        .unwrap();
                    conn = Some(s);
                }
                CONN => {
                    let s = conn.as_mut().unwrap();
                    let mut buf = [0u8; 64];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => s.write_all(&buf[..n]).unwrap(),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                Token(i) => {
                    let op = ops[i].as_mut().expect("one event per read");
                    assert_eq!(op.as_mut().aio_return(), Ok(LEN));
                    ops[i] = None;
                    done += 1;
                }
            }
        }
    }
    let reads_took = started.elapsed();
    let worst_echo = client.join().unwrap();
    drop(ops);
    for (i, buf) in bufs.iter().enumerate() {
        assert_eq!(&buf[..], &expected((i * 65536) as u64, LEN)[..], "read {i}");
    }
    println!(
        "worst submit {worst_submit:?}, worst timer lateness {worst_tick:?} over {ticks} ticks, \
         worst echo {worst_echo:?}, 32 reads took {reads_took:?}, {interrupts} interrupted polls"
    );
    assert!(
        fs.stats().reads >= READS as u64,
        "the reads reached the slow filesystem"
    );
    assert!(worst_submit < BOUND, "submit blocked for {worst_submit:?}");
    assert!(worst_tick < BOUND, "timer was {worst_tick:?} late");
    assert!(worst_echo < ECHO_BOUND, "echo took {worst_echo:?}");
}
