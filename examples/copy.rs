//! A `cp`/`dd`-like file copy built on mio-aio batches (`LioCb`).
//!
//! ```text
//! cargo run --release --example copy -- SRC DST [--block-size N] [--depth N] [--direct]
//!                                             [--remove-partial]
//! ```
//!
//! The options are explained by `--help` (see [`HELP`]).
//!
//! DST is created or truncated, like `cp` does. The copy is pipelined: while batch i is being
//! written to DST, batch i+1 is already being read from SRC, into a second set of buffers. Both
//! batches are event sources of the same `mio::Poll`: the loop submits them and waits for their
//! two events (and resubmits what the system had no room for: `LioError::EINCOMPLETE` or
//! `EAGAIN`). At the end, an `Fsync` makes DST durable, then the tool prints the bytes copied
//! and the speed (MB/s, 10^6 bytes per second, fsync included).
//!
//! The end of SRC: a read that returns fewer bytes than asked marks it, and only the bytes
//! read are written. With `--direct` that tail may not be a multiple of 4096 bytes, which
//! `O_DIRECT` cannot write: the tail block is written padded with zeros to the next multiple
//! of 4096, and DST is then truncated to the exact size of SRC.
//!
//! Failures, as `cp` reports them: the message names the file, the offset and the system's
//! error (`ENOSPC: No space left on device`), and the exit status is 1 (2 for a bad command
//! line). A write that the file system accepts only in part (a full disk often does that) is
//! continued with the rest of the block, so that the error reported is the real cause, never a
//! byte count. Once DST has been opened, a failure leaves it incomplete: the tool says so and
//! gives its size, or, with `--remove-partial`, deletes it (a regular file only).

use std::{
    error::Error,
    ffi::OsString,
    fs::{File, OpenOptions},
    io::{self, ErrorKind},
    os::{
        fd::AsFd,
        unix::fs::{FileTypeExt, MetadataExt},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use mio::{Events, Poll, Token};
use mio_aio::{
    AioFsyncMode, Errno, Fsync, LioCb, LioCbBuilder, LioError, LioOpcode, SourceApi, WriteAt,
};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const USAGE: &str =
    "usage: copy SRC DST [--block-size N] [--depth N] [--direct] [--remove-partial]";
/// What `--help` prints after [`USAGE`].
const HELP: &str = "\
Copies SRC to DST (created, or truncated if it exists) with batches of asynchronous reads
and writes on one mio event loop, then makes DST durable with an fsync.

Options:
  --block-size N    the size of each read and write, in bytes, with an optional suffix
                    K, M or G (powers of 1024): 1 to 64M, default 256K. Below 512 every
                    byte costs far more system work: the tool warns.
  --depth N         the blocks per batch, 1 to 1024, default 16. A batch is submitted at
                    once and reported by one event; block size x depth is at most 256M.
  --direct          open both files with O_DIRECT, bypassing the page cache (the block
                    size must then be a multiple of 4096).
  --remove-partial  if the copy fails after DST was opened, delete DST instead of leaving
                    an incomplete file behind.
  -h, --help        print this help.

Exit status: 0 on success, 1 if the copy failed, 2 for a bad command line.";
/// Below this block size the tool warns that the copy will be slow.
const SMALL_BLOCK: usize = 512;
/// The alignment of buffers, offsets and lengths with `--direct`.
const ALIGN: usize = 4096;
const DEFAULT_BLOCK_SIZE: usize = 256 << 10;
const DEFAULT_DEPTH: usize = 16;
const MAX_BLOCK_SIZE: usize = 64 << 20;
const MAX_DEPTH: usize = 1024;
/// The most memory one set of buffers (block size x depth) may take; there are two sets.
const MAX_SET: usize = 256 << 20;
/// How soon to retry a submission the system had no room for.
const RETRY: Duration = Duration::from_millis(1);

const READS: Token = Token(0);
const WRITES: Token = Token(1);
const FSYNC: Token = Token(2);
/// The single writes that finish a block the file system accepted only in part.
const REST: Token = Token(3);

struct Args {
    src: PathBuf,
    dst: PathBuf,
    block_size: usize,
    depth: usize,
    direct: bool,
    remove_partial: bool,
}

fn main() {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}\n\n{HELP}");
            return;
        }
        Err(e) => {
            eprintln!("copy: {e}\n{USAGE}\n(copy --help explains the options)");
            std::process::exit(2);
        }
    };
    if args.block_size < SMALL_BLOCK {
        eprintln!(
            "copy: warning: --block-size {} is very small: one read and one write per {} \
             bytes, so a large file takes a long time (the default is 256K)",
            args.block_size, args.block_size
        );
    }
    if let Err(e) = run(&args) {
        eprintln!("copy: {e}");
        std::process::exit(1);
    }
}

/// Parses the command line; `Ok(None)` for `--help`.
fn parse_args(
    mut args: impl Iterator<Item = OsString>,
) -> std::result::Result<Option<Args>, String> {
    let mut paths = Vec::new();
    let mut block_size = DEFAULT_BLOCK_SIZE;
    let mut depth = DEFAULT_DEPTH;
    let mut direct = false;
    let mut remove_partial = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .and_then(|v| v.into_string().ok())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(None),
            Some("--block-size") => block_size = parse_size(&value("--block-size")?)?,
            Some("--depth") => {
                let v = value("--depth")?;
                depth = v
                    .parse()
                    .map_err(|_| format!("bad --depth {v:?}: expected a number of blocks"))?;
            }
            Some("--direct") => direct = true,
            Some("--remove-partial") => remove_partial = true,
            Some(s) if s.starts_with('-') && s.len() > 1 => {
                return Err(format!("unknown option {s}"))
            }
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    let [src, dst] = <[PathBuf; 2]>::try_from(paths)
        .map_err(|p| format!("expected two paths, SRC and DST, not {}", p.len()))?;
    if !(1..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(format!(
            "--block-size {block_size} is out of range: it must be 1 to {MAX_BLOCK_SIZE} bytes (64M)"
        ));
    }
    if direct && block_size % ALIGN != 0 {
        return Err(format!(
            "with --direct, the block size must be a multiple of {ALIGN}"
        ));
    }
    if !(1..=MAX_DEPTH).contains(&depth) {
        return Err(format!(
            "--depth {depth} is out of range: it must be 1 to {MAX_DEPTH} blocks per batch"
        ));
    }
    if block_size * depth > MAX_SET {
        return Err(format!(
            "block size x depth must be at most {} MiB",
            MAX_SET >> 20
        ));
    }
    Ok(Some(Args {
        src,
        dst,
        block_size,
        depth,
        direct,
        remove_partial,
    }))
}

/// Parses a size: a number with an optional suffix K, M or G (powers of 1024), optionally
/// followed by `B` or `iB`.
fn parse_size(s: &str) -> std::result::Result<usize, String> {
    let bad = || format!("bad size {s:?}");
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits);
    let shift = match suffix.trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        _ => return Err(bad()),
    };
    let number: usize = number.parse().map_err(|_| bad())?;
    number.checked_mul(1 << shift).ok_or_else(bad)
}

/// Opens `path` with `O_DIRECT` or not, explaining the usual failure.
fn open(path: &Path, options: &mut OpenOptions, direct: bool) -> Result<File> {
    if direct {
        #[cfg(not(any(target_os = "macos", target_os = "openbsd")))]
        std::os::unix::fs::OpenOptionsExt::custom_flags(options, libc::O_DIRECT);
        #[cfg(any(target_os = "macos", target_os = "openbsd"))]
        return Err(format!("{}: this system has no O_DIRECT", path.display()).into());
    }
    options.open(path).map_err(|e| {
        if direct && e.raw_os_error() == Some(libc::EINVAL) {
            format!("{}: O_DIRECT is not supported here: {e}", path.display()).into()
        } else {
            format!("{}: {e}", path.display()).into()
        }
    })
}

/// A buffer whose start is aligned to `ALIGN` bytes, as `O_DIRECT` wants: a `Vec`
/// over-allocated by `ALIGN - 1` bytes and sliced at its first aligned address.
struct AlignedBuf {
    vec: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let vec = vec![0u8; len + ALIGN - 1];
        // The distance from the allocation's address to the next multiple of ALIGN.
        let start = (vec.as_ptr() as usize).wrapping_neg() % ALIGN;
        AlignedBuf { vec, start, len }
    }

    fn as_slice(&self) -> &[u8] {
        &self.vec[self.start..self.start + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.vec[self.start..self.start + self.len]
    }
}

/// The event loop: mio's `Poll`, and how often it was interrupted.
struct EventLoop {
    poll: Poll,
    events: Events,
    interrupted: u64,
}

impl EventLoop {
    /// Waits for events (at most `timeout`), and returns their tokens.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Vec<Token>> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => Ok(self.events.iter().map(|e| e.token()).collect()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {
                // io_uring ran completion work on this thread: the caller polls again.
                self.interrupted += 1;
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }
}

/// Where a batch stands in `complete`.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Stage {
    /// To submit.
    Submit,
    /// Part was started (`EINCOMPLETE`); the rest is to start once the event has come.
    Partial,
    /// To resubmit: the part started earlier is complete, or the system had no room at all
    /// (`EAGAIN`).
    Resubmit,
    /// Everything was started; waiting for the event.
    Running,
    Done,
}

/// Submits the (registered) batches and runs the loop until each is complete.
fn complete(
    el: &mut EventLoop,
    args: &Args,
    batches: &mut [(Token, &mut LioCb<'_>)],
) -> Result<()> {
    let mut stages = vec![Stage::Submit; batches.len()];
    loop {
        for ((token, cb), stage) in batches.iter_mut().zip(&mut stages) {
            let r = match *stage {
                Stage::Submit => cb.submit(),
                Stage::Resubmit => cb.resubmit(),
                _ => continue,
            };
            *stage = match r {
                Ok(()) => Stage::Running,
                Err(LioError::EINCOMPLETE) => Stage::Partial,
                // No room for any of it: try again soon. (`resubmit`: on Linux, a second
                // `submit` of the same batch fails with EBUSY even after EAGAIN.)
                Err(LioError::EAGAIN) => Stage::Resubmit,
                Err(LioError::EIO(statuses)) => {
                    let (path, what) = if *token == READS {
                        (&args.src, "read")
                    } else {
                        (&args.dst, "write")
                    };
                    let first = statuses
                        .iter()
                        .find_map(|s| s.err().filter(|&e| e != Errno::EINPROGRESS));
                    let why = first.map_or("unknown error".to_string(), |e| e.to_string());
                    return Err(format!(
                        "{}: cannot start a batch of {what}s: {why}",
                        path.display()
                    )
                    .into());
                }
            };
        }
        if stages.iter().all(|&s| s == Stage::Done) {
            return Ok(());
        }
        let retry = stages
            .iter()
            .any(|&s| s == Stage::Submit || s == Stage::Resubmit);
        for token in el.wait(retry.then_some(RETRY))? {
            if let Some(k) = batches.iter().position(|(t, _)| *t == token) {
                stages[k] = match stages[k] {
                    Stage::Partial => Stage::Resubmit,
                    Stage::Running => Stage::Done,
                    s => s,
                };
            }
        }
    }
}

/// A batch of blocks read and waiting to be written.
struct Filled {
    /// The offset of the first block.
    offset: u64,
    /// The bytes read into each block.
    lens: Vec<usize>,
}

struct Summary {
    /// The bytes copied.
    bytes: u64,
    /// The batches written.
    batches: u64,
}

fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    let src = open(&args.src, OpenOptions::new().read(true), args.direct)?;
    let meta = src.metadata()?;
    if !meta.is_file() && !meta.file_type().is_block_device() {
        return Err(format!("{}: not a regular file", args.src.display()).into());
    }
    if let Ok(dst_meta) = std::fs::metadata(&args.dst) {
        if (dst_meta.dev(), dst_meta.ino()) == (meta.dev(), meta.ino()) {
            return Err("SRC and DST are the same file".into());
        }
    }
    let mut el = EventLoop {
        poll: Poll::new()?,
        events: Events::with_capacity(16),
        interrupted: 0,
    };
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    let dst = open(&args.dst, &mut options, args.direct)?;
    // From here on DST has been truncated: a failure says what is left of it.
    let result = copy_and_sync(&mut el, &src, &dst, args);
    drop(dst);
    match result {
        Ok(summary) => {
            report(&el, args, &summary, start);
            Ok(())
        }
        Err(e) => Err(format!("{e}\ncopy: {}", left_behind(&args.dst, args.remove_partial)).into()),
    }
}

/// What a failed copy left at `dst`, after deleting it if `remove` (and it is a regular file).
fn left_behind(dst: &Path, remove: bool) -> String {
    let shown = dst.display();
    match std::fs::metadata(dst) {
        Err(e) => format!("{shown}: {e}"),
        Ok(meta) if !meta.is_file() => format!("{shown} is not a regular file: left as it is"),
        Ok(_) if remove => match std::fs::remove_file(dst) {
            Ok(()) => format!("removed the incomplete {shown}"),
            Err(e) => format!("{shown} is incomplete, and could not be removed: {e}"),
        },
        Ok(meta) => format!(
            "{shown} is left incomplete ({} bytes, not a copy of SRC); delete it, or use \
             --remove-partial to have it deleted on failure",
            meta.len()
        ),
    }
}

/// Copies SRC into the open DST and makes DST durable.
fn copy_and_sync(el: &mut EventLoop, src: &File, dst: &File, args: &Args) -> Result<Summary> {
    let summary = copy(el, src, dst, args)?;
    if args.direct {
        // The tail was written padded to a multiple of ALIGN: cut DST to SRC's size.
        dst.set_len(summary.bytes)
            .map_err(|e| format!("{}: truncate: {e}", args.dst.display()))?;
    }

    let op = Fsync::fsync(dst.as_fd(), AioFsyncMode::O_SYNC, 0);
    run_one(el, op, FSYNC).map_err(|e| format!("{}: fsync: {e}", args.dst.display()))?;
    Ok(summary)
}

/// Prints what was copied and how fast.
fn report(el: &EventLoop, args: &Args, summary: &Summary, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    #[cfg(target_os = "linux")]
    let backend = mio_aio::backend().map_or_else(|e| format!("unknown ({e})"), |b| b.to_string());
    #[cfg(not(target_os = "linux"))]
    let backend = "POSIX AIO";
    println!(
        "copied {} bytes in {secs:.3} s: {:.1} MB/s ({} batches of up to {} x {} bytes, \
         direct I/O {}, backend {backend}, {} interrupted polls)",
        summary.bytes,
        summary.bytes as f64 / secs.max(1e-9) / 1e6,
        summary.batches,
        args.depth,
        args.block_size,
        if args.direct { "on" } else { "off" },
        el.interrupted,
    );
}

/// Copies SRC to DST, reading batch i+1 while writing batch i.
fn copy(el: &mut EventLoop, src: &File, dst: &File, args: &Args) -> Result<Summary> {
    let (bs, depth) = (args.block_size, args.depth);
    let mut sets = [AlignedBuf::new(bs * depth), AlignedBuf::new(bs * depth)];
    // The offset of the next batch to read; `None` once the end of SRC is reached.
    let mut next_read = Some(0u64);
    // The batch read last time round, to write this time.
    let mut to_write: Option<Filled> = None;
    let mut bytes = 0u64;
    let mut batches = 0u64;
    // Which set of buffers the next batch is read into; the other holds `to_write`.
    let mut flip = false;
    while next_read.is_some() || to_write.is_some() {
        let [a, b] = &mut sets;
        let (rbuf, wbuf) = if flip { (a, b) } else { (b, a) };

        // The batch reading into `rbuf`, and the one writing what `wbuf` got last time round.
        let mut reads =
            next_read.map(|offset| (offset, read_batch(src, offset, rbuf.as_mut_slice(), bs)));
        let mut writes = to_write
            .as_ref()
            .map(|filled| write_batch(dst, filled, wbuf.as_slice(), bs, args.direct));

        let mut running = Vec::new();
        if let Some((_, cb)) = reads.as_mut() {
            el.poll.registry().register(cb, READS, mio_aio::LIO)?;
            running.push((READS, cb));
        }
        if let Some(cb) = writes.as_mut() {
            el.poll.registry().register(cb, WRITES, mio_aio::LIO)?;
            running.push((WRITES, cb));
        }
        complete(el, args, &mut running)?;
        drop(running);

        if let (Some(cb), Some(filled)) = (writes, to_write.take()) {
            let results: Vec<_> = cb.into_results(|it| it.map(|r| r.result).collect());
            let written = filled.lens.iter().enumerate().filter(|(_, &n)| n > 0);
            for ((i, &n), result) in written.zip(results) {
                let at = filled.offset + (i * bs) as u64;
                let fail = |at: u64, e: &dyn std::fmt::Display| {
                    format!("{}: write at offset {at}: {e}", args.dst.display())
                };
                let want = write_len(n, args.direct);
                let done = result.map_err(|e| fail(at, &e))? as usize;
                if done < want {
                    // The file system took only part of the block (a nearly full disk does
                    // that): write the rest, which either completes or fails with the cause.
                    let rest = &wbuf.as_slice()[i * bs + done..i * bs + want];
                    let rest_at = at + done as u64;
                    write_rest(el, dst, rest_at, rest).map_err(|(at, e)| fail(at, &e))?;
                }
                bytes += n as u64;
            }
            batches += 1;
        }

        // Consuming the batch here ends its borrow of `rbuf`, which the padding below needs.
        let read_results = reads.map(|(offset, cb)| {
            let results: Vec<_> = cb.into_results(|it| it.map(|r| r.result).collect());
            (offset, results)
        });
        if let Some((offset, results)) = read_results {
            let mut lens = Vec::with_capacity(depth);
            let mut eof = false;
            for (i, result) in results.into_iter().enumerate() {
                let at = offset + (i * bs) as u64;
                let n = result.map_err(|e| format!("{}: read at {at}: {e}", args.src.display()))?
                    as usize;
                if eof && n > 0 {
                    return Err(format!(
                        "{}: short read before offset {at}, which is not the end",
                        args.src.display()
                    )
                    .into());
                }
                if n < bs {
                    // The end of SRC. Zero what --direct will write as padding.
                    eof = true;
                    let block = &mut rbuf.as_mut_slice()[i * bs..(i + 1) * bs];
                    block[n..write_len(n, args.direct)].fill(0);
                }
                lens.push(n);
            }
            next_read = (!eof).then_some(offset + (bs * depth) as u64);
            if lens.iter().any(|&n| n > 0) {
                to_write = Some(Filled { offset, lens });
            }
        }
        flip = !flip;
    }
    Ok(Summary { bytes, batches })
}

/// Writes all of `data` to DST at `offset`, one operation at a time; on failure, returns the
/// offset where it failed and why.
fn write_rest(
    el: &mut EventLoop,
    dst: &File,
    mut offset: u64,
    mut data: &[u8],
) -> std::result::Result<(), (u64, io::Error)> {
    while !data.is_empty() {
        let op = WriteAt::write_at(dst.as_fd(), offset, data, 0);
        match run_one(el, op, REST) {
            Ok(0) => return Err((offset, ErrorKind::WriteZero.into())),
            Ok(n) => {
                offset += n as u64;
                data = &data[n..];
            }
            Err(e) => return Err((offset, e)),
        }
    }
    Ok(())
}

/// Registers `op` under `token`, submits it (again, while the system has no room), waits for
/// its event, and returns its result. Errors are the system's (`ENOSPC: No space left on
/// device`), with the errno's name.
fn run_one<S>(el: &mut EventLoop, mut op: S, token: Token) -> io::Result<S::Output>
where
    S: SourceApi + mio::event::Source,
{
    let errno = |e: Errno| io::Error::other(e.to_string());
    el.poll.registry().register(&mut op, token, mio_aio::AIO)?;
    let mut op = Box::pin(op);
    loop {
        match op.as_mut().submit() {
            Ok(()) => break,
            Err(Errno::EAGAIN) => std::thread::sleep(RETRY),
            Err(e) => return Err(errno(e)),
        }
    }
    while !el.wait(None)?.contains(&token) {}
    op.as_mut().aio_return().map_err(errno)
}

/// A batch reading `buf.len() / bs` blocks of SRC from `offset` on, into `buf`.
fn read_batch<'a>(src: &'a File, offset: u64, buf: &'a mut [u8], bs: usize) -> LioCb<'a> {
    let mut builder = LioCbBuilder::with_capacity(buf.len() / bs);
    for (i, block) in buf.chunks_mut(bs).enumerate() {
        let at = offset + (i * bs) as u64;
        builder = builder.emplace_mut_slice(src.as_fd(), at, block, 0, LioOpcode::LIO_READ);
    }
    builder.finish()
}

/// A batch writing the blocks of `filled` (held in `buf`) to DST; empty blocks are skipped.
fn write_batch<'a>(
    dst: &'a File,
    filled: &Filled,
    buf: &'a [u8],
    bs: usize,
    direct: bool,
) -> LioCb<'a> {
    let mut builder = LioCbBuilder::with_capacity(filled.lens.len());
    for (i, (block, &n)) in buf.chunks(bs).zip(&filled.lens).enumerate() {
        if n > 0 {
            let at = filled.offset + (i * bs) as u64;
            let data = &block[..write_len(n, direct)];
            builder = builder.emplace_slice(dst.as_fd(), at, data, 0, LioOpcode::LIO_WRITE);
        }
    }
    builder.finish()
}

/// How much to write of a block holding `n` bytes: `n`, rounded up to ALIGN with `--direct`
/// (the padding, zeros, is cut off at the end).
fn write_len(n: usize, direct: bool) -> usize {
    if direct {
        n.next_multiple_of(ALIGN)
    } else {
        n
    }
}
