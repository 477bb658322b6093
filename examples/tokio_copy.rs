//! An async file copy on tokio, with `mio_aio::tokio::AioFileExt`: DEPTH reads in flight.
//!
//! ```text
//! cargo run --release --example tokio_copy --features tokio -- SRC DST [--block-size N] [--depth N]
//! ```
//!
//! * `--block-size N`: the size of each read and write (default 256K; suffixes K, M, G).
//! * `--depth N`: how many blocks are copied at once (default 16), i.e. how many reads (or
//!   writes) are in flight.
//!
//! DST is created or truncated, like `cp` does. The copy runs DEPTH tasks on a multi-thread
//! runtime; task `t` copies blocks `t`, `t + DEPTH`, `t + 2 DEPTH`, …, each with one
//! `read_at(..).await` and one `write_at(..).await` into its own buffer. No thread waits for
//! the disk: each operation is submitted to the kernel (io_uring or kernel AIO on Linux, POSIX
//! AIO on FreeBSD) and its task sleeps until tokio's reactor reports the completion. At the
//! end, `sync_all` makes DST durable, and the tool prints the bytes copied and the speed (MB/s,
//! 10^6 bytes per second, fsync included).

use std::{
    error::Error,
    fs::{File, OpenOptions},
    io,
    path::PathBuf,
    sync::Arc,
    time::Instant,
};

use mio_aio::tokio::AioFileExt;
use tokio::task::JoinSet;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const USAGE: &str = "usage: tokio_copy SRC DST [--block-size N] [--depth N]";
const DEFAULT_BLOCK_SIZE: usize = 256 << 10;
const DEFAULT_DEPTH: usize = 16;
const MAX_BLOCK_SIZE: usize = 64 << 20;
const MAX_DEPTH: usize = 1024;

struct Args {
    src: PathBuf,
    dst: PathBuf,
    block_size: usize,
    depth: usize,
}

#[tokio::main]
async fn main() {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("tokio_copy: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = copy(&args).await {
        eprintln!("tokio_copy: {e}");
        std::process::exit(1);
    }
}

fn parse_args(mut it: impl Iterator<Item = std::ffi::OsString>) -> Result<Option<Args>> {
    let mut paths = Vec::new();
    let mut block_size = DEFAULT_BLOCK_SIZE;
    let mut depth = DEFAULT_DEPTH;
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(None),
            Some(opt @ ("--block-size" | "--depth")) => {
                let value = it.next().ok_or_else(|| format!("{opt} needs a value"))?;
                let value = value.to_str().ok_or_else(|| format!("bad {opt} value"))?;
                if opt == "--block-size" {
                    block_size = parse_size(value)?;
                    if block_size == 0 || block_size > MAX_BLOCK_SIZE {
                        return Err(format!("--block-size must be 1..={MAX_BLOCK_SIZE}").into());
                    }
                } else {
                    depth = value
                        .parse()
                        .ok()
                        .filter(|d| (1..=MAX_DEPTH).contains(d))
                        .ok_or_else(|| format!("--depth must be 1..={MAX_DEPTH}"))?;
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
    let (src, dst) = (Arc::new(src), Arc::new(dst));
    #[cfg(target_os = "linux")]
    println!("mio-aio backend: {}", mio_aio::backend()?);

    let started = Instant::now();
    let blocks = meta.len().div_ceil(args.block_size as u64);
    let mut tasks = JoinSet::new();
    for first in 0..(args.depth as u64).min(blocks.max(1)) {
        let (src, dst) = (Arc::clone(&src), Arc::clone(&dst));
        let (block_size, depth) = (args.block_size, args.depth as u64);
        tasks.spawn(async move {
            let mut buf = vec![0u8; block_size];
            let mut copied = 0u64;
            let mut block = first;
            loop {
                let offset = block * block_size as u64;
                let n = read_block(&src, &mut buf, offset).await?;
                write_all_at(&dst, &buf[..n], offset).await?;
                copied += n as u64;
                if n < block_size {
                    // The end of SRC (as it is now).
                    return Ok::<u64, io::Error>(copied);
                }
                block += depth;
            }
        });
    }
    let mut copied = 0;
    while let Some(r) = tasks.join_next().await {
        copied += r??;
    }
    // DST was truncated when opened, and blocks read past the end of SRC wrote nothing: its
    // length is right. Make it durable (`File` has a blocking `sync_all` of its own: name the
    // trait).
    AioFileExt::sync_all(&*dst).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "copied {copied} bytes in {secs:.3} s ({:.1} MB/s), block size {}, depth {}",
        copied as f64 / secs / 1e6,
        args.block_size,
        args.depth
    );
    Ok(())
}

/// Reads a whole block at `offset`, or up to the end of the file: returns the bytes read.
async fn read_block(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file
            .read_at(&mut buf[filled..], offset + filled as u64)
            .await?
        {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Writes all of `buf` at `offset`, going on after short writes.
async fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.write_at(&buf[done..], offset + done as u64).await? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => done += n,
        }
    }
    Ok(())
}
