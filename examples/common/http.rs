//! The HTTP/1.1 pieces of `examples/http_server.rs` that do not touch the event loop: parsing a
//! request head (with `httparse`), mapping its target to a file under the root without ever
//! leaving it, reading a `Range` header, and writing a response head.

#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::{
    ffi::OsStr,
    fs::{File, OpenOptions},
    io,
    os::unix::{ffi::OsStrExt, fs::OpenOptionsExt},
    path::{Component, Path, PathBuf},
};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// The longest request head accepted; a longer one is answered 400.
pub const MAX_HEAD: usize = 16 << 10;
/// The most header fields in a request head; more are answered 400.
const MAX_HEADERS: usize = 48;

/// The methods served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

/// A request head that parsed.
#[derive(Debug)]
pub struct Request {
    /// `None`: a method other than GET and HEAD (answered 405).
    pub method: Option<Method>,
    /// The request target as sent (`/a%20b?x`).
    pub target: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// Whether the connection stays open after the answer (HTTP/1.1 unless `Connection:
    /// close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
}

/// What the bytes received so far hold.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A head of `len` bytes, and what it asks; `Err(why)` when it is malformed (answered
    /// 400, and the connection closes: where the next request starts is unknown).
    Complete(usize, Result<Request, &'static str>),
}

/// Parses the request head at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Parsed::Partial,
        Ok(httparse::Status::Partial) => return Parsed::Complete(buf.len(), Err("head too long")),
        Err(_) => return Parsed::Complete(buf.len(), Err("malformed head")),
    };
    if len > MAX_HEAD {
        return Parsed::Complete(len, Err("head too long"));
    }
    Parsed::Complete(len, request(&req))
}

fn request(req: &httparse::Request) -> Result<Request, &'static str> {
    // httparse fills all three for a complete head.
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err("incomplete request line");
    };
    let mut keep_alive = version >= 1;
    let (mut range, mut host) = (None, false);
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| "a header value is not text")?;
        if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("range") {
            range = Some(value.to_owned());
        } else if h.name.eq_ignore_ascii_case("host") {
            host = true;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("a request body (Transfer-Encoding) is not accepted");
        } else if h.name.eq_ignore_ascii_case("content-length") && value.trim() != "0" {
            return Err("a request body (Content-Length) is not accepted");
        }
    }
    if version >= 1 && !host {
        return Err("HTTP/1.1 without Host");
    }
    let method = match method {
        "GET" => Some(Method::Get),
        "HEAD" => Some(Method::Head),
        _ => None,
    };
    Ok(Request {
        method,
        target: target.to_owned(),
        range,
        keep_alive,
    })
}

/// Why a target maps to no file.
#[derive(Debug, PartialEq, Eq)]
pub enum NoFile {
    /// The target is malformed (400).
    Malformed,
    /// No regular file there, or the path would leave the root (404).
    NotFound,
}

/// Maps `target` to a path under `root`: percent-decoded, with no `..` component (that is
/// `NotFound`). Symlinks are resolved by [`open_beneath`], which checks where they lead.
pub fn resolve(root: &Path, target: &str) -> Result<PathBuf, NoFile> {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let Some(path) = path.strip_prefix('/') else {
        return Err(NoFile::Malformed);
    };
    let decoded = percent_decode(path.as_bytes()).ok_or(NoFile::Malformed)?;
    if decoded.contains(&0) {
        return Err(NoFile::Malformed);
    }
    let relative = Path::new(OsStr::from_bytes(&decoded));
    let mut full = root.to_path_buf();
    for component in relative.components() {
        match component {
            Component::Normal(name) => full.push(name),
            Component::CurDir => {}
            // `..`, or a second root (`//x` decodes to no such thing, but be sure).
            _ => return Err(NoFile::NotFound),
        }
    }
    Ok(full)
}

/// Opens the regular file at `path` for reading (with `O_DIRECT` if `direct`), if it lies
/// under `root` (canonical) once every symlink is resolved; gives it with its size. Anything
/// else is `NotFound`.
///
/// The check is of the file actually opened (on Linux its `/proc/self/fd` link, elsewhere
/// the canonical path), so a symlink swapped in meanwhile cannot lead out. The file is opened
/// `O_NONBLOCK`, so that a FIFO cannot block the server in `open`, and that flag is cleared
/// once the file is known to be regular (io_uring answers `EAGAIN` instead of waiting on a
/// file that has it).
pub fn open_beneath(root: &Path, path: &Path, direct: bool) -> io::Result<(File, u64)> {
    let mut flags = libc::O_NONBLOCK;
    if direct {
        flags |= o_direct()?;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || !real_path(&file, path)?.starts_with(root) {
        return Err(io::ErrorKind::NotFound.into());
    }
    // F_SETFL sets all of the flags it can change: keep O_DIRECT, the only other one set.
    let keep = if direct {
        OFlag::from_bits_retain(o_direct()?)
    } else {
        OFlag::empty()
    };
    fcntl(&file, FcntlArg::F_SETFL(keep))?;
    Ok((file, meta.len()))
}

#[cfg(target_os = "linux")]
fn real_path(file: &File, path: &Path) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .or_else(|_| path.canonicalize()) // No /proc.
}

#[cfg(not(target_os = "linux"))]
fn real_path(_file: &File, path: &Path) -> io::Result<PathBuf> {
    path.canonicalize()
}

/// Decodes `%XX` escapes; `None` for a malformed one.
fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranged {
    /// The whole file (no header, or one this server ignores, as RFC 9110 allows: several
    /// ranges, another unit, a malformed one).
    Whole,
    /// Bytes `start..end` (end exclusive, `start < end <= len`).
    Part(u64, u64),
    /// Nothing of the file: 416.
    Unsatisfiable,
}

/// Reads a `Range` header (`bytes=a-b`, `bytes=a-`, `bytes=-n`) against a file of `len` bytes.
pub fn range(header: Option<&str>, len: u64) -> Ranged {
    let Some(header) = header.map(str::trim) else {
        return Ranged::Whole;
    };
    let Some(spec) = header
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
        .and_then(|_| header.get(6..))
    else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first, last) {
        ("", n) => match number(n) {
            None => Ranged::Whole,
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if len == 0 => Ranged::Unsatisfiable,
            Some(n) => Ranged::Part(len.saturating_sub(n), len),
        },
        (a, b) => {
            let Some(start) = number(a) else {
                return Ranged::Whole;
            };
            let end = match b {
                "" => len,
                b => match number(b) {
                    Some(last) if last >= start => last.saturating_add(1).min(len),
                    _ => return Ranged::Whole,
                },
            };
            if start >= len {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part(start, end)
            }
        }
    }
}

/// The reason phrase of the statuses this server sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        _ => "Internal Server Error",
    }
}

/// A response head: the status line, `headers` (each `Name: value`), `Content-Length`, and
/// `Connection: close` when the connection closes after it.
pub fn head(status: u16, headers: &[&str], content_length: u64, keep_alive: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nServer: mio-aio-http_server\r\n",
        reason(status)
    );
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {content_length}\r\n"));
    out.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    out.into_bytes()
}

/// A whole error response, with a one-line text body (none for HEAD).
pub fn error(status: u16, keep_alive: bool, head_only: bool) -> Vec<u8> {
    let body = format!("{status} {}\n", reason(status));
    let allow = "Allow: GET, HEAD";
    let mut headers = vec!["Content-Type: text/plain"];
    if status == 405 {
        headers.push(allow);
    }
    let mut out = head(status, &headers, body.len() as u64, keep_alive);
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// The status for a file that could not be opened.
pub fn status_of(e: &io::Error) -> u16 {
    match e.kind() {
        io::ErrorKind::NotFound => 404,
        io::ErrorKind::PermissionDenied => 403,
        _ => 500,
    }
}

/// A `Content-Type` from the file name's extension.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(OsStr::to_str).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" | "md" => "text/plain; charset=utf-8",
        "css" => "text/css",
        "js" => "text/javascript",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// The open flag that bypasses the page cache, or `Unsupported` where the system has none
/// (macOS and OpenBSD).
fn o_direct() -> io::Result<libc::c_int> {
    #[cfg(not(any(target_os = "macos", target_os = "openbsd")))]
    return Ok(libc::O_DIRECT);
    #[cfg(any(target_os = "macos", target_os = "openbsd"))]
    return Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "this system has no O_DIRECT",
    ));
}
