//! The mio-aio tour: ONE mio event loop doing file I/O, a socket and a timer at once.
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! It takes no arguments, runs for about half a second and exits 0 once everything has been
//! checked (1, with a message on stderr, if anything went wrong). In one `mio::Poll` loop:
//!
//! * (a) a 50 ms timer: the loop passes the time left until the next tick to `Poll::poll`;
//! * (b) a socket, to which a thread sends three lines;
//! * (c) owned reads (`owned::ReadAt`), one started per tick: each owns the file (an
//!   `Arc<File>`) and its buffer, and gives the buffer back with its result;
//! * (d) a write with the 2.0 API (`WriteAt`, its buffer borrowed from a local that outlives
//!   it), then an owned fsync.
//!
//! Each file operation is an event source with its own token: a read that misses the page cache
//! never blocks the loop. `Poll::poll` may fail with `Interrupted` (Linux, io_uring): the loop
//! polls again. More: `examples/http_server.rs` and `examples/copy.rs` (batches).

use std::{
    error::Error,
    fs::File,
    io::{ErrorKind, Read, Write},
    os::{fd::AsFd, unix::fs::FileExt, unix::net},
    sync::Arc,
    time::{Duration, Instant},
};

use mio::{net::UnixStream, Events, Interest, Poll, Token};
use mio_aio::{owned, AioFsyncMode, Errno, SourceApi, WriteAt};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const FILE_LEN: usize = 256 * 1024 + 123;
const TICK: Duration = Duration::from_millis(50);
const READS: usize = 8;
const CHUNK: usize = 4096;
const SOCKET: Token = Token(0);
const WRITE: Token = Token(1);
const FSYNC: Token = Token(2);
const FIRST_READ: usize = 10;

macro_rules! log {
    ($start:expr, $($arg:tt)*) => {
        println!("[{:6.3}s] {}", $start.elapsed().as_secs_f64(), format_args!($($arg)*))
    };
}

fn main() {
    if std::env::args().len() > 1 {
        eprintln!("usage: cargo run --example demo   (the demo takes no arguments)");
        std::process::exit(2);
    }
    if let Err(e) = run() {
        eprintln!("demo: error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let start = Instant::now();
    let content: Vec<u8> = (0..FILE_LEN).map(|i| ((i * 31) ^ (i >> 8)) as u8).collect();
    let mut data = tempfile::tempfile()?;
    data.write_all(&content)?;
    let data = Arc::new(data);
    let journal = Arc::new(tempfile::tempfile()?);
    #[cfg(target_os = "linux")]
    let backend = mio_aio::backend()?.to_string();
    #[cfg(not(target_os = "linux"))]
    let backend = "POSIX AIO";
    log!(start, "mio-aio backend: {backend}");
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(64);

    // (b) The socket, and a thread at its other end, which closes it after three lines.
    let (ours, mut theirs) = net::UnixStream::pair()?;
    ours.set_nonblocking(true)?;
    let mut socket = UnixStream::from_std(ours);
    let registry = poll.registry();
    registry.register(&mut socket, SOCKET, Interest::READABLE)?;
    let peer = std::thread::spawn(move || {
        (1..=3).try_for_each(|i| {
            std::thread::sleep(TICK + TICK / 5);
            theirs.write_all(format!("hello {i}\n").as_bytes())
        })
    });
    let (mut messages, mut socket_open) = (0, true);

    // (c) The owned reads: read `i` has token `FIRST_READ + i`.
    let offset = |i: usize| i * 30_000 + 7;
    let mut reads: Vec<Option<owned::ReadAt<Arc<File>, Vec<u8>>>> = Vec::new();
    let (mut reads_done, mut read_bytes) = (0, 0);

    // (d) The journal: the write is submitted at tick 2, its fsync once it is done.
    let record = "mio-aio demo: the journal's record\n".repeat(64);
    let mut write = WriteAt::write_at(journal.as_fd(), 0, record.as_bytes(), 0);
    registry.register(&mut write, WRITE, mio_aio::AIO)?;
    let mut write = Box::pin(write); // Pinned once registered: it must not move in flight.
    let (mut fsync, mut synced) = (None, false);
    let (mut ticks, mut interrupted, mut next_tick) = (0, 0, start + TICK);

    while socket_open || reads_done < READS || !synced {
        if start.elapsed() > Duration::from_secs(30) {
            return Err("the demo did not finish within 30 s".into());
        }
        if Instant::now() >= next_tick {
            (ticks, next_tick) = (ticks + 1, Instant::now() + TICK);
            log!(start, "tick {ticks}");
            if reads.len() < READS {
                let (i, buf) = (reads.len(), vec![0; CHUNK]);
                let mut op = owned::ReadAt::read_at(data.clone(), offset(i) as u64, buf, 0);
                let registry = poll.registry();
                registry.register(&mut op, Token(FIRST_READ + i), mio_aio::AIO)?;
                op.submit()?; // No pinning: an owned operation is `Unpin`.
                reads.push(Some(op));
                log!(start, "owned read {i} started at {}", offset(i));
            }
            if ticks == 2 {
                write.as_mut().submit()?;
                log!(
                    start,
                    "write of {} bytes to the journal submitted",
                    record.len()
                );
            }
        }
        let timeout = next_tick.saturating_duration_since(Instant::now());
        match poll.poll(&mut events, Some(timeout)) {
            Err(e) if e.kind() == ErrorKind::Interrupted => interrupted += 1,
            r => r?,
        }
        for event in events.iter() {
            match event.token() {
                SOCKET => loop {
                    let mut buf = [0u8; 256];
                    let n = match socket.read(&mut buf) {
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        r => r?,
                    };
                    if n == 0 {
                        socket_open = false;
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]);
                    messages += text.matches('\n').count();
                    log!(start, "socket: got {:?}", text.trim());
                },
                WRITE if fsync.is_none() => {
                    let n = match write.as_mut().aio_return() {
                        Err(Errno::EINPROGRESS) => continue, // A spurious event.
                        r => r?,
                    };
                    log!(start, "write of {n} bytes done; syncing the journal");
                    let mut op = owned::Fsync::fsync(journal.clone(), AioFsyncMode::O_SYNC, 0);
                    poll.registry().register(&mut op, FSYNC, mio_aio::AIO)?;
                    op.submit()?;
                    fsync = Some(op);
                }
                FSYNC => {
                    // `None`: a spurious event, the fsync is still running.
                    if let Some((r, ())) = fsync.as_mut().and_then(|op| op.take_result()) {
                        r?;
                        log!(start, "fsync of the journal done: the record is on disk");
                        synced = true;
                    }
                }
                Token(t) => {
                    let i = t - FIRST_READ; // The only other tokens registered.
                    let Some((r, buf)) = reads[i].as_mut().and_then(|op| op.take_result()) else {
                        continue;
                    };
                    let n = r?;
                    if n != CHUNK || buf[..] != content[offset(i)..offset(i) + n] {
                        return Err(format!("owned read {i} got wrong data").into());
                    }
                    log!(start, "owned read {i} done: {n} bytes, checked");
                    (reads_done, read_bytes, reads[i]) = (reads_done + 1, read_bytes + n, None);
                }
            }
        }
    }

    peer.join().map_err(|_| "the socket thread panicked")??;
    drop(write); // Ends its borrow of `record`.
    let mut on_disk = vec![0u8; record.len()];
    journal.read_exact_at(&mut on_disk, 0)?;
    if on_disk != record.as_bytes() || journal.metadata()?.len() != record.len() as u64 {
        return Err("the journal does not hold the record".into());
    }
    println!(
        "demo finished OK in {:.2} s: {READS} owned reads ({read_bytes} bytes) verified, \
         write+fsync of {} bytes verified, {messages} socket messages, {ticks} ticks, \
         {interrupted} interrupted polls, backend {backend}",
        start.elapsed().as_secs_f64(),
        record.len(),
    );
    Ok(())
}
