//! A cache of open files for `examples/http_server.rs`, like nginx's `open_file_cache`: a file
//! served again within `valid` of its opening reuses the descriptor (and the size read then),
//! which saves four system calls per request and, on a FUSE or network file system, a round
//! trip to the file server that would block the event loop (`open` is synchronous).
//!
//! What this costs: for up to `valid`, a file replaced or resized is served as it was when
//! opened (a file that shrank ends its responses early: the server closes the connection),
//! and a path that disappeared is still served.

use std::{
    collections::HashMap,
    fs::File,
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use super::http;

/// The most files kept open.
const MAX_FILES: usize = 1024;

pub struct OpenFiles {
    valid: Duration,
    files: HashMap<PathBuf, (Arc<File>, u64, Instant)>,
}

impl OpenFiles {
    /// A cache whose entries are trusted for `valid` (zero: no cache).
    pub fn new(valid: Duration) -> Self {
        OpenFiles {
            valid,
            files: HashMap::new(),
        }
    }

    /// [`http::open_beneath`], or the file opened less than `valid` ago.
    pub fn open(&mut self, root: &Path, path: &Path, direct: bool) -> io::Result<(Arc<File>, u64)> {
        let now = Instant::now();
        if let Some((file, size, opened)) = self.files.get(path) {
            if now.duration_since(*opened) < self.valid {
                return Ok((Arc::clone(file), *size));
            }
        }
        let (file, size) = http::open_beneath(root, path, direct)?;
        let file = Arc::new(file);
        if !self.valid.is_zero() {
            if self.files.len() >= MAX_FILES {
                let valid = self.valid;
                self.files
                    .retain(|_, (_, _, t)| now.duration_since(*t) < valid);
                if self.files.len() >= MAX_FILES {
                    self.files.clear();
                }
            }
            self.files
                .insert(path.to_path_buf(), (Arc::clone(&file), size, now));
        }
        Ok((file, size))
    }
}
