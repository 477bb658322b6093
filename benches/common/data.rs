//! The data file: creating it, opening it for a regime, and keeping it in the page cache.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use super::{measure::Rng, spec::Regime};

/// The default size of the data file: 1 GiB.
pub const DEFAULT_SIZE: u64 = 1 << 30;

/// The open flag of the direct regime: `O_DIRECT`, which macOS and OpenBSD do not have (there
/// the flag is 0 and the "direct" regime reads through the page cache like the buffered one).
#[cfg(not(any(target_os = "macos", target_os = "openbsd")))]
pub const O_DIRECT: i32 = libc::O_DIRECT;
#[cfg(any(target_os = "macos", target_os = "openbsd"))]
pub const O_DIRECT: i32 = 0;

/// Cargo's target directory of this benchmark binary (`target/release/deps/compare-…`).
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// The file every point reads and writes: `path` as given, or a 1 GiB file of random data in
/// `target/bench-data/` (created once, reused afterwards). Returns its path and size.
pub fn prepare(path: Option<&Path>) -> io::Result<(PathBuf, u64)> {
    if let Some(p) = path {
        let size = std::fs::metadata(p)?.len();
        if size < 1 << 20 {
            return Err(io::Error::other(format!(
                "{}: {size} bytes; the benchmark wants at least 1 MiB",
                p.display()
            )));
        }
        return Ok((p.to_path_buf(), size - size % (1 << 20)));
    }
    let dir = target_dir().join("bench-data");
    std::fs::create_dir_all(&dir)?;
    let p = dir.join("bench1g");
    if std::fs::metadata(&p).ok().map(|m| m.len()) != Some(DEFAULT_SIZE) {
        eprintln!("creating {} (1 GiB of random data)…", p.display());
        let mut f = File::create(&p)?;
        let mut rng = Rng::new(0x00be_ac4e);
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..DEFAULT_SIZE >> 20 {
            for w in chunk.chunks_exact_mut(8) {
                w.copy_from_slice(&rng.next_u64().to_ne_bytes());
            }
            f.write_all(&chunk)?;
        }
        f.sync_all()?;
    }
    Ok((p, DEFAULT_SIZE))
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
