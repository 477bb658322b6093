//! An HTTP/1.1 static file server in one mio event loop on one thread, reading files with
//! mio-aio's owned operations.
//!
//! ```text
//! cargo run --release --example http_server -- --root DIR [--addr 127.0.0.1:8080] [--direct]
//!                                              [--chunk N] [--idle-timeout SECS]
//!                                              [--open-cache SECS]
//! ```
//!
//! It serves the regular files under DIR: GET and HEAD, keep-alive (HTTP/1.1, and HTTP/1.0
//! with `Connection: keep-alive`), `Content-Length`, one byte range per request (`bytes=a-b`,
//! `bytes=a-`, `bytes=-n`: 206 with `Content-Range`; 416 when nothing of the file is in it;
//! several ranges are ignored, as RFC 9110 allows), 404, 405 (with `Allow`), and 400 for a
//! malformed request (after which the connection closes). No path leaves DIR: a `..` component
//! (also percent-encoded) and a symlink pointing out of DIR are 404. A connection idle for
//! `--idle-timeout` seconds (default 15) is closed. Requests are parsed by `httparse`. A file
//! served again within `--open-cache` seconds (default 1; 0: never) of its opening reuses the
//! open descriptor and its size then (`examples/common/open_files.rs`, like nginx's
//! `open_file_cache`).
//!
//! The first line on stdout is `listening on ADDR` (with `--addr 127.0.0.1:0` the system picks
//! the port, and that line tells it).
//!
//! How it works: the listener, every connection and every file read in flight are event
//! sources of the same `mio::Poll`. Connection slot `i` has token `1 + 5i`, and its file reads
//! (at most 4 at a time) the next four. A response's body is read in chunks of `--chunk`
//! bytes (default 32K: with small chunks a loop busy sending large files stays fairer to small
//! requests, see BENCHMARKS.md) by `mio_aio::owned::ReadAt`, which owns its buffer and the file
//! (an `Arc<File>`), so a connection that closes mid-read just drops the read (mio-aio cancels
//! it and frees the buffer once the kernel is done). The next chunks are read (up to 4 at once,
//! completing in any order, sent in file order) while one is being sent; no more is read while
//! a chunk waits for the client (backpressure: the socket's WRITABLE event resumes the
//! sending). Socket writes are non-blocking `write_vectored` calls of the head and the chunks,
//! with no copy. The loop never blocks on a
//! file: a slow disk delays only the responses that read from it.
//!
//! With `--direct`, files are opened with `O_DIRECT` and read into `owned::AlignedBuf`s: each
//! chunk reads the aligned span around it (an unaligned range start, the unaligned tail of a
//! file) and sends the slice asked for.
//!
//! There is no timer in mio: the idle deadlines live in a heap (`BinaryHeap`) and the earliest
//! one is the timeout given to `Poll::poll`.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
    error::Error,
    ffi::OsString,
    fs::File,
    io::{self, ErrorKind, IoSlice, Read, Write},
    net::SocketAddr,
    ops::Deref,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use mio::{
    net::{TcpListener, TcpStream},
    Events, Interest, Poll, Registry, Token,
};
use mio_aio::{owned, Errno};

mod common;
use common::{
    http::{self, Method, NoFile, Parsed, Ranged},
    open_files::OpenFiles,
};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const USAGE: &str = "usage: http_server --root DIR [--addr IP:PORT] [--direct] [--chunk N] \
                     [--idle-timeout SECS] [--open-cache SECS]";
const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// At most this many connections at once; more are closed at once.
const MAX_CONNS: usize = 4096;
/// Bytes received and not yet parsed, per connection (more are left in the socket).
const MAX_INBUF: usize = 2 * http::MAX_HEAD;
/// When a read could not start (`EAGAIN`: the system's queue is full), retry this soon.
const RETRY: Duration = Duration::from_millis(5);
/// Read buffers kept for reuse.
const POOL: usize = 256;
const LISTENER: Token = Token(0);
/// Reads in flight per response: the next chunks are read while one is sent.
const DEPTH: usize = 4;
/// Tokens per connection: its socket, then its reads.
const STRIDE: usize = 1 + DEPTH;
/// How long a closing connection drains what its client still sends (see `Conn::lingering`).
const LINGER: Duration = Duration::from_secs(2);

struct Args {
    root: PathBuf,
    addr: SocketAddr,
    direct: bool,
    chunk: usize,
    idle: Duration,
    open_cache: Duration,
}

fn main() {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("http_server: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("http_server: {e}");
        std::process::exit(1);
    }
}

/// Parses the command line; `Ok(None)` for `--help`.
fn parse_args(
    mut args: impl Iterator<Item = OsString>,
) -> std::result::Result<Option<Args>, String> {
    let mut root = None;
    let mut addr = DEFAULT_ADDR.parse().expect("a valid default address");
    let (mut direct, mut chunk, mut idle) = (false, 32 << 10, Duration::from_secs(15));
    let mut open_cache = Duration::from_secs(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(None),
            Some("--root") => root = Some(PathBuf::from(value("--root")?)),
            Some("--direct") => direct = true,
            Some(name @ ("--addr" | "--chunk" | "--idle-timeout" | "--open-cache")) => {
                let v = value(name)?;
                let v = v.to_str().ok_or_else(|| format!("bad {name} {v:?}"))?;
                let bad = || format!("bad {name} {v:?}");
                match name {
                    "--addr" => addr = v.parse().map_err(|_| bad())?,
                    "--chunk" => {
                        chunk = parse_size(v).ok_or_else(bad)?;
                        if !(512..=(16 << 20)).contains(&chunk) {
                            return Err(format!("--chunk {v} is out of range (512 to 16M)"));
                        }
                    }
                    "--open-cache" => {
                        let secs: f64 = v.parse().map_err(|_| bad())?;
                        if !(0.0..=3600.0).contains(&secs) {
                            return Err(format!("--open-cache {v} is out of range"));
                        }
                        open_cache = Duration::from_secs_f64(secs);
                    }
                    _ => {
                        let secs: f64 = v.parse().map_err(|_| bad())?;
                        if !(0.001..=86400.0).contains(&secs) {
                            return Err(format!("--idle-timeout {v} is out of range"));
                        }
                        idle = Duration::from_secs_f64(secs);
                    }
                }
            }
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let root = root.ok_or("--root DIR is missing")?;
    Ok(Some(Args {
        root,
        addr,
        direct,
        chunk,
        idle,
        open_cache,
    }))
}

/// A number of bytes with an optional suffix K or M (powers of 1024).
fn parse_size(s: &str) -> Option<usize> {
    let (number, shift) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        _ => (s, 0),
    };
    number.parse::<usize>().ok()?.checked_mul(1 << shift)
}

fn run(args: Args) -> Result<()> {
    let root = args
        .root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", args.root.display()))?;
    if !root.is_dir() {
        return Err(format!("{}: not a directory", root.display()).into());
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
        root.display(),
        mio_aio::backend()?
    );

    let mut server = Server {
        root,
        direct: args.direct,
        chunk: args.chunk,
        idle: args.idle,
        listener,
        conns: Vec::new(),
        free: Vec::new(),
        next_serial: 0,
        deadlines: BinaryHeap::new(),
        retry_at: None,
        pool: Vec::new(),
        files: OpenFiles::new(args.open_cache),
    };
    loop {
        let timeout = server.next_timeout();
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            // io_uring ran completion work on this thread: poll again.
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        let registry = poll.registry();
        for event in events.iter() {
            match event.token() {
                LISTENER => server.accept(registry),
                Token(t) if (t - 1) % STRIDE == 0 => {
                    let i = (t - 1) / STRIDE;
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        server.set_readable(i);
                    }
                    server.service(registry, i)
                }
                Token(t) => server.read_done(registry, (t - 1) / STRIDE, (t - 1) % STRIDE - 1),
            }
        }
        server.on_timers(registry);
    }
}

/// A buffer of data to send: a pooled `Vec`, or an aligned buffer of a direct read.
enum Buf {
    Heap(Vec<u8>),
    Aligned(owned::AlignedBuf),
}

/// Bytes `pos..end` of a buffer, still to be sent.
struct Segment {
    buf: Buf,
    pos: usize,
    end: usize,
}

impl Deref for Segment {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let all: &[u8] = match &self.buf {
            Buf::Heap(v) => v,
            Buf::Aligned(a) => a,
        };
        &all[self.pos..self.end]
    }
}

/// A file read: into a `Vec` at an offset, or into an aligned buffer at an aligned offset,
/// with where the asked-for bytes start in the buffer.
enum FileRead {
    Heap(owned::ReadAt<Arc<File>, Vec<u8>>, u64),
    Aligned(owned::ReadAt<Arc<File>, owned::AlignedBuf>, u64, usize),
}

/// A read of a response's body, in flight or done and waiting for the reads before it.
struct Pending {
    slot: usize,
    read: FileRead,
    want: usize,
    done: Option<(io::Result<usize>, Buf, usize)>,
}

/// The body of a response still to be read from its file: bytes `next..end` not yet asked
/// for, and the reads in flight, in file order.
struct Body {
    file: Arc<File>,
    next: u64,
    end: u64,
    reads: VecDeque<Pending>,
    /// The read could not start (`EAGAIN`): retry at `Server::retry_at`.
    blocked: bool,
    /// No data read yet: the head waits to go out with the first chunk, in one write.
    first: bool,
}

struct Conn {
    stream: TcpStream,
    serial: u64,
    inbuf: Vec<u8>,
    /// The client has closed its side, or no more requests are read (after a 400).
    eof: bool,
    /// The socket may have data: false from `WouldBlock` to the next readable event (the
    /// registration is edge-triggered), which saves a `recv` per wake-up.
    readable: bool,
    out: VecDeque<Segment>,
    out_bytes: usize,
    body: Option<Body>,
    /// Close once the response in progress has been sent.
    close_after: bool,
    /// That response is sent and our side shut down: what the client still sends is read and
    /// dropped until it closes too (or `LINGER` passes), so that closing with unread data
    /// (which makes the kernel send a reset) cannot destroy the response before it is read.
    lingering: bool,
    last_active: Instant,
}

struct Server {
    root: PathBuf,
    direct: bool,
    chunk: usize,
    idle: Duration,
    listener: TcpListener,
    /// Connection slot `i` has token `1 + i * STRIDE`; its reads the next `DEPTH`.
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    next_serial: u64,
    /// (deadline, slot, serial): one per connection; a popped entry whose connection was
    /// active since is pushed back with its new deadline.
    deadlines: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    retry_at: Option<Instant>,
    /// Read buffers of `chunk` bytes' capacity, for reuse.
    pool: Vec<Vec<u8>>,
    files: OpenFiles,
}

/// What `Server::try_service` found: keep the connection, or close it (and why).
type Outcome = io::Result<bool>;

impl Server {
    fn next_timeout(&self) -> Option<Duration> {
        let idle = self.deadlines.peek().map(|Reverse((at, _, _))| *at);
        let at = match (idle, self.retry_at) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(at.saturating_duration_since(Instant::now()))
    }

    fn set_readable(&mut self, i: usize) {
        if let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) {
            conn.readable = true;
        }
    }

    fn accept(&mut self, registry: &Registry) {
        loop {
            let mut stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: retry soon.
                    eprintln!("http_server: accept: {e}");
                    self.retry_at = Some(Instant::now() + RETRY);
                    return;
                }
            };
            let i = match self.free.pop() {
                Some(i) => i,
                None if self.conns.len() < MAX_CONNS => {
                    self.conns.push(None);
                    self.conns.len() - 1
                }
                None => continue, // Too many clients: this one is closed.
            };
            let _ = stream.set_nodelay(true);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = registry.register(&mut stream, Token(1 + i * STRIDE), interest) {
                eprintln!("http_server: register: {e}");
                self.free.push(i);
                continue;
            }
            self.next_serial += 1;
            let now = Instant::now();
            self.conns[i] = Some(Conn {
                stream,
                serial: self.next_serial,
                inbuf: Vec::new(),
                eof: false,
                readable: true,
                out: VecDeque::new(),
                out_bytes: 0,
                body: None,
                close_after: false,
                lingering: false,
                last_active: now,
            });
            self.deadlines
                .push(Reverse((now + self.idle, i, self.next_serial)));
            self.service(registry, i);
        }
    }

    /// Does all that can be done for connection `i` now, and closes it when it is finished.
    fn service(&mut self, registry: &Registry, i: usize) {
        match self.try_service(registry, i) {
            Ok(true) => {}
            Ok(false) => self.close(registry, i, None),
            Err(e) => self.close(registry, i, Some(e)),
        }
    }

    fn try_service(&mut self, registry: &Registry, i: usize) -> Outcome {
        loop {
            let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else {
                return Ok(true);
            };
            let before = (conn.inbuf.len(), conn.out_bytes, conn.eof, conn.out.len());
            conn.receive()?;
            if conn.body.is_none() && conn.out.is_empty() && !conn.close_after && !conn.lingering {
                self.next_request(i)?;
            }
            self.start_reads(registry, i)?;
            let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else {
                return Ok(true);
            };
            if !conn.body.as_ref().is_some_and(|b| b.first) {
                conn.flush(&mut self.pool, self.chunk)?;
            }
            let answered = conn.body.is_none() && conn.out.is_empty();
            if conn.lingering {
                conn.inbuf.clear();
                if conn.eof {
                    return Ok(false);
                }
            } else if answered && conn.close_after {
                conn.stream.shutdown(std::net::Shutdown::Write)?;
                conn.lingering = true;
                conn.eof = false;
                conn.inbuf.clear();
                conn.last_active = Instant::now();
                continue;
            } else if answered && conn.eof && conn.inbuf.is_empty() {
                return Ok(false);
            }
            if answered && conn.eof && matches!(http::parse(&conn.inbuf), Parsed::Partial) {
                return Ok(false); // A request cut short by the client's close.
            }
            let after = (conn.inbuf.len(), conn.out_bytes, conn.eof, conn.out.len());
            if after == before {
                return Ok(true);
            }
        }
    }

    /// Parses the next request of connection `i` and queues its response head (and the whole
    /// response, for an error), or its body's `Body`.
    fn next_request(&mut self, i: usize) -> io::Result<()> {
        let Some(conn) = self.conns[i].as_mut() else {
            return Ok(());
        };
        let Parsed::Complete(len, request) = http::parse(&conn.inbuf) else {
            return Ok(());
        };
        conn.inbuf.drain(..len);
        let request = match request {
            Ok(r) => r,
            Err(_why) => {
                conn.eof = true;
                conn.inbuf.clear();
                conn.close_after = true;
                conn.push(http::error(400, false, false));
                return Ok(());
            }
        };
        let keep_alive = request.keep_alive;
        conn.close_after = !keep_alive;
        let Some(method) = request.method else {
            conn.push(http::error(405, keep_alive, false));
            return Ok(());
        };
        let head_only = method == Method::Head;
        let path = match http::resolve(&self.root, &request.target) {
            Ok(path) => path,
            Err(NoFile::Malformed) => {
                conn.close_after = true;
                conn.push(http::error(400, false, head_only));
                return Ok(());
            }
            Err(NoFile::NotFound) => {
                conn.push(http::error(404, keep_alive, head_only));
                return Ok(());
            }
        };
        let file = match self.files.open(&self.root, &path, self.direct) {
            Ok(f) => f,
            Err(e) => {
                conn.push(http::error(http::status_of(&e), keep_alive, head_only));
                return Ok(());
            }
        };
        let (file, size) = file;
        let content_type = format!("Content-Type: {}", http::content_type(&path));
        let (status, start, end, content_range) = match http::range(request.range.as_deref(), size)
        {
            Ranged::Whole => (200, 0, size, None),
            Ranged::Part(start, end) => (
                206,
                start,
                end,
                Some(format!("Content-Range: bytes {start}-{}/{size}", end - 1)),
            ),
            Ranged::Unsatisfiable => {
                let range = format!("Content-Range: bytes */{size}");
                conn.push(http::head(416, &[&range], 0, keep_alive));
                return Ok(());
            }
        };
        let mut headers = vec![content_type.as_str(), "Accept-Ranges: bytes"];
        if let Some(range) = &content_range {
            headers.push(range);
        }
        conn.push(http::head(status, &headers, end - start, keep_alive));
        if !head_only && start < end {
            conn.body = Some(Body {
                file,
                next: start,
                end,
                reads: VecDeque::new(),
                blocked: false,
                first: true,
            });
        }
        Ok(())
    }

    /// Starts the next chunk's read of connection `i`'s body, if it has none in flight and
    /// at most one chunk waits to be sent.
    fn start_reads(&mut self, registry: &Registry, i: usize) -> io::Result<()> {
        let Some(conn) = self.conns[i].as_mut() else {
            return Ok(());
        };
        let Some(body) = conn.body.as_mut() else {
            return Ok(());
        };
        if body.next >= body.end && body.reads.is_empty() {
            conn.body = None;
            return Ok(());
        }
        while body.reads.len() < DEPTH
            && body.next < body.end
            && !body.blocked
            && conn.out_bytes <= self.chunk
        {
            let want = (body.end - body.next).min(self.chunk as u64) as usize;
            let free = (0..DEPTH).find(|k| body.reads.iter().all(|p| p.slot != *k));
            let slot = free.expect("fewer than DEPTH reads use fewer than DEPTH slots");
            let token = read_token(i, slot);
            let file = Arc::clone(&body.file);
            match start_read(
                registry,
                token,
                file,
                body.next,
                want,
                self.direct,
                &mut self.pool,
                self.chunk,
            )? {
                Some(read) => {
                    body.reads.push_back(Pending {
                        slot,
                        read,
                        want,
                        done: None,
                    });
                    body.next += want as u64;
                }
                None => {
                    body.blocked = true;
                    self.retry_at = Some(Instant::now() + RETRY);
                }
            }
        }
        Ok(())
    }

    /// Read `slot` of connection `i` is complete (or this is a stale or spurious event): the
    /// reads complete in any order, their data is sent in file order.
    fn read_done(&mut self, registry: &Registry, i: usize, slot: usize) {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let Some(body) = conn.body.as_mut() else {
            return;
        };
        let Some(pending) = body.reads.iter_mut().find(|p| p.slot == slot) else {
            return;
        };
        let Some(done) = pending.read.take_result() else {
            return; // Still running.
        };
        pending.done = Some(done);
        while body.reads.front().is_some_and(|p| p.done.is_some()) {
            let Some(Pending {
                slot,
                read,
                want,
                done: Some((result, buf, skip)),
            }) = body.reads.pop_front()
            else {
                unreachable!("the front read is done");
            };
            let offset = read.offset(skip);
            let useful = match result {
                Ok(n) => n.saturating_sub(skip).min(want),
                Err(e) => {
                    let msg = format!("reading the file at {offset}: {e}");
                    return self.close(registry, i, Some(io::Error::new(e.kind(), msg)));
                }
            };
            if useful == 0 {
                // The file shrank: the promised Content-Length cannot be kept.
                let e = io::Error::new(ErrorKind::UnexpectedEof, "the file shrank while served");
                return self.close(registry, i, Some(e));
            }
            if useful < want {
                // A short read: the rest is read again, before the reads that follow it.
                let (rest_at, rest) = (offset + useful as u64, want - useful);
                let token = read_token(i, slot);
                let file = Arc::clone(&body.file);
                match start_read(
                    registry,
                    token,
                    file,
                    rest_at,
                    rest,
                    self.direct,
                    &mut self.pool,
                    self.chunk,
                ) {
                    Ok(Some(read)) => body.reads.push_front(Pending {
                        slot,
                        read,
                        want: rest,
                        done: None,
                    }),
                    Ok(None) => {
                        let e =
                            io::Error::new(ErrorKind::WouldBlock, "no room to resume a short read");
                        return self.close(registry, i, Some(e));
                    }
                    Err(e) => return self.close(registry, i, Some(e)),
                }
            }
            body.first = false;
            conn.last_active = Instant::now();
            conn.out_bytes += useful;
            conn.out.push_back(Segment {
                buf,
                pos: skip,
                end: skip + useful,
            });
        }
        self.service(registry, i);
    }

    /// Closes idle connections whose deadline passed, and retries what waited for room.
    fn on_timers(&mut self, registry: &Registry) {
        let now = Instant::now();
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.accept(registry);
            let blocked: Vec<usize> = (0..self.conns.len())
                .filter(|&i| {
                    let body = self.conns[i].as_mut().and_then(|c| c.body.as_mut());
                    body.is_some_and(|b| std::mem::take(&mut b.blocked))
                })
                .collect();
            for i in blocked {
                self.service(registry, i);
            }
        }
        while let Some(&Reverse((at, i, serial))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some(conn) = self.conns[i].as_ref().filter(|c| c.serial == serial) else {
                continue;
            };
            let waiting_for_file = conn.body.as_ref().is_some_and(|b| !b.reads.is_empty());
            let patience = if conn.lingering {
                self.idle.min(LINGER)
            } else {
                self.idle
            };
            let deadline = conn.last_active + patience;
            if waiting_for_file || deadline > now {
                let next = if waiting_for_file {
                    now + self.idle
                } else {
                    deadline
                };
                self.deadlines.push(Reverse((next, i, serial)));
            } else {
                self.close(registry, i, None);
            }
        }
    }

    fn close(&mut self, registry: &Registry, i: usize, error: Option<io::Error>) {
        let Some(mut conn) = self.conns[i].take() else {
            return;
        };
        let _ = registry.deregister(&mut conn.stream);
        self.free.push(i);
        if let Some(e) = error {
            if !matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) {
                eprintln!("http_server: connection closed: {e}");
            }
        }
        // A read still in flight is dropped with `conn`: mio-aio cancels it and frees its
        // buffer once the kernel is done; its token may still come once, and is ignored.
    }
}

impl Conn {
    fn push(&mut self, bytes: Vec<u8>) {
        self.out_bytes += bytes.len();
        self.out.push_back(Segment {
            end: bytes.len(),
            buf: Buf::Heap(bytes),
            pos: 0,
        });
    }

    /// Receives what the client sent, while `inbuf` has room.
    fn receive(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        while !self.eof && self.readable && self.inbuf.len() < MAX_INBUF {
            match self.stream.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    if !self.lingering {
                        self.inbuf.extend_from_slice(&buf[..n]);
                        self.last_active = Instant::now();
                    }
                    // A short read took all there was: anything that arrives later brings a
                    // new edge-triggered event.
                    self.readable = n == buf.len();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends as much of `out` as the socket takes, and returns the sent read buffers of
    /// `chunk` bytes' capacity to `pool`.
    fn flush(&mut self, pool: &mut Vec<Vec<u8>>, chunk: usize) -> io::Result<()> {
        while !self.out.is_empty() {
            let slices: Vec<IoSlice> = self.out.iter().take(16).map(|s| IoSlice::new(s)).collect();
            let mut n = match self.stream.write_vectored(&slices) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.out_bytes -= n;
            self.last_active = Instant::now();
            while n > 0 {
                let front = self.out.front_mut().expect("sent bytes come from `out`");
                let take = n.min(front.len());
                front.pos += take;
                n -= take;
                if front.pos == front.end {
                    if let Some(Segment {
                        buf: Buf::Heap(v), ..
                    }) = self.out.pop_front()
                    {
                        if v.capacity() == chunk && pool.len() < POOL {
                            pool.push(v);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The token of read `slot` of connection slot `i`.
fn read_token(i: usize, slot: usize) -> Token {
    Token(1 + i * STRIDE + 1 + slot)
}

/// Starts a read of `want` bytes of `file` at `offset` under `token`: into a pooled `Vec`, or
/// with `direct` into an aligned buffer covering the aligned span around the bytes. `None`:
/// the system has no room (`EAGAIN`), try again later.
#[allow(clippy::too_many_arguments)]
fn start_read(
    registry: &Registry,
    token: Token,
    file: Arc<File>,
    offset: u64,
    want: usize,
    direct: bool,
    pool: &mut Vec<Vec<u8>>,
    chunk: usize,
) -> io::Result<Option<FileRead>> {
    let mut read = if direct {
        let align = owned::AlignedBuf::alignment_for(&*file)? as u64;
        let start = offset / align * align;
        let span = (offset + want as u64).div_ceil(align) * align - start;
        let buf = owned::AlignedBuf::new(span as usize, align as usize)?;
        let skip = (offset - start) as usize;
        FileRead::Aligned(owned::ReadAt::read_at(file, start, buf, 0), start, skip)
    } else {
        let mut buf = pool.pop().unwrap_or_else(|| Vec::with_capacity(chunk));
        buf.resize(want, 0);
        FileRead::Heap(owned::ReadAt::read_at(file, offset, buf, 0), offset)
    };
    let submitted = match &mut read {
        FileRead::Heap(r, _) => registry
            .register(r, token, mio_aio::AIO)
            .map(|()| r.submit()),
        FileRead::Aligned(r, _, _) => registry
            .register(r, token, mio_aio::AIO)
            .map(|()| r.submit()),
    }?;
    match submitted {
        Ok(()) => Ok(Some(read)),
        Err(Errno::EAGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl FileRead {
    /// The result, the buffer and where the asked-for bytes start in it, once complete.
    fn take_result(&mut self) -> Option<(io::Result<usize>, Buf, usize)> {
        match self {
            FileRead::Heap(r, _) => r.take_result().map(|(res, buf)| (res, Buf::Heap(buf), 0)),
            FileRead::Aligned(r, _, skip) => {
                let skip = *skip;
                r.take_result()
                    .map(|(res, buf)| (res, Buf::Aligned(buf), skip))
            }
        }
    }

    /// The file offset of the asked-for bytes (`skip` into the buffer).
    fn offset(&self, skip: usize) -> u64 {
        match self {
            FileRead::Heap(_, at) => *at,
            FileRead::Aligned(_, start, _) => start + skip as u64,
        }
    }
}
