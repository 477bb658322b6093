//! The mio-aio demo: ONE mio event loop that does file I/O, networking and timing at once.
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! It needs no arguments, runs for about a second, and exits 0 once everything has been
//! checked (1, with a message on stderr, if anything went wrong). It creates a temporary file
//! of known content, then starts one `mio::Poll` loop that, at the same time:
//!
//! * (a) serves a TCP client (a thread of this program) on 127.0.0.1: the client asks for byte
//!   ranges with lines `OFFSET LEN\n`; the server reads each range from the file with a mio-aio
//!   [`ReadAt`] and answers with an 8-byte big-endian length followed by the bytes (fewer at the
//!   end of the file, none past it);
//! * (b) ticks a 50 ms timer: mio has no timer type, so the loop keeps an [`Instant`] deadline
//!   and passes the time left to [`Poll::poll`] as its timeout;
//! * (c) reads 8 chunks of the file with ONE batch ([`LioCb`]), reported by one event;
//! * (d) writes a record to a second file with a [`WriteAt`], then makes it durable with an
//!   [`Fsync`].
//!
//! The timer starts the batch at tick 2 and the write at tick 4, so the log shows them
//! interleaved with the client's requests.
//!
//! Every file operation is a mio event source with its own token, so a file read that misses
//! the page cache never blocks the loop: its token simply comes back from `Poll::poll` when the
//! data is there, like a socket's. The log shows the events in the order they happened. At the
//! end the demo checks what the client and the batch received against the file, and the
//! written record against what was meant to be written, and prints a summary.
//!
//! mio-aio operations borrow their buffers. The batch's and the write's buffers are locals
//! that outlive the loop; the server's reads, though, start and finish at any time, and their
//! data is needed inside the loop, so each owns its buffer (see `OwnedRead` at the end).
//!
//! On Linux, `Poll::poll` may fail with `ErrorKind::Interrupted` when io_uring completes an
//! operation by running work on this thread: the loop counts it and polls again, as mio's own
//! examples do. Set `MIO_AIO_BACKEND=io_uring|kaio|threads` to choose the Linux backend.

use std::{
    collections::VecDeque,
    error::Error,
    fs::{File, OpenOptions},
    io::{self, ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr},
    os::{fd::AsFd, fd::BorrowedFd, unix::fs::FileExt},
    path::Path,
    pin::Pin,
    thread,
    time::{Duration, Instant},
};

use mio::{
    net::{TcpListener, TcpStream},
    Events, Interest, Poll, Registry, Token,
};
use mio_aio::{AioFsyncMode, Fsync, LioCb, LioCbBuilder, LioError, LioOpcode, SourceApi, WriteAt};

#[path = "common/owned_read.rs"]
mod owned_read;
use owned_read::OwnedRead;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// Size of the demo file: not a multiple of anything, so that a request can end past EOF.
const FILE_LEN: u64 = 256 * 1024 + 123;
/// The timer's period.
const TICK: Duration = Duration::from_millis(50);
/// The batch: this many reads of `CHUNK` bytes each, spread over the file.
const BATCH_READS: usize = 8;
const CHUNK: usize = 4096;
/// The ticks at which the batch and the write start.
const BATCH_TICK: u64 = 2;
const WRITE_TICK: u64 = 4;
/// How long the client waits between two requests, so that the log interleaves them with ticks.
const CLIENT_PAUSE: Duration = Duration::from_millis(40);
/// The demo gives up (and fails) if it has not finished by then.
const DEADLINE: Duration = Duration::from_secs(30);
/// The server refuses requests for more than this (the client never asks for so much).
const MAX_REQUEST_LEN: u64 = 1 << 20;
/// The server accepts at most this many connections at once.
const MAX_CONNS: usize = 16;

// The token space: fixed tokens for the listener and the one-off operations, then one token per
// connection and one per connection's in-flight read.
const LISTENER: Token = Token(0);
const BATCH: Token = Token(1);
const WRITE: Token = Token(2);
const FSYNC: Token = Token(3);
const CONN_BASE: usize = 100;
const READ_BASE: usize = CONN_BASE + MAX_CONNS;

/// Prints one line of the log, stamped with the time since `$start`.
macro_rules! log {
    ($start:expr, $($arg:tt)*) => {
        println!("[{:6.3}s] {}", $start.elapsed().as_secs_f64(), format_args!($($arg)*))
    };
}

/// The demo file's byte at `offset`.
fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 8)) as u8
}

/// The offset of the batch's `i`th read.
fn batch_offset(i: usize) -> u64 {
    i as u64 * 32 * 1024 + 1000
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
    let dir = tempfile::tempdir()?;
    let data_path = dir.path().join("data.bin");
    let content: Vec<u8> = (0..FILE_LEN).map(pattern).collect();
    std::fs::write(&data_path, &content)?;
    let data = File::open(&data_path)?;
    let journal_path = dir.path().join("journal.txt");
    let journal = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&journal_path)?;
    log!(start, "created {} ({FILE_LEN} bytes)", data_path.display());
    #[cfg(target_os = "linux")]
    log!(start, "mio-aio backend: {}", mio_aio::backend()?);
    #[cfg(not(target_os = "linux"))]
    log!(start, "mio-aio backend: POSIX AIO");

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);

    // (a) The TCP server, and its client in a thread.
    let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = listener.local_addr()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    log!(start, "server listening on {addr}");
    let mut server = Server::new(data.as_fd(), listener);
    let client = {
        let path = data_path.clone();
        thread::spawn(move || client(addr, &path, start))
    };

    // (c) The batch: 8 reads into buffers that outlive the loop (they are checked after it).
    // It is registered now, and submitted, all 8 reads at once, at tick 2.
    let mut batch_bufs = vec![[0u8; CHUNK]; BATCH_READS];
    let mut builder = LioCbBuilder::with_capacity(BATCH_READS);
    for (i, buf) in batch_bufs.iter_mut().enumerate() {
        builder =
            builder.emplace_mut_slice(data.as_fd(), batch_offset(i), buf, 0, LioOpcode::LIO_READ);
    }
    let mut batch = builder.finish();
    poll.registry().register(&mut batch, BATCH, mio_aio::LIO)?;
    let mut batch = Batch::new(batch);

    // (d) A write to the journal, then its fsync.
    let record = format!("mio-aio demo: {FILE_LEN} bytes served from one mio loop\n").repeat(64);
    let mut write: Option<Pin<Box<WriteAt>>> = None;
    let mut fsync: Option<Pin<Box<Fsync>>> = None;
    let mut synced = false;

    // (b) The timer.
    let mut ticks = 0u64;
    let mut next_tick = start + TICK;
    let mut interrupted = 0u64;

    loop {
        let now = Instant::now();
        if now >= next_tick {
            ticks += 1;
            log!(start, "tick {ticks}");
            next_tick += TICK;
            if next_tick <= now {
                // The loop fell behind (a slow machine): skip the missed ticks.
                next_tick = now + TICK;
            }
            match ticks {
                // The timer drives the file work too: the batch starts at tick 2...
                BATCH_TICK => batch.submit(start)?,
                // ... and the write at tick 4; its fsync starts when the write is done.
                WRITE_TICK => {
                    let mut op = WriteAt::write_at(journal.as_fd(), 0, record.as_bytes(), 0);
                    poll.registry().register(&mut op, WRITE, mio_aio::AIO)?;
                    let op = write.insert(Box::pin(op));
                    op.as_mut().submit()?;
                    log!(
                        start,
                        "submitted a write of {} bytes to the journal",
                        record.len()
                    );
                }
                _ => batch.retry_if_refused(start)?,
            }
        }
        let finished = client.is_finished() && server.conns_open() == 0;
        if finished && batch.is_done() && synced {
            break;
        }
        if start.elapsed() > DEADLINE {
            return Err(format!("the demo did not finish within {DEADLINE:?}").into());
        }

        match poll.poll(&mut events, Some(next_tick.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {
                // io_uring ran completion work on this thread: poll again.
                interrupted += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        }

        for event in events.iter() {
            match event.token() {
                LISTENER => server.accept(poll.registry(), start)?,
                BATCH => batch.on_event(start)?,
                WRITE => {
                    if let Some(mut w) = write.take() {
                        let n = w.as_mut().aio_return()?;
                        log!(start, "write of {n} bytes to the journal done; syncing it");
                        let mut op = Fsync::fsync(journal.as_fd(), AioFsyncMode::O_SYNC, 0);
                        poll.registry().register(&mut op, FSYNC, mio_aio::AIO)?;
                        let op = fsync.insert(Box::pin(op));
                        op.as_mut().submit()?;
                    }
                }
                FSYNC => {
                    if let Some(mut op) = fsync.take() {
                        op.as_mut().aio_return()?;
                        log!(start, "fsync of the journal done: the record is on disk");
                        synced = true;
                    }
                }
                Token(t) if (CONN_BASE..READ_BASE).contains(&t) => {
                    server.on_conn_event(poll.registry(), t - CONN_BASE, start)
                }
                Token(t) if (READ_BASE..READ_BASE + MAX_CONNS).contains(&t) => {
                    server.on_read_done(poll.registry(), t - READ_BASE, start)
                }
                Token(t) => return Err(format!("unexpected token {t}").into()),
            }
        }
    }

    // Everything is done: check it all.
    let (requests, bytes) = client.join().map_err(|_| "the client thread panicked")??;
    let batch_bytes = batch.checked_bytes()?;
    drop(batch);
    for (i, buf) in batch_bufs.iter().enumerate() {
        let off = batch_offset(i) as usize;
        if buf[..] != content[off..off + CHUNK] {
            return Err(format!("batch read {i} (offset {off}) got wrong data").into());
        }
    }
    let mut written = Vec::new();
    File::open(&journal_path)?.read_to_end(&mut written)?;
    if written != record.as_bytes() {
        return Err("the journal does not hold the record that was written".into());
    }
    log!(start, "verified: client data, batch data and journal match");
    #[cfg(target_os = "linux")]
    let backend = mio_aio::backend()?.to_string();
    #[cfg(not(target_os = "linux"))]
    let backend = "POSIX AIO";
    println!(
        "demo finished OK in {:.2} s: {requests} client requests ({bytes} bytes) verified, \
         {} reads served by the server, batch of {BATCH_READS} reads ({batch_bytes} bytes) verified, \
         write+fsync of {} bytes verified, {ticks} ticks, {interrupted} interrupted polls, \
         backend {backend}",
        start.elapsed().as_secs_f64(),
        server.requests,
        record.len(),
    );
    Ok(())
}

/// The batch of reads, and where it stands.
struct Batch<'a> {
    cb: Option<LioCb<'a>>,
    state: BatchState,
    /// The bytes each read got, once done.
    results: Vec<usize>,
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum BatchState {
    /// Not submitted yet.
    NotStarted,
    /// The system had no room for any of it (`EAGAIN`): retried at the next tick.
    Refused,
    /// Part of it was started (`EINCOMPLETE`): its event means "resubmit the rest".
    Partial,
    /// All of it was started: its event means "done".
    InFlight,
    Done,
}

impl<'a> Batch<'a> {
    fn new(cb: LioCb<'a>) -> Self {
        Batch {
            cb: Some(cb),
            state: BatchState::NotStarted,
            results: Vec::new(),
        }
    }

    fn submit(&mut self, start: Instant) -> Result<()> {
        let Some(cb) = self.cb.as_mut() else {
            return Ok(());
        };
        let n = cb.len();
        // After EAGAIN too, `resubmit`: on Linux a second `submit` fails with EBUSY.
        let resubmit = matches!(self.state, BatchState::Partial | BatchState::Refused);
        let r = if resubmit { cb.resubmit() } else { cb.submit() };
        self.state = match r {
            Ok(()) if self.state == BatchState::Partial => {
                log!(start, "started the rest of the batch");
                BatchState::InFlight
            }
            Ok(()) => {
                log!(start, "submitted a batch of {n} reads");
                BatchState::InFlight
            }
            Err(LioError::EINCOMPLETE) => {
                log!(
                    start,
                    "only part of the batch was started; the rest follows"
                );
                BatchState::Partial
            }
            Err(LioError::EAGAIN) => {
                log!(
                    start,
                    "no room for the batch now; retrying at the next tick"
                );
                BatchState::Refused
            }
            Err(e) => return Err(format!("batch: {e}").into()),
        };
        Ok(())
    }

    fn retry_if_refused(&mut self, start: Instant) -> Result<()> {
        if self.state == BatchState::Refused {
            self.submit(start)?;
        }
        Ok(())
    }

    fn on_event(&mut self, start: Instant) -> Result<()> {
        match self.state {
            BatchState::Partial => self.submit(start),
            BatchState::InFlight => {
                let cb = self
                    .cb
                    .take()
                    .ok_or("batch event after the batch was done")?;
                let results: Vec<_> = cb.into_results(|iter| iter.map(|r| r.result).collect());
                for (i, r) in results.into_iter().enumerate() {
                    let n = r.map_err(|e| format!("batch read {i} failed: {e}"))?;
                    self.results.push(n as usize);
                }
                self.state = BatchState::Done;
                let total: usize = self.results.iter().sum();
                log!(
                    start,
                    "batch of {} reads done ({total} bytes)",
                    self.results.len()
                );
                Ok(())
            }
            BatchState::NotStarted | BatchState::Refused | BatchState::Done => Ok(()),
        }
    }

    fn is_done(&self) -> bool {
        self.state == BatchState::Done
    }

    /// The batch's total, after checking that every read was complete.
    fn checked_bytes(&self) -> Result<usize> {
        if let Some(i) = self.results.iter().position(|&n| n != CHUNK) {
            return Err(
                format!("batch read {i} got {} bytes, not {CHUNK}", self.results[i]).into(),
            );
        }
        Ok(self.results.iter().sum())
    }
}

/// The file server: the listener, its connections, and their reads.
struct Server<'f> {
    file: BorrowedFd<'f>,
    listener: TcpListener,
    /// Connection `i` has token `CONN_BASE + i`; its read, `READ_BASE + i`.
    conns: Vec<Option<Conn<'f>>>,
    clients_seen: usize,
    requests: u64,
}

/// One client connection. Requests are served in order, one read at a time.
struct Conn<'f> {
    stream: TcpStream,
    /// The client's number, for the log.
    client: usize,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// How much of `outbuf` has been sent.
    sent: usize,
    /// Requests received but not yet started: (offset, length).
    queue: VecDeque<(u64, u64)>,
    /// The read in flight, with its offset.
    read: Option<(u64, OwnedRead<'f>)>,
    /// The client has closed its side.
    eof: bool,
}

impl<'f> Server<'f> {
    fn new(file: BorrowedFd<'f>, listener: TcpListener) -> Self {
        Server {
            file,
            listener,
            conns: (0..MAX_CONNS).map(|_| None).collect(),
            clients_seen: 0,
            requests: 0,
        }
    }

    fn conns_open(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    fn accept(&mut self, registry: &Registry, start: Instant) -> Result<()> {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            let Some(i) = self.conns.iter().position(Option::is_none) else {
                log!(start, "server: too many connections, refusing {peer}");
                continue;
            };
            stream.set_nodelay(true)?;
            registry.register(
                &mut stream,
                Token(CONN_BASE + i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            self.clients_seen += 1;
            log!(
                start,
                "server: client {} connected from {peer}",
                self.clients_seen
            );
            self.conns[i] = Some(Conn {
                stream,
                client: self.clients_seen,
                inbuf: Vec::new(),
                outbuf: Vec::new(),
                sent: 0,
                queue: VecDeque::new(),
                read: None,
                eof: false,
            });
            // The client may have sent its first request already: edge-triggered events only
            // report new data, so look now.
            self.on_conn_event(registry, i, start);
        }
    }

    /// The socket of connection `i` is readable or writable (or both): do what can be done.
    fn on_conn_event(&mut self, registry: &Registry, i: usize, start: Instant) {
        if let Err(e) = self.serve(registry, i, start) {
            self.close(registry, i, start, &format!("error: {e}"));
        }
    }

    fn serve(&mut self, registry: &Registry, i: usize, start: Instant) -> Result<()> {
        let file = self.file;
        let Some(conn) = self.conns[i].as_mut() else {
            return Ok(());
        };
        conn.receive()?;
        conn.flush()?;
        if conn.read.is_none() {
            if let Some((offset, len)) = conn.queue.pop_front() {
                log!(
                    start,
                    "server: client {} asks for {len} bytes at {offset}",
                    conn.client
                );
                // At most MAX_REQUEST_LEN bytes, so this fits.
                let read =
                    OwnedRead::start(registry, Token(READ_BASE + i), file, offset, len as usize)?;
                conn.read = Some((offset, read));
            }
        }
        if conn.eof
            && conn.queue.is_empty()
            && conn.read.is_none()
            && conn.sent == conn.outbuf.len()
        {
            self.close(registry, i, start, "disconnected");
        }
        Ok(())
    }

    /// The read of connection `i` is complete: queue the answer and start the next read.
    fn on_read_done(&mut self, registry: &Registry, i: usize, start: Instant) {
        let Some(conn) = self.conns[i].as_mut() else {
            return;
        };
        let Some((offset, read)) = conn.read.as_mut() else {
            return;
        };
        let data = match read.finish() {
            None => return, // not done yet (cannot happen: the event means done)
            Some(Ok(data)) => data,
            Some(Err(e)) => {
                let why = format!("read at {offset} failed: {e}");
                self.close(registry, i, start, &why);
                return;
            }
        };
        log!(
            start,
            "server: read {} bytes at {offset} for client {}",
            data.len(),
            conn.client
        );
        conn.outbuf
            .extend_from_slice(&(data.len() as u64).to_be_bytes());
        conn.outbuf.extend_from_slice(data);
        conn.read = None;
        self.requests += 1;
        self.on_conn_event(registry, i, start);
    }

    fn close(&mut self, registry: &Registry, i: usize, start: Instant, why: &str) {
        if let Some(mut conn) = self.conns[i].take() {
            log!(start, "server: client {} {why}", conn.client);
            let _ = registry.deregister(&mut conn.stream);
            // Dropping `conn` drops its read, if any: that cancels it and waits for the kernel.
        }
    }
}

impl Conn<'_> {
    /// Reads what the client sent, and queues the complete requests.
    fn receive(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 1024];
        while !self.eof {
            match self.stream.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        while let Some(nl) = self.inbuf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.inbuf.drain(..=nl).collect();
            self.queue.push_back(parse_request(&line)?);
        }
        if self.inbuf.len() > 100 {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "request line too long",
            ));
        }
        Ok(())
    }

    /// Sends as much of the answers as the socket takes.
    fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.outbuf.len() {
            match self.stream.write(&self.outbuf[self.sent..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.outbuf.clear();
        self.sent = 0;
        Ok(())
    }
}

/// Parses a request line, `OFFSET LEN\n`.
fn parse_request(line: &[u8]) -> io::Result<(u64, u64)> {
    let bad = |why: &str| io::Error::new(ErrorKind::InvalidData, format!("bad request: {why}"));
    let line = std::str::from_utf8(line).map_err(|_| bad("not text"))?;
    let mut words = line.split_ascii_whitespace();
    let (Some(offset), Some(len), None) = (words.next(), words.next(), words.next()) else {
        return Err(bad("expected OFFSET LEN"));
    };
    let offset = offset.parse().map_err(|_| bad("OFFSET is not a number"))?;
    let len: u64 = len.parse().map_err(|_| bad("LEN is not a number"))?;
    if len > MAX_REQUEST_LEN {
        return Err(bad("LEN too large"));
    }
    Ok((offset, len))
}

/// The client thread: asks for byte ranges, one at a time, and checks each answer against the
/// file. Returns the number of requests and of bytes received.
fn client(addr: SocketAddr, path: &Path, start: Instant) -> Result<(u64, u64)> {
    let file = File::open(path)?;
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut requests = vec![
        (0, 4096),
        (8192, 4096),
        (100_000, 1500),
        (FILE_LEN - 100, 4096), // crosses the end of the file: 100 bytes come back
        (FILE_LEN + 10, 50),    // past the end: no bytes
    ];
    // A few more, pseudo-random but the same at every run.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..7 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        requests.push((seed % FILE_LEN, 1 + (seed >> 32) % 20_000));
    }
    let mut bytes = 0;
    for &(offset, len) in &requests {
        thread::sleep(CLIENT_PAUSE);
        // One write per request: several small ones would meet Nagle's algorithm.
        stream.write_all(format!("{offset} {len}\n").as_bytes())?;
        let mut header = [0u8; 8];
        stream.read_exact(&mut header)?;
        let n = u64::from_be_bytes(header);
        let expected_len = len.min(FILE_LEN.saturating_sub(offset));
        if n != expected_len {
            return Err(
                format!("client: asked for {len} at {offset}, told {n} bytes follow").into(),
            );
        }
        let mut got = vec![0u8; n as usize];
        stream.read_exact(&mut got)?;
        let mut expected = vec![0u8; n as usize];
        file.read_exact_at(&mut expected, offset)?;
        if got != expected {
            return Err(format!("client: the {n} bytes at {offset} differ from the file").into());
        }
        bytes += n;
        log!(
            start,
            "client: got {n} bytes at {offset}: they match the file"
        );
    }
    stream.shutdown(Shutdown::Write)?;
    // The server closes its side once it has answered everything.
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    if !rest.is_empty() {
        return Err(format!(
            "client: {} unexpected bytes after the last answer",
            rest.len()
        )
        .into());
    }
    log!(start, "client: done, {} requests", requests.len());
    Ok((requests.len() as u64, bytes))
}
