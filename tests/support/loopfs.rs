//! Small, private filesystems that run out of space quickly, for `ENOSPC`
//! tests, and a real block-device-backed filesystem for `O_DIRECT` tests.
//!
//! * [`LoopExt4`]: an ext4 filesystem (4 KiB blocks, no reserved blocks) on a
//!   loop device in direct-I/O mode, backed by a sparse image file.  `O_DIRECT`
//!   works and enforces the device's alignment: buffer address, file offset
//!   and length must be multiples of the logical block size (512 bytes here),
//!   otherwise `EINVAL`.  A 16 MiB filesystem holds about 11 MiB of data (the
//!   journal takes 4 MiB).
//! * [`Tmpfs`]: a size-limited tmpfs; cheaper (no external tools), but
//!   memory-backed and not a block device.
//!
//! Both need root with `CAP_SYS_ADMIN`; [`available`] and
//! [`tmpfs_available`] say why not.  Both are mounted on fresh temporary
//! directories and cleaned up on drop: close every file on them first, or
//! the unmount falls back to a lazy `MNT_DETACH` (and, for [`LoopExt4`],
//! the loop device is only released once the last file is closed).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why [`LoopExt4`] cannot work here, if it cannot: needs root with
/// `CAP_SYS_ADMIN`, `/dev/loop-control`, and the `losetup` and `mkfs.ext4`
/// programs.
pub fn available() -> Result<(), String> {
    mount_allowed()?;
    if !Path::new("/dev/loop-control").exists() {
        return Err("no /dev/loop-control (loop devices unsupported)".into());
    }
    for tool in ["losetup", "mkfs.ext4"] {
        find_tool(tool).ok_or_else(|| format!("`{tool}` not found in PATH or /sbin"))?;
    }
    Ok(())
}

/// Why [`Tmpfs`] cannot work here, if it cannot: needs root with
/// `CAP_SYS_ADMIN`.
pub fn tmpfs_available() -> Result<(), String> {
    mount_allowed()
}

fn mount_allowed() -> Result<(), String> {
    if !super::is_root() {
        return Err("mounting a filesystem needs root".into());
    }
    if !super::has_cap_sys_admin() {
        return Err("mounting a filesystem needs CAP_SYS_ADMIN".into());
    }
    Ok(())
}

/// An ext4 filesystem on a loop device, mounted on a temporary directory.
/// Unmounted, detached and deleted on drop.
#[derive(Debug)]
pub struct LoopExt4 {
    // Holds the image file and the mount point `mnt/`.
    root: tempfile::TempDir,
    mountpoint: PathBuf,
    device: Option<PathBuf>,
    mounted: bool,
}

impl LoopExt4 {
    /// Create a `size`-byte ext4 filesystem (at least a few MiB; 16 MiB is
    /// a good choice) on a new loop device and mount it.
    pub fn new(size: u64) -> io::Result<Self> {
        let root = tempfile::Builder::new()
            .prefix("mio-aio-loopext4.")
            .tempdir()?;
        let image = root.path().join("image");
        let mountpoint = root.path().join("mnt");
        std::fs::create_dir(&mountpoint)?;
        // From here on, `Drop` undoes whatever was done so far.
        let mut fs = LoopExt4 {
            root,
            mountpoint,
            device: None,
            mounted: false,
        };

        File::create(&image)?.set_len(size)?;
        run(Command::new(tool("mkfs.ext4")?)
            .args(["-q", "-F", "-m", "0", "-b", "4096"])
            .args(["-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&image))?;
        let dev = run(Command::new(tool("losetup")?)
            .args(["--find", "--show", "--direct-io=on"])
            .arg(&image))?;
        let dev = dev.trim();
        if !dev.starts_with("/dev/") {
            return Err(io::Error::other(format!(
                "losetup printed {dev:?} instead of a device"
            )));
        }
        fs.device = Some(PathBuf::from(dev));
        mount(Path::new(dev), &fs.mountpoint, "ext4", None)?;
        fs.mounted = true;
        Ok(fs)
    }

    /// [`LoopExt4::new`], or `None` after printing why through
    /// [`super::skip`] when [`available`] says it cannot work here.  Panics
    /// if it looks available but setting it up fails anyway.
    pub fn new_or_skip(size: u64) -> Option<Self> {
        if let Err(reason) = available() {
            super::skip(&reason);
            return None;
        }
        Some(Self::new(size).expect("setting up an ext4 loop-device filesystem"))
    }

    /// The mount point: an empty directory at first, where files may be
    /// created.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The loop device, e.g. `/dev/loop3`.
    pub fn device(&self) -> &Path {
        self.device.as_deref().expect("set up by new()")
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        if self.mounted {
            unmount(&self.mountpoint);
        }
        if let Some(dev) = &self.device {
            // After a lazy unmount with files still open this only marks the
            // device for auto-clear, which happens when the last file closes.
            let res = tool("losetup").and_then(|t| run(Command::new(t).arg("-d").arg(dev)));
            if let Err(e) = res {
                eprintln!("LoopExt4: could not detach {}: {e}", dev.display());
            }
        }
        // `root` (image and mount point) is removed after this.
    }
}

/// A size-limited tmpfs mounted on a temporary directory; unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mount a tmpfs that holds at most `size` bytes (rounded up to whole
    /// pages by the kernel).
    pub fn new(size: u64) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("mio-aio-tmpfs.")
            .tempdir()?;
        let opts = format!("size={size},mode=0755");
        mount(Path::new("tmpfs"), dir.path(), "tmpfs", Some(&opts))?;
        Ok(Tmpfs { dir })
    }

    /// [`Tmpfs::new`], or `None` after printing why through [`super::skip`]
    /// when [`tmpfs_available`] says it cannot work here.  Panics if it
    /// looks available but mounting fails anyway.
    pub fn new_or_skip(size: u64) -> Option<Self> {
        if let Err(reason) = tmpfs_available() {
            super::skip(&reason);
            return None;
        }
        Some(Self::new(size).expect("mounting a tmpfs"))
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        unmount(self.dir.path());
    }
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// `mount(2)` `source` of type `fstype` on `target`, with `nosuid,nodev`.
fn mount(source: &Path, target: &Path, fstype: &str, data: Option<&str>) -> io::Result<()> {
    let source = cstring(source)?;
    let target = cstring(target)?;
    let fstype = CString::new(fstype).map_err(io::Error::other)?;
    let data = data
        .map(CString::new)
        .transpose()
        .map_err(io::Error::other)?;
    let data_ptr = data
        .as_ref()
        .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
    // SAFETY: all pointers are valid NUL-terminated strings (or null for
    // `data`, which mount(2) allows) that outlive the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data_ptr,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("mount {source:?} on {target:?} ({fstype:?}): {e}"),
        ));
    }
    Ok(())
}

/// Unmount `target`; if it is busy, detach it lazily.  Reports failures on
/// stderr (this runs in `Drop`).
fn unmount(target: &Path) {
    let Ok(c) = cstring(target) else { return };
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return;
    }
    // SAFETY: as above.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        eprintln!(
            "could not unmount {}: {}",
            target.display(),
            io::Error::last_os_error()
        );
    }
}

/// Absolute path of an administration tool: searched in `PATH`, then in
/// `/usr/sbin` and `/sbin`, which a non-login `PATH` may lack.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn tool(name: &str) -> io::Result<PathBuf> {
    find_tool(name).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no `{name}`")))
}

/// Run `cmd`; return its stdout, or an error with its stderr if it fails.
fn run(cmd: &mut Command) -> io::Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
