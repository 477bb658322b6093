//! The data file: creating it, its read and write regions, opening it for a regime, and keeping
//! it in the page cache.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
    process::Command,
};

use super::{
    measure::Rng,
    pattern,
    spec::{Regime, Workload, BLOCK},
};

/// The default data file: a 1 GiB read region followed by a 256 MiB write region.
pub const DEFAULT_SIZE: u64 = 1280 << 20;

/// The default data file's name in `target/bench-data/`.
pub const DEFAULT_NAME: &str = "bench1280m";

/// The open flag of the direct regime: `O_DIRECT`, which macOS and OpenBSD do not have (there
/// the flag is 0 and the "direct" regime reads through the page cache like the buffered one).
#[cfg(not(any(target_os = "macos", target_os = "openbsd")))]
pub const O_DIRECT: i32 = libc::O_DIRECT;
#[cfg(any(target_os = "macos", target_os = "openbsd"))]
pub const O_DIRECT: i32 = 0;

/// A run of whole blocks of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Its first block.
    pub first: u64,
    pub blocks: u64,
}

impl Region {
    /// A random block of the region; with `lanes` > 1, one of the blocks of lane `lane`
    /// (`first + lane + k·lanes`), so that operations of different lanes never touch the same
    /// block.
    #[inline]
    pub fn pick(&self, rng: &mut Rng, lane: u64, lanes: u64) -> u64 {
        if lanes <= 1 {
            self.first + rng.next_u64() % self.blocks
        } else {
            self.first + lane + lanes * (rng.next_u64() % (self.blocks / lanes))
        }
    }

    pub fn offset_bytes(&self) -> u64 {
        self.first * BLOCK as u64
    }

    pub fn len_bytes(&self) -> u64 {
        self.blocks * BLOCK as u64
    }
}

/// Where reads and writes go: reads in the first four fifths of the file, writes in the last
/// fifth (MiB-rounded). Write rows of fio and the baselines write their own bytes, so keeping
/// them out of the read region keeps every block a read can return checkable (see `pattern`).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub read: Region,
    pub write: Region,
}

impl Layout {
    pub fn of(size: u64) -> Layout {
        let mib = size >> 20;
        let write_mib = (mib / 5).max(1);
        let blocks_per_mib = (1 << 20) / BLOCK as u64;
        let read_blocks = (mib - write_mib) * blocks_per_mib;
        Layout {
            read: Region {
                first: 0,
                blocks: read_blocks,
            },
            write: Region {
                first: read_blocks,
                blocks: write_mib * blocks_per_mib,
            },
        }
    }

    pub fn region(&self, workload: Workload) -> Region {
        match workload {
            Workload::RandRead => self.read,
            Workload::RandWrite => self.write,
        }
    }
}

/// Cargo's target directory of this benchmark binary (`target/release/deps/compare-…`).
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// The file every point reads and writes: `path` as given, or [`DEFAULT_NAME`] in
/// `target/bench-data/`: every block as `pattern` describes it with stamp 0, created once and
/// rewritten when a sample of its read region does not hold that pattern. Returns its path
/// and size (whole MiB).
pub fn prepare(path: Option<&Path>) -> io::Result<(PathBuf, u64)> {
    if let Some(p) = path {
        let size = std::fs::metadata(p)?.len();
        if size < 5 << 20 {
            return Err(io::Error::other(format!(
                "{}: {size} bytes; the benchmark wants at least 5 MiB",
                p.display()
            )));
        }
        return Ok((p.to_path_buf(), size - size % (1 << 20)));
    }
    let dir = target_dir().join("bench-data");
    std::fs::create_dir_all(&dir)?;
    let p = dir.join(DEFAULT_NAME);
    let sized = std::fs::metadata(&p).ok().map(|m| m.len()) == Some(DEFAULT_SIZE);
    if !sized || !holds_pattern(&p, DEFAULT_SIZE)? {
        eprintln!(
            "writing {} (1280 MiB of pseudo-random blocks, each a function of its number)…",
            p.display()
        );
        let mut f = File::create(&p)?;
        let mut chunk = vec![0u8; 1 << 20];
        for mib in 0..DEFAULT_SIZE >> 20 {
            for (i, block) in chunk.chunks_exact_mut(BLOCK).enumerate() {
                pattern::fill(block, mib * ((1 << 20) / BLOCK as u64) + i as u64, 0);
            }
            f.write_all(&chunk)?;
        }
        f.sync_all()?;
    }
    Ok((p, DEFAULT_SIZE))
}

/// Whether 64 blocks spread over the read region of `path` (and its first and last block) hold
/// the pattern with stamp 0.
pub fn holds_pattern(path: &Path, size: u64) -> io::Result<bool> {
    let f = File::open(path)?;
    let read = Layout::of(size).read;
    let (mut buf, mut scratch) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    let step = (read.blocks / 64).max(1);
    let samples = (0..read.blocks)
        .step_by(step as usize)
        .chain([read.blocks - 1]);
    for block in samples {
        f.read_exact_at(&mut buf, block * BLOCK as u64)?;
        if !pattern::matches(&buf, block, 0, &mut scratch) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Opens the file for reading and writing, with `O_DIRECT` in the direct regime.
pub fn open(path: &Path, regime: Regime) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if regime == Regime::Direct {
        o.custom_flags(O_DIRECT);
    }
    o.open(path)
}

/// The file system type of `path`, as `stat -f` names it (`ext2/ext3` for ext4, `tmpfs`).
pub fn fs_type(path: &Path) -> String {
    Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The fraction of the file in the page cache, from util-linux `fincore` (None without it).
pub fn residency(path: &Path) -> Option<f64> {
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--raw", "--output", "RES,SIZE"])
        .arg(path)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>());
    let (res, size) = (fields.next()?.ok()?, fields.next()?.ok()?);
    Some(if size > 0.0 { res / size } else { 1.0 })
}

/// Reads the whole file once, so that the page cache holds it.
pub fn warm(path: &Path) -> io::Result<()> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

/// The residency from which the file counts as cached: the VM's DAMON pageout daemon keeps
/// evicting a few cold pages, so exactly 100% is rarely seen for long. A point that then misses
/// the cache is caught by the storage reads it causes (see `runner`).
pub const RESIDENT: f64 = 0.995;

/// Makes sure the file is in the page cache: reads it again while `fincore` says part of it is
/// missing (the VM's DAMON pageout daemon evicts cold pages). Returns the residency.
pub fn ensure_resident(path: &Path) -> io::Result<Option<f64>> {
    for _ in 0..2 {
        match residency(path) {
            Some(r) if r >= RESIDENT => return Ok(Some(r)),
            None => {
                warm(path)?;
                return Ok(None);
            }
            Some(_) => warm(path)?,
        }
    }
    Ok(residency(path))
}

/// Writes back whatever the previous write point left dirty (outside any timed window).
pub fn sync(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}
