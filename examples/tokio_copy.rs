//! An async file copy on tokio, with `mio_aio::tokio::AioFileExt`: DEPTH reads in flight.
//!
//! ```text
//! cargo run --release --example tokio_copy --features tokio -- SRC DST [--block-size N]
//!                                                    [--depth N] [--remove-partial]
//! ```
//!
//! The options are explained by `--help` (see [`HELP`]).
//!
//! DST is created or truncated, like `cp` does. The copy runs DEPTH tasks on a multi-thread
//! runtime; task `t` copies blocks `t`, `t + DEPTH`, `t + 2 DEPTH`, …, each with one
//! `read_at(..).await` and one `write_at(..).await` into its own buffer. No thread waits for
//! the disk: each operation is submitted to the kernel (io_uring or kernel AIO on Linux, POSIX
//! AIO on FreeBSD) and its task sleeps until tokio's reactor reports the completion. At the
//! end, `sync_all` makes DST durable, and the tool prints the bytes copied and the speed (MB/s,
//! 10^6 bytes per second, fsync included).
//!
//! Failures, as `cp` reports them: the message names the file, the offset and the system's
//! error (`ENOSPC: No space left on device`), and the exit status is 1 (2 for a bad command
//! line). The first failure stops the copy: the other tasks are aborted (their operations are
//! cancelled and waited for). DST is then incomplete, with holes where blocks were not
//! written: the tool says so and gives its size, or, with `--remove-partial`, deletes it.

use std::{
    error::Error,
    fs::{File, OpenOptions},
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use mio_aio::{tokio::AioFileExt, Errno};
use tokio::task::JoinSet;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const USAGE: &str = "usage: tokio_copy SRC DST [--block-size N] [--depth N] [--remove-partial]";
/// What `--help` prints after [`USAGE`].
const HELP: &str = "\
Copies SRC to DST (created, or truncated if it exists) with DEPTH tokio tasks, each reading
and writing one block at a time with mio-aio's futures, then makes DST durable (fsync).

Options:
  --block-size N    the size of each read and write, in bytes, with an optional suffix
                    K, M or G (powers of 1024): 1 to 64M, default 256K. Below 512 every
                    byte costs far more system work: the tool warns.
  --depth N         how many blocks are copied at once (reads or writes in flight),
                    1 to 1024, default 16.
  --remove-partial  if the copy fails after DST was opened, delete DST instead of leaving
                    an incomplete file (with holes) behind.
  -h, --help        print this help.

Exit status: 0 on success, 1 if the copy failed, 2 for a bad command line.";
/// Below this block size the tool warns that the copy will be slow.
const SMALL_BLOCK: usize = 512;
const DEFAULT_BLOCK_SIZE: usize = 256 << 10;
const DEFAULT_DEPTH: usize = 16;
const MAX_BLOCK_SIZE: usize = 64 << 20;
const MAX_DEPTH: usize = 1024;

struct Args {
    src: PathBuf,
    dst: PathBuf,
    block_size: usize,
    depth: usize,
    remove_partial: bool,
}

#[tokio::main]
async fn main() {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}\n\n{HELP}");
            return;
        }
        Err(e) => {
            eprintln!("tokio_copy: {e}\n{USAGE}\n(tokio_copy --help explains the options)");
            std::process::exit(2);
        }
    };
    if args.block_size < SMALL_BLOCK {
        eprintln!(
            "tokio_copy: warning: --block-size {} is very small: one read and one write per {} \
             bytes, so a large file takes a long time (the default is 256K)",
            args.block_size, args.block_size
        );
    }
    if let Err(e) = copy(&args).await {
        eprintln!("tokio_copy: {e}");
        std::process::exit(1);
    }
}

fn parse_args(mut it: impl Iterator<Item = std::ffi::OsString>) -> Result<Option<Args>> {
    let mut paths = Vec::new();
    let mut block_size = DEFAULT_BLOCK_SIZE;
    let mut depth = DEFAULT_DEPTH;
    let mut remove_partial = false;
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(None),
            Some("--remove-partial") => remove_partial = true,
            Some(opt @ ("--block-size" | "--depth")) => {
                let value = it.next().ok_or_else(|| format!("{opt} needs a value"))?;
                let value = value.to_str().ok_or_else(|| format!("bad {opt} value"))?;
                if opt == "--block-size" {
                    block_size = parse_size(value)?;
                    if block_size == 0 || block_size > MAX_BLOCK_SIZE {
                        return Err(format!(
                            "--block-size {block_size} is out of range: it must be 1 to \
                             {MAX_BLOCK_SIZE} bytes (64M)"
                        )
                        .into());
                    }
                } else {
                    depth = value.parse().map_err(|_| {
                        format!("bad --depth {value:?}: expected a number of blocks")
                    })?;
                    if !(1..=MAX_DEPTH).contains(&depth) {
                        return Err(format!(
                            "--depth {depth} is out of range: it must be 1 to {MAX_DEPTH}"
                        )
                        .into());
                    }
                }
            }
            Some(s) if s.starts_with("--") => return Err(format!("unknown option {s}").into()),
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    let [src, dst]: [PathBuf; 2] = paths
        .try_into()
        .map_err(|_| "expected exactly two paths, SRC and DST")?;
    Ok(Some(Args {
        src,
        dst,
        block_size,
        depth,
        remove_partial,
    }))
}

/// `123`, `4K`, `1M`, `2G`.
fn parse_size(s: &str) -> Result<usize> {
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_uppercase()),
        _ => (s, ' '),
    };
    let shift = match unit {
        ' ' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("bad size {s:?}").into()),
    };
    let n: usize = digits.parse().map_err(|_| format!("bad size {s:?}"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} is too large").into())
}

async fn copy(args: &Args) -> Result<()> {
    let src = File::open(&args.src).map_err(|e| format!("{}: {e}", args.src.display()))?;
    let meta = src.metadata()?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", args.src.display()).into());
    }
    if let Ok(dst_meta) = std::fs::metadata(&args.dst) {
        use std::os::unix::fs::MetadataExt;
        if (dst_meta.dev(), dst_meta.ino()) == (meta.dev(), meta.ino()) {
            return Err("SRC and DST are the same file".into());
        }
    }
    let dst = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&args.dst)
        .map_err(|e| format!("{}: {e}", args.dst.display()))?;
    // From here on DST has been truncated: a failure says what is left of it.
    match copy_and_sync(args, src, dst, meta.len()).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let left = left_behind(&args.dst, args.remove_partial);
            Err(format!("{e}\ntokio_copy: {left}").into())
        }
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
            "{shown} is left incomplete ({} bytes, with holes where blocks were not written; \
             not a copy of SRC); delete it, or use --remove-partial to have it deleted on failure",
            meta.len()
        ),
    }
}

/// `e`, with the errno's name when it has one: `ENOSPC: No space left on device`.
fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => Errno::from_raw(code).to_string(),
        None => e.to_string(),
    }
}

/// Copies SRC (`len` bytes long when opened) into the open DST and makes DST durable; the
/// error names the file, the offset and the cause.
async fn copy_and_sync(args: &Args, src: File, dst: File, len: u64) -> Result<()> {
    let (src, dst) = (Arc::new(src), Arc::new(dst));
    #[cfg(target_os = "linux")]
    println!("mio-aio backend: {}", mio_aio::backend()?);

    let started = Instant::now();
    let blocks = len.div_ceil(args.block_size as u64);
    let mut tasks = JoinSet::new();
    for first in 0..(args.depth as u64).min(blocks.max(1)) {
        let (src, dst) = (Arc::clone(&src), Arc::clone(&dst));
        let (block_size, depth) = (args.block_size, args.depth as u64);
        let (src_path, dst_path) = (args.src.clone(), args.dst.clone());
        tasks.spawn(async move {
            let mut buf = vec![0u8; block_size];
            let mut copied = 0u64;
            let mut block = first;
            loop {
                let offset = block * block_size as u64;
                let n = read_block(&src, &mut buf, offset)
                    .await
                    .map_err(|(at, e)| {
                        format!(
                            "{}: read at offset {at}: {}",
                            src_path.display(),
                            describe(&e)
                        )
                    })?;
                write_all_at(&dst, &buf[..n], offset)
                    .await
                    .map_err(|(at, e)| {
                        format!(
                            "{}: write at offset {at}: {}",
                            dst_path.display(),
                            describe(&e)
                        )
                    })?;
                copied += n as u64;
                if n < block_size {
                    // The end of SRC (as it is now).
                    return Ok::<u64, String>(copied);
                }
                block += depth;
            }
        });
    }
    let mut copied = 0;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(n)) => copied += n,
            Ok(Err(e)) => {
                // Stop the others; their operations are cancelled and waited for as their
                // futures drop, before DST is looked at.
                tasks.shutdown().await;
                return Err(e.into());
            }
            Err(e) => {
                tasks.shutdown().await;
                return Err(format!("a copy task failed: {e}").into());
            }
        }
    }
    // DST was truncated when opened, and blocks read past the end of SRC wrote nothing: its
    // length is right. Make it durable (`File` has a blocking `sync_all` of its own: name the
    // trait).
    AioFileExt::sync_all(&*dst)
        .await
        .map_err(|e| format!("{}: fsync: {}", args.dst.display(), describe(&e)))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "copied {copied} bytes in {secs:.3} s ({:.1} MB/s), block size {}, depth {}",
        copied as f64 / secs / 1e6,
        args.block_size,
        args.depth
    );
    Ok(())
}

/// Reads a whole block at `offset`, or up to the end of the file: returns the bytes read, or
/// the offset where reading failed and why.
async fn read_block(
    file: &File,
    buf: &mut [u8],
    offset: u64,
) -> std::result::Result<usize, (u64, io::Error)> {
    let mut filled = 0;
    while filled < buf.len() {
        let at = offset + filled as u64;
        match file.read_at(&mut buf[filled..], at).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return Err((at, e)),
        }
    }
    Ok(filled)
}

/// Writes all of `buf` at `offset`, going on after short writes (so that a full disk reports
/// its error, not a byte count); on failure, returns the offset where it failed and why.
async fn write_all_at(
    file: &File,
    buf: &[u8],
    offset: u64,
) -> std::result::Result<(), (u64, io::Error)> {
    let mut done = 0;
    while done < buf.len() {
        let at = offset + done as u64;
        match file.write_at(&buf[done..], at).await {
            Ok(0) => return Err((at, io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) => return Err((at, e)),
        }
    }
    Ok(())
}
