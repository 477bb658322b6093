//! A TCP file server in one mio event loop, reading the file with mio-aio.
//!
//! ```text
//! cargo run --example file_server -- FILE [--addr 127.0.0.1:PORT] [--max-requests N]
//! ```
//!
//! It serves byte ranges of FILE to any number of clients at once. The protocol, per TCP
//! connection: the client sends lines `OFFSET LEN\n` (decimal); for each, in order, the server
//! answers with the length N of the data as 8 bytes big-endian, then the N bytes of FILE from
//! OFFSET: N is LEN, or less at the end of the file, and 0 past it. A client may send many
//! requests without waiting for the answers. A malformed line, or a range of more than 16 MiB
//! (once cut at the end of the file), closes the connection.
//!
//! The first line on stdout is `listening on ADDR` (with `--addr 127.0.0.1:0` the system picks
//! the port, and that line tells it). Then every second a `stats:` line gives the requests
//! served, the bytes sent, the clients and the reads in flight, and how often `Poll::poll` was
//! interrupted. With `--max-requests N` the server exits (status 0) once it has answered N
//! requests, which is what its tests use. The default address is 127.0.0.1:7878.
//!
//! How it works: the listener, every connection and every file read in flight are event
//! sources of the same `mio::Poll`, each with its own token (listener: 0; connections: from 1;
//! reads: after those). A request starts a mio-aio `ReadAt` of the range, registered under a
//! token of its own; when that token comes back from `Poll::poll`, the data is there, and it
//! joins the connection's answers in request order. The loop never blocks on the file.
//! The once-a-second stats come from a deadline passed to `Poll::poll` as its timeout.
//!
//! A read outlives the code that started it and completes in any order, so each is an owned
//! operation (`mio_aio::owned::ReadAt`): it holds the file (an `Arc<File>`) and its buffer,
//! and gives the buffer back with the result.
//! Memory stays bounded however fast clients ask: see the limits below.
//!
//! Try it (netcat's options vary: `-q1` makes the Debian one exit once its input is sent):
//! ```text
//! cargo run --example file_server -- Cargo.toml &
//! printf '0 40\n10 10\n' | nc -q1 127.0.0.1 7878 | od -A d -c
//! ```

use std::{
    collections::VecDeque,
    error::Error,
    ffi::OsString,
    fs::File,
    io::{self, ErrorKind, Read, Write},
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use mio::{
    net::{TcpListener, TcpStream},
    Events, Interest, Poll, Registry, Token,
};

use mio_aio::{owned, Errno};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const USAGE: &str = "usage: file_server FILE [--addr IP:PORT] [--max-requests N]";
const DEFAULT_PORT: u16 = 7878;

/// At most this many connections at once; more are closed at once.
const MAX_CONNS: usize = 512;
/// At most this many file reads in flight, for the whole server.
const MAX_READS: usize = 128;
/// At most this many bytes asked of the reads in flight, for the whole server (a read asking
/// for more still starts when no other is in flight).
const MAX_BYTES_IN_FLIGHT: u64 = 64 << 20;
/// The largest range one request may ask for (after cutting it at the end of the file).
const MAX_REQUEST_LEN: u64 = 16 << 20;
/// Per connection: at most this many requests started and not yet answered...
const MAX_PIPELINE: usize = 16;
/// ... this many parsed and waiting to start ...
const MAX_WAITING: usize = 1024;
/// ... this many bytes received and not yet parsed (more are left in the socket) ...
const MAX_INBUF: usize = 64 << 10;
/// ... and no new read while this many answer bytes are waiting to be sent.
const MAX_OUTBUF: usize = 8 << 20;
/// The longest request line.
const MAX_LINE: usize = 64;
/// How often to print the stats.
const STATS_PERIOD: Duration = Duration::from_secs(1);
/// When an operation could not start for lack of room, or `accept` failed, retry this soon.
const RETRY: Duration = Duration::from_millis(10);
/// With `--max-requests`, how long to wait for clients to take the last answers.
const EXIT_GRACE: Duration = Duration::from_secs(10);

// The token space.
const LISTENER: Token = Token(0);
const FIRST_CONN: usize = 1;
const FIRST_READ: usize = FIRST_CONN + MAX_CONNS;

struct Args {
    file: PathBuf,
    addr: SocketAddr,
    max_requests: Option<u64>,
}

fn main() {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("file_server: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("file_server: {e}");
        std::process::exit(1);
    }
}

/// Parses the command line; `Ok(None)` for `--help`.
fn parse_args(
    mut args: impl Iterator<Item = OsString>,
) -> std::result::Result<Option<Args>, String> {
    let mut file = None;
    let mut addr = None;
    let mut max_requests = None;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .and_then(|v| v.into_string().ok())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(None),
            Some("--addr") => {
                let v = value("--addr")?;
                addr = Some(v.parse().map_err(|_| format!("bad address {v:?}"))?);
            }
            Some("--max-requests") => {
                let v = value("--max-requests")?;
                let n: u64 = v.parse().map_err(|_| format!("bad --max-requests {v:?}"))?;
                if n == 0 {
                    return Err("--max-requests must be at least 1".into());
                }
                max_requests = Some(n);
            }
            Some(s) if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ if file.is_none() => file = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {:?}", arg)),
        }
    }
    Ok(Some(Args {
        file: file.ok_or("FILE is missing")?,
        addr: addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))),
        max_requests,
    }))
}

fn run(args: &Args) -> Result<()> {
    let file = File::open(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    if !file.metadata()?.is_file() {
        return Err(format!("{}: not a regular file", args.file.display()).into());
    }
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut listener =
        TcpListener::bind(args.addr).map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on {}", listener.local_addr()?);
    #[cfg(target_os = "linux")]
    println!(
        "serving {} with mio-aio backend {}",
        args.file.display(),
        mio_aio::backend()?
    );

    let mut server = Server::new(Arc::new(file), listener, args.max_requests);
    let mut next_stats = Instant::now() + STATS_PERIOD;
    let mut done_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= next_stats {
            server.print_stats();
            next_stats += STATS_PERIOD;
            if next_stats <= now {
                next_stats = now + STATS_PERIOD;
            }
        }
        if server.quota_reached() {
            // Stop once every answer has gone out, or the clients have had long enough.
            let since = *done_since.get_or_insert(now);
            if server.all_sent() || now.duration_since(since) > EXIT_GRACE {
                break;
            }
        }

        let mut timeout = next_stats.saturating_duration_since(now);
        if server.wants_retry() || done_since.is_some() {
            timeout = timeout.min(RETRY);
        }
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {
                // io_uring ran completion work on this thread: poll again.
                server.interrupted += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        let registry = poll.registry();
        for event in events.iter() {
            match event.token() {
                LISTENER => server.accept(registry),
                Token(t) if (FIRST_CONN..FIRST_READ).contains(&t) => {
                    server.service(registry, t - FIRST_CONN)
                }
                Token(t) if (FIRST_READ..FIRST_READ + MAX_READS).contains(&t) => {
                    server.read_done(registry, t - FIRST_READ)
                }
                Token(t) => eprintln!("file_server: unexpected token {t}"),
            }
        }
        server.catch_up(registry);
    }
    server.print_stats();
    println!(
        "exiting after {} requests ({} bytes)",
        server.served, server.bytes_sent
    );
    Ok(())
}

/// A fixed number of slots, each `None` or in use, with a list of the free ones.
struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Slab<T> {
    fn with_capacity(n: usize) -> Self {
        Slab {
            slots: (0..n).map(|_| None).collect(),
            free: (0..n).rev().collect(),
        }
    }

    /// Where `value` would go, if there is room.
    fn vacant(&self) -> Option<usize> {
        self.free.last().copied()
    }

    fn insert(&mut self, value: T) -> Option<usize> {
        let i = self.free.pop()?;
        self.slots[i] = Some(value);
        Some(i)
    }

    fn remove(&mut self, i: usize) -> Option<T> {
        let value = self.slots.get_mut(i)?.take()?;
        self.free.push(i);
        Some(value)
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.slots.get_mut(i)?.as_mut()
    }

    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }
}

struct Server {
    file: Arc<File>,
    listener: TcpListener,
    /// Connection `i` has token `FIRST_CONN + i`.
    conns: Slab<Conn>,
    /// Read `i` has token `FIRST_READ + i`.
    reads: Slab<InFlight>,
    next_serial: u64,
    max_requests: Option<u64>,
    /// Requests started (reads submitted, or empty answers queued).
    started: u64,
    /// Requests answered (the answer queued for sending), and the data bytes in the answers.
    served: u64,
    bytes_sent: u64,
    /// The bytes asked of the reads in flight.
    bytes_in_flight: u64,
    accepted: u64,
    interrupted: u64,
    /// The last read submitted got `EAGAIN`: no new read until one completes or `RETRY` passed.
    aio_full: bool,
    /// `accept` failed (say, out of file descriptors): try again in `RETRY`.
    accept_failed: bool,
    /// A read completed, freeing room: connections that wait for room must be looked at.
    room_freed: bool,
}

/// A read in flight, and what it is for.
struct InFlight {
    read: owned::ReadAt<Arc<File>, Vec<u8>>,
    offset: u64,
    conn: usize,
    /// The connection's serial number: if it changed, the connection has closed (and its slot
    /// may have gone to another), and the data goes nowhere.
    serial: u64,
    /// The request's sequence number on its connection.
    seq: u64,
    len: u64,
}

/// One client connection.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    serial: u64,
    inbuf: Vec<u8>,
    /// `inbuf` is full: some of what the client sent may be left in the socket.
    recv_paused: bool,
    /// The client has closed its side (or broke the protocol: see `failed`).
    eof: bool,
    /// Why the connection is to close once the answers before the failure have been sent.
    failed: Option<io::Error>,
    /// Requests parsed and not started: (offset, length).
    waiting: VecDeque<(u64, u64)>,
    /// Requests started, in order, with their data once read.
    answers: VecDeque<Answer>,
    /// The sequence number of `answers[0]`.
    first_seq: u64,
    outbuf: Vec<u8>,
    /// How much of `outbuf` has been sent.
    sent: usize,
    requests: u64,
}

enum Answer {
    /// The read is in flight.
    Reading,
    /// The read is complete: the bytes read, or why it failed.
    Ready(io::Result<Vec<u8>>),
    /// Nothing to read (a range past the end of the file, or of length 0).
    Empty,
}

impl Server {
    fn new(file: Arc<File>, listener: TcpListener, max_requests: Option<u64>) -> Self {
        Server {
            file,
            listener,
            conns: Slab::with_capacity(MAX_CONNS),
            reads: Slab::with_capacity(MAX_READS),
            next_serial: 0,
            max_requests,
            started: 0,
            served: 0,
            bytes_sent: 0,
            bytes_in_flight: 0,
            accepted: 0,
            interrupted: 0,
            aio_full: false,
            accept_failed: false,
            room_freed: false,
        }
    }

    fn print_stats(&self) {
        println!(
            "stats: {} requests served, {} bytes, {} clients connected ({} in all), \
             {} reads in flight, {} interrupted polls",
            self.served,
            self.bytes_sent,
            self.conns.len(),
            self.accepted,
            self.reads.len(),
            self.interrupted
        );
    }

    fn quota_reached(&self) -> bool {
        self.max_requests.is_some_and(|max| self.served >= max)
    }

    fn all_sent(&self) -> bool {
        self.conns.iter().all(|(_, c)| c.sent == c.outbuf.len())
    }

    fn wants_retry(&self) -> bool {
        (self.aio_full && self.reads.len() == 0) || self.accept_failed
    }

    fn accept(&mut self, registry: &Registry) {
        self.accept_failed = false;
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Most likely out of file descriptors: the connection stays in the
                    // backlog, and `catch_up` tries again soon.
                    eprintln!("file_server: accept: {e}");
                    self.accept_failed = true;
                    return;
                }
            };
            let Some(i) = self.conns.vacant() else {
                eprintln!("file_server: too many clients, closing {peer}");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = registry.register(&mut stream, Token(FIRST_CONN + i), interest) {
                eprintln!("file_server: {peer}: {e}");
                continue;
            }
            self.next_serial += 1;
            self.accepted += 1;
            self.conns.insert(Conn {
                stream,
                peer,
                serial: self.next_serial,
                inbuf: Vec::new(),
                recv_paused: false,
                eof: false,
                failed: None,
                waiting: VecDeque::new(),
                answers: VecDeque::new(),
                first_seq: 0,
                outbuf: Vec::new(),
                sent: 0,
                requests: 0,
            });
            println!("client {peer} connected");
            // Data may have come with the connection: edge-triggered events only tell of new
            // data, so look now.
            self.service(registry, i);
        }
    }

    /// Does all that can be done for connection `i`: receive and parse requests, start reads,
    /// queue the answers that are ready, send. Closes the connection when it is finished or
    /// has failed.
    fn service(&mut self, registry: &Registry, i: usize) {
        match self.try_service(registry, i) {
            Ok(true) => {}
            Ok(false) => {
                let failed = self.conns.get_mut(i).and_then(|c| c.failed.take());
                self.close(registry, i, failed)
            }
            Err(e) => self.close(registry, i, Some(e)),
        }
    }

    /// `service`'s work; `Ok(false)` when the connection is finished.
    fn try_service(&mut self, registry: &Registry, i: usize) -> io::Result<bool> {
        loop {
            let Some(conn) = self.conns.get_mut(i) else {
                return Ok(true);
            };
            let before = conn.progress();
            conn.receive()?;
            conn.parse();
            self.start_reads(registry, i)?;
            let Some(conn) = self.conns.get_mut(i) else {
                return Ok(true);
            };
            let (answered, bytes) = conn.queue_answers();
            self.served += answered;
            self.bytes_sent += bytes;
            conn.flush()?;
            if conn.eof
                && conn.inbuf.is_empty()
                && conn.waiting.is_empty()
                && conn.answers.is_empty()
                && conn.sent == conn.outbuf.len()
            {
                return Ok(false);
            }
            // Answers sent or requests parsed may have made room for more of the same (an
            // edge-triggered socket says nothing more about data already there): go round
            // again until nothing moves.
            if conn.progress() == before {
                return Ok(true);
            }
        }
    }

    /// Starts reads for connection `i`'s waiting requests, as far as the limits allow.
    fn start_reads(&mut self, registry: &Registry, i: usize) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(i) else {
            return Ok(());
        };
        if conn.waiting.is_empty() || conn.outbuf.len() - conn.sent >= MAX_OUTBUF {
            return Ok(());
        }
        let file_len = self.file.metadata()?.len();
        while conn.answers.len() < MAX_PIPELINE {
            if self.aio_full || self.max_requests.is_some_and(|m| self.started >= m) {
                break;
            }
            let Some(&(offset, len)) = conn.waiting.front() else {
                break;
            };
            let len = len.min(file_len.saturating_sub(offset));
            if len > MAX_REQUEST_LEN {
                let msg = format!("{len} bytes at {offset}: more than {MAX_REQUEST_LEN} asked");
                conn.fail(io::Error::new(ErrorKind::InvalidData, msg));
                conn.waiting.clear();
                break;
            }
            if len == 0 {
                conn.answers.push_back(Answer::Empty);
            } else {
                let room =
                    self.bytes_in_flight == 0 || self.bytes_in_flight + len <= MAX_BYTES_IN_FLIGHT;
                let Some(slot) = self.reads.vacant().filter(|_| room) else {
                    break;
                };
                let token = Token(FIRST_READ + slot);
                // `len` is at most MAX_REQUEST_LEN, so it fits in a usize.
                let buf = vec![0u8; len as usize];
                let mut read = owned::ReadAt::read_at(self.file.clone(), offset, buf, 0);
                registry.register(&mut read, token, mio_aio::AIO)?;
                match read.submit() {
                    Ok(()) => {}
                    Err(Errno::EAGAIN) => {
                        // The system's queue is full. Try again when a read completes.
                        self.aio_full = true;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
                let seq = conn.first_seq + conn.answers.len() as u64;
                self.reads.insert(InFlight {
                    read,
                    offset,
                    conn: i,
                    serial: conn.serial,
                    seq,
                    len,
                });
                conn.answers.push_back(Answer::Reading);
                self.bytes_in_flight += len;
            }
            conn.waiting.pop_front();
            conn.requests += 1;
            self.started += 1;
        }
        Ok(())
    }

    /// Read `r` is complete: hand it to its connection, and look at what waited for room.
    fn read_done(&mut self, registry: &Registry, r: usize) {
        // A spurious event (the read is still running) changes nothing.
        let Some((result, mut buf)) = self.reads.get_mut(r).and_then(|f| f.read.take_result())
        else {
            return;
        };
        let Some(InFlight {
            read: _,
            offset,
            conn: i,
            serial,
            seq,
            len,
        }) = self.reads.remove(r)
        else {
            return;
        };
        self.bytes_in_flight -= len;
        self.aio_full = false;
        self.room_freed = true;
        let Some(conn) = self.conns.get_mut(i).filter(|c| c.serial == serial) else {
            return; // Its connection has closed: the data goes nowhere.
        };
        let Some(answer) = usize::try_from(seq - conn.first_seq)
            .ok()
            .and_then(|k| conn.answers.get_mut(k))
        else {
            return;
        };
        *answer = Answer::Ready(match result {
            Ok(n) => {
                buf.truncate(n);
                Ok(buf)
            }
            Err(e) => {
                let msg = format!("read of the file at {offset} failed: {e}");
                Err(io::Error::new(e.kind(), msg))
            }
        });
        self.service(registry, i);
    }

    /// After a round of events: tries again what waited for room.
    fn catch_up(&mut self, registry: &Registry) {
        if self.accept_failed {
            self.accept(registry);
        }
        if self.aio_full && self.reads.len() == 0 {
            // No read in flight will free room: just try again.
            self.aio_full = false;
            self.room_freed = true;
        }
        if std::mem::take(&mut self.room_freed) {
            let waiting: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| !c.waiting.is_empty() || c.recv_paused)
                .map(|(i, _)| i)
                .collect();
            for i in waiting {
                self.service(registry, i);
            }
        }
    }

    fn close(&mut self, registry: &Registry, i: usize, error: Option<io::Error>) {
        let Some(mut conn) = self.conns.remove(i) else {
            return;
        };
        let _ = registry.deregister(&mut conn.stream);
        let (peer, n) = (conn.peer, conn.requests);
        match error {
            None => println!("client {peer} disconnected after {n} requests"),
            Some(e) => println!("client {peer} closed after {n} requests: {e}"),
        }
        // Its reads still in flight stay in `reads` until they complete; their data is then
        // dropped.
    }
}

impl Conn {
    /// A summary of the connection's state, to tell whether `Server::try_service` moved it.
    fn progress(&self) -> (usize, usize, usize, u64, usize, bool) {
        let (inbuf, waiting) = (self.inbuf.len(), self.waiting.len());
        (
            inbuf,
            waiting,
            self.answers.len(),
            self.first_seq,
            self.sent,
            self.eof,
        )
    }

    /// Reads what the client sent, while `inbuf` has room.
    fn receive(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        self.recv_paused = false;
        while !self.eof {
            if self.inbuf.len() >= MAX_INBUF {
                self.recv_paused = true;
                break;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Moves the complete request lines of `inbuf` to `waiting`, while it has room. A bad line
    /// fails the connection: the requests before it are still answered.
    fn parse(&mut self) {
        let mut used = 0;
        let mut error = None;
        while self.waiting.len() < MAX_WAITING {
            let rest = &self.inbuf[used..];
            let Some(nl) = rest.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') else {
                if rest.len() > MAX_LINE {
                    error = Some(bad_request("line too long"));
                } else if self.eof && !rest.is_empty() {
                    error = Some(bad_request("the last line has no newline"));
                }
                break;
            };
            match parse_request(&rest[..nl]) {
                Ok(request) => self.waiting.push_back(request),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
            used += nl + 1;
        }
        self.inbuf.drain(..used);
        if let Some(e) = error {
            self.fail(e);
        }
    }

    /// Fails the connection: nothing more is read from it, and once the answers queued so far
    /// have been sent, it closes with `error`.
    fn fail(&mut self, error: io::Error) {
        self.failed.get_or_insert(error);
        self.eof = true;
        self.recv_paused = false;
        self.inbuf.clear();
    }

    /// Moves the answers that are ready, in order, to `outbuf`. Returns how many, and their
    /// data bytes. A failed read fails the connection: the answers before it are still sent.
    fn queue_answers(&mut self) -> (u64, u64) {
        let (mut answered, mut bytes) = (0, 0);
        while let Some(answer) = self.answers.front_mut() {
            let data: &[u8] = match answer {
                Answer::Reading => break,
                Answer::Empty => &[],
                Answer::Ready(Ok(data)) => data,
                Answer::Ready(Err(_)) => {
                    if let Some(Answer::Ready(Err(e))) = self.answers.pop_front() {
                        self.fail(e);
                    }
                    self.waiting.clear();
                    // Reads still in flight for the answers dropped here complete into
                    // nothing: `Server::read_done` finds no answer for them.
                    self.answers.clear();
                    break;
                }
            };
            self.outbuf
                .extend_from_slice(&(data.len() as u64).to_be_bytes());
            self.outbuf.extend_from_slice(data);
            answered += 1;
            bytes += data.len() as u64;
            self.answers.pop_front();
            self.first_seq += 1;
        }
        (answered, bytes)
    }

    /// Sends as much of `outbuf` as the socket takes.
    fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.outbuf.len() {
            match self.stream.write(&self.outbuf[self.sent..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.outbuf.len() {
            self.outbuf.clear();
            self.sent = 0;
        } else if self.sent > self.outbuf.len() / 2 {
            self.outbuf.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }
}

fn bad_request(why: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, format!("bad request: {why}"))
}

/// Parses a request line, `OFFSET LEN` (without its newline).
fn parse_request(line: &[u8]) -> io::Result<(u64, u64)> {
    let line = std::str::from_utf8(line).map_err(|_| bad_request("not text"))?;
    let mut words = line.split_ascii_whitespace();
    let (Some(offset), Some(len), None) = (words.next(), words.next(), words.next()) else {
        return Err(bad_request("expected OFFSET LEN"));
    };
    let offset = offset
        .parse()
        .map_err(|_| bad_request("OFFSET is not a number"))?;
    let len = len
        .parse()
        .map_err(|_| bad_request("LEN is not a number"))?;
    Ok((offset, len))
}
