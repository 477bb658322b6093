//! Runs `examples/http_server.rs` and drives it with real clients: `curl`, and raw
//! `TcpStream`s for what curl will not send (malformed requests, 200 connections at once).
//!
//! Each test starts its own server on a free port (`--addr 127.0.0.1:0`; the server prints
//! `listening on ADDR` first) over its own temporary root, and kills it at the end. The
//! mio-aio backend is the environment's (`MIO_AIO_BACKEND`), which the server inherits.
//! Nothing waits without a bound: curl runs with `--max-time`, sockets have timeouts.
//!
//! `bench_fuse_mount` (ignored) is no test: `scripts/http_bench.sh` runs it to mount the
//! test suite's slow FUSE file system for the benchmark.

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{mpsc, OnceLock},
    thread,
    time::{Duration, Instant},
};

mod support;

/// The longest a server may take to say where it listens, and a client to finish.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the example once (same cargo, profile and target directory as this test) and
/// returns its path.
fn server_binary() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            // This test is `<target dir>[/<triple>]/<profile>/deps/http_server-<hash>`.
            let profile_dir = exe.parent().and_then(Path::parent).ok_or("odd test path")?;
            let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .ok_or("no target directory")?;
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args([
                "build",
                "--quiet",
                "--example",
                "http_server",
                "--target-dir",
            ])
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
            match profile_dir.file_name().and_then(OsStr::to_str) {
                Some("debug") => {}
                Some("release") => {
                    cmd.arg("--release");
                }
                Some(profile) => {
                    cmd.args(["--profile", profile]);
                }
                None => return Err("no profile directory".into()),
            }
            let parent = profile_dir.parent().ok_or("no parent")?;
            if parent != target_dir {
                if let Some(triple) = parent.file_name() {
                    cmd.arg("--target").arg(triple);
                }
            }
            let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            Ok(profile_dir.join("examples").join("http_server"))
        })
        .clone()
        .unwrap_or_else(|e| panic!("cannot build examples/http_server: {e}"))
}

/// A running server; dropping it kills the process.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(root: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(server_binary())
            .arg("--root")
            .arg(root)
            .args(["--addr", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting http_server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let first = rx.recv_timeout(TIMEOUT);
        let addr = first
            .as_deref()
            .ok()
            .and_then(|l| l.strip_prefix("listening on "))
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("http_server's first line is not `listening on ADDR`: {first:?}");
        };
        // The backend the server runs on is the one asked for (the tests are run once per
        // backend with MIO_AIO_BACKEND, and with `auto` plus the expected automatic choice in
        // MIO_AIO_EXPECT_BACKEND where CI refuses io_uring).
        let wanted = ["MIO_AIO_BACKEND", "MIO_AIO_EXPECT_BACKEND"]
            .into_iter()
            .filter_map(|var| std::env::var(var).ok().map(|name| (var, name)))
            .find(|(_, name)| name != "auto" && !name.is_empty());
        if let (true, Some((var, wanted))) = (cfg!(target_os = "linux"), wanted) {
            let second = rx.recv_timeout(TIMEOUT).unwrap_or_default();
            if !second.ends_with(&format!("backend {wanted}")) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{var}={wanted}, but http_server says {second:?}");
            }
        }
        Server { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Checks the server still runs (a test must not pass by the server dying).
    fn assert_alive(&mut self) {
        let status = self.child.try_wait().expect("try_wait");
        assert!(status.is_none(), "http_server exited: {status:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs curl (silent, bounded by `--max-time`), and returns what it printed.
fn curl(args: &[&str]) -> Output {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "60"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running curl (is it installed?)");
    assert!(
        out.status.success(),
        "curl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// GETs `url` with `extra` curl options; returns the status code, the response head (lowercase
/// header names), and the body.
fn get(url: &str, extra: &[&str]) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let head_file = dir.path().join("head");
    let body_file = dir.path().join("body");
    let mut args = vec![
        "--path-as-is",
        "--dump-header",
        head_file.to_str().unwrap(),
        "--output",
        body_file.to_str().unwrap(),
        "--write-out",
        "%{http_code}",
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let out = curl(&args);
    let code = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let head = std::fs::read_to_string(&head_file).unwrap_or_default();
    let body = std::fs::read(&body_file).unwrap_or_default();
    (code, head.to_ascii_lowercase(), body)
}

/// Deterministic bytes that differ at every offset worth checking.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn assert_same(what: &str, got: &[u8], expected: &[u8]) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    if let Some(i) = got.iter().zip(expected).position(|(a, b)| a != b) {
        panic!("{what}: differs from byte {i} on");
    }
}

/// A root with `small.txt` (13 bytes), `empty`, `big.bin` (5 MiB + 1), `sub/inner.txt`, and
/// next to the root a `secret` that must never be served.
struct Files {
    dir: tempfile::TempDir,
    small: Vec<u8>,
    big: Vec<u8>,
}

impl Files {
    fn new_in(base: &Path) -> Files {
        let dir = tempfile::tempdir_in(base).unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let small = b"hello, world\n".to_vec();
        let big = pattern((5 << 20) + 1, 42);
        std::fs::write(root.join("small.txt"), &small).unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
        std::fs::write(root.join("big.bin"), &big).unwrap();
        std::fs::write(root.join("sub/inner.txt"), b"inner\n").unwrap();
        std::fs::write(dir.path().join("secret"), b"do not serve\n").unwrap();
        Files { dir, small, big }
    }

    fn new() -> Files {
        Files::new_in(&std::env::temp_dir())
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

/// Sends `request` on a fresh connection and returns everything until the server closes it.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the server closes the connection");
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one response (head and `Content-Length` body, or no body after HEAD) from `r`.
fn read_response(r: &mut impl BufRead, head_only: bool) -> (String, Vec<u8>) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "EOF in a head: {head}");
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("Content-Length");
    let mut body = vec![0; if head_only { 0 } else { len }];
    r.read_exact(&mut body).unwrap();
    (head, body)
}

#[test]
fn whole_files_are_served_byte_for_byte() {
    let files = Files::new();
    // The default chunk, and small chunks: the 5 MiB file is then 80 reads.
    for extra in [&[][..], &["--chunk", "64K"]] {
        let server = Server::start(&files.root(), extra);
        let (code, head, body) = get(&server.url("/small.txt"), &[]);
        assert_eq!(code, 200, "{head}");
        assert!(head.contains("content-length: 13\r\n"), "{head}");
        assert!(head.contains("content-type: text/plain"), "{head}");
        assert_eq!(body, files.small);
        let (code, head, body) = get(&server.url("/empty"), &[]);
        assert_eq!((code, body.len()), (200, 0), "{head}");
        assert!(head.contains("content-length: 0\r\n"), "{head}");
        let (code, _, body) = get(&server.url("/big.bin"), &[]);
        assert_eq!(code, 200);
        assert_same("big.bin", &body, &files.big);
        let (code, _, body) = get(&server.url("/sub/inner.txt"), &[]);
        assert_eq!((code, body), (200, b"inner\n".to_vec()));
    }
}

#[test]
fn byte_ranges_are_206_with_content_range_and_416_when_unsatisfiable() {
    let files = Files::new();
    let server = Server::start(&files.root(), &["--chunk", "64K"]);
    let big_len = files.big.len();
    let cases: &[(&str, &str, usize, usize)] = &[
        ("/small.txt", "bytes=0-4", 0, 5),
        ("/small.txt", "bytes=7-", 7, 13),
        ("/small.txt", "bytes=-6", 7, 13),
        // A last byte past the end is cut; a suffix longer than the file is all of it.
        ("/small.txt", "bytes=3-1000", 3, 13),
        ("/small.txt", "bytes=-1000", 0, 13),
        // Across several chunks, from and to unaligned offsets.
        ("/big.bin", "bytes=4097-1234566", 4097, 1234567),
        ("/big.bin", "bytes=5000000-", 5000000, big_len),
        ("/big.bin", "bytes=-70000", big_len - 70000, big_len),
    ];
    for &(path, range, start, end) in cases {
        let (code, head, body) = get(&server.url(path), &["--header", &format!("Range: {range}")]);
        let total = if path == "/big.bin" { big_len } else { 13 };
        assert_eq!(code, 206, "{path} {range}: {head}");
        let expected_range = format!("content-range: bytes {start}-{}/{total}\r\n", end - 1);
        assert!(head.contains(&expected_range), "{path} {range}: {head}");
        assert!(
            head.contains(&format!("content-length: {}\r\n", end - start)),
            "{head}"
        );
        let data = if path == "/big.bin" {
            &files.big
        } else {
            &files.small
        };
        assert_same(&format!("{path} {range}"), &body, &data[start..end]);
    }
    for (path, range) in [
        ("/small.txt", "bytes=13-"),
        ("/small.txt", "bytes=100-200"),
        ("/small.txt", "bytes=-0"),
        ("/empty", "bytes=0-"),
    ] {
        let (code, head, body) = get(&server.url(path), &["--header", &format!("Range: {range}")]);
        assert_eq!(code, 416, "{path} {range}: {head}");
        let size = if path == "/empty" { 0 } else { 13 };
        assert!(
            head.contains(&format!("content-range: bytes */{size}\r\n")),
            "{head}"
        );
        assert!(body.is_empty());
    }
    // A Range this server does not serve (several ranges, another unit) gets the whole file.
    for range in ["bytes=0-1,5-6", "lines=1-2"] {
        let (code, _, body) = get(
            &server.url("/small.txt"),
            &["--header", &format!("Range: {range}")],
        );
        assert_eq!((code, &body), (200, &files.small), "{range}");
    }
}

#[test]
fn head_has_the_headers_and_no_body_and_pipelined_requests_are_answered_in_order() {
    let files = Files::new();
    let server = Server::start(&files.root(), &[]);
    let out = curl(&["--head", &server.url("/big.bin")]);
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}\r\n", files.big.len())),
        "{head}"
    );
    assert!(head.contains("accept-ranges: bytes\r\n"), "{head}");

    // On one connection, in one write: HEAD, GET, HEAD of a missing file, GET. Had HEAD sent
    // a body, the next response would not start where the head ends.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let host = "Host: x\r\n";
    let requests = format!(
        "HEAD /small.txt HTTP/1.1\r\n{host}\r\nGET /small.txt HTTP/1.1\r\n{host}\r\n\
         HEAD /missing HTTP/1.1\r\n{host}\r\nGET /sub/inner.txt HTTP/1.1\r\n{host}\r\n"
    );
    s.write_all(requests.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let (head, body) = read_response(&mut r, true);
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && body.is_empty(),
        "{head}"
    );
    assert!(head.contains("Content-Length: 13\r\n"), "{head}");
    let (head, body) = read_response(&mut r, false);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, files.small);
    let (head, _) = read_response(&mut r, true);
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
    let (head, body) = read_response(&mut r, false);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, b"inner\n");
}

#[test]
fn errors_404_405_and_400() {
    let files = Files::new();
    let mut server = Server::start(&files.root(), &[]);
    let (code, _, _) = get(&server.url("/missing"), &[]);
    assert_eq!(code, 404);
    // A directory is no file.
    let (code, _, _) = get(&server.url("/sub"), &[]);
    assert_eq!(code, 404);
    let (code, head, _) = get(&server.url("/small.txt"), &["--request", "DELETE"]);
    assert_eq!(code, 405, "{head}");
    assert!(head.contains("allow: get, head\r\n"), "{head}");

    // Malformed requests: 400, then the server closes the connection.
    let bad: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"GET /small.txt HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /small.txt HTTP/1.1\r\n\r\n", // HTTP/1.1 without Host
        b"GET /small.txt HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET small.txt HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    ];
    for request in bad {
        let answer = raw_exchange(server.addr, request);
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{:?}: {answer}",
            String::from_utf8_lossy(request)
        );
        assert!(answer.contains("Connection: close\r\n"), "{answer}");
    }
    // A head longer than the limit (16 KiB) is refused, not buffered without end.
    let mut huge = b"GET /small.txt HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
    huge.resize(40_000, b'a');
    let answer = raw_exchange(server.addr, &huge);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    server.assert_alive();
    let (code, _, body) = get(&server.url("/small.txt"), &[]);
    assert_eq!((code, body), (200, files.small.clone()));
}

#[test]
fn no_path_leaves_the_root() {
    let files = Files::new();
    let root = files.root();
    std::os::unix::fs::symlink(files.dir.path().join("secret"), root.join("out")).unwrap();
    std::os::unix::fs::symlink(files.dir.path(), root.join("updir")).unwrap();
    std::os::unix::fs::symlink("sub/inner.txt", root.join("in")).unwrap();
    // Opening a FIFO would block (the whole server) until a writer comes: it is no file.
    let made = Command::new("mkfifo").arg(root.join("fifo")).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo failed");
    let mut server = Server::start(&root, &[]);
    for path in [
        "/../secret",
        "/sub/../../secret",
        "/%2e%2e/secret",
        "/%2E%2E/secret",
        "/sub/%2e%2e/%2e%2e/secret",
        "/..%2fsecret",
        "/%2e%2e%2fsecret",
        "/out",
        "/updir/secret",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/fifo",
    ] {
        let (code, _, body) = get(&server.url(path), &[]);
        assert_eq!(code, 404, "{path}: {}", String::from_utf8_lossy(&body));
    }
    // A symlink that stays inside the root is served.
    let (code, _, body) = get(&server.url("/in"), &[]);
    assert_eq!((code, body), (200, b"inner\n".to_vec()));
    server.assert_alive();
}

#[test]
fn keep_alive_reuses_one_connection() {
    let files = Files::new();
    let server = Server::start(&files.root(), &[]);
    let (a, b, c) = (
        server.url("/small.txt"),
        server.url("/big.bin"),
        server.url("/missing"),
    );
    // `num_connects` is how many new connections each transfer needed.
    let mut args = vec!["--write-out", "%{http_code} %{num_connects}\n"];
    for url in [&a, &b, &c, &a] {
        args.extend(["--output", "/dev/null", url.as_str()]);
    }
    let out = curl(&args);
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        ["200 1", "200 0", "404 0", "200 0"],
        "curl opened new connections"
    );
    // HTTP/1.0 closes after the answer, unless asked to keep the connection.
    let answer = raw_exchange(server.addr, b"GET /small.txt HTTP/1.0\r\n\r\n");
    assert!(
        answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("hello, world\n"),
        "{answer}"
    );
    assert!(answer.contains("Connection: close\r\n"), "{answer}");
}

#[test]
fn idle_connections_are_closed_after_the_timeout() {
    let files = Files::new();
    let server = Server::start(&files.root(), &["--idle-timeout", "1"]);
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    (&s).write_all(b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(&s);
    let (_, body) = read_response(&mut r, false);
    assert_eq!(body, files.small);
    let idle_from = Instant::now();
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .expect("the server closes the idle connection");
    let waited = idle_from.elapsed();
    assert!(rest.is_empty());
    // Closed by the timer: not before the timeout, and not much after.
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
    assert!(waited < Duration::from_secs(20), "closed after {waited:?}");
    // An idle connection that never sent anything is closed too.
    let started = Instant::now();
    let answer = raw_exchange(server.addr, b"");
    assert!(answer.is_empty() && started.elapsed() >= Duration::from_millis(900));
}

#[test]
fn open_files_are_reopened_once_their_cache_entry_expires() {
    let files = Files::new();
    let path = files.root().join("changing.txt");
    let replace = |content: &str| {
        let tmp = files.dir.path().join("tmp");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    replace("one");
    let cached = Server::start(&files.root(), &["--open-cache", "1"]);
    let uncached = Server::start(&files.root(), &["--open-cache", "0"]);
    for server in [&cached, &uncached] {
        assert_eq!(get(&server.url("/changing.txt"), &[]).2, b"one");
    }
    replace("two!!");
    // Without the cache the new file at once; with it, the new file once its second is over.
    assert_eq!(get(&uncached.url("/changing.txt"), &[]).2, b"two!!");
    thread::sleep(Duration::from_millis(1100));
    let (code, head, body) = get(&cached.url("/changing.txt"), &[]);
    assert_eq!((code, body), (200, b"two!!".to_vec()), "{head}");
    // A removed file is a 404 once its entry expired.
    std::fs::remove_file(&path).unwrap();
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(get(&cached.url("/changing.txt"), &[]).0, 404);
}

/// 200 connections open at once, each asking for a 300 KB file twice, with all requests sent
/// before any answer is read: the server must keep them all, and stop and resume each
/// response as its client's socket fills (the client reads one connection at a time).
fn two_hundred_connections(root: &Path, data: &[u8], extra: &[&str]) {
    let mut server = Server::start(root, extra);
    let mut conns: Vec<TcpStream> = (0..200)
        .map(|_| {
            let s = TcpStream::connect(server.addr).unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            s
        })
        .collect();
    for round in 0..2 {
        for s in &mut conns {
            s.write_all(b"GET /mid.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
        }
        for (i, s) in conns.iter_mut().enumerate() {
            let mut r = BufReader::new(&*s);
            let (head, body) = read_response(&mut r, false);
            assert!(
                head.starts_with("HTTP/1.1 200 OK\r\n"),
                "connection {i}: {head}"
            );
            assert!(r.buffer().is_empty());
            assert_same(&format!("round {round}, connection {i}"), &body, data);
        }
    }
    server.assert_alive();
}

#[test]
fn two_hundred_concurrent_keep_alive_connections() {
    let files = Files::new();
    let data = pattern(300_000, 7);
    std::fs::write(files.root().join("mid.bin"), &data).unwrap();
    two_hundred_connections(&files.root(), &data, &["--chunk", "32K"]);
}

/// A directory on a disk-backed file system (tmpfs may refuse `O_DIRECT`), or `None` after
/// saying why the test is skipped.
#[cfg(not(any(target_os = "macos", target_os = "openbsd")))]
fn o_direct_dir() -> Option<PathBuf> {
    let base = Path::new("/var/tmp");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let probe = tempfile::NamedTempFile::new_in(&base).unwrap();
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(probe.path());
    match opened {
        Ok(_) => Some(base),
        Err(e) => {
            support::skip(&format!(
                "{} does not support O_DIRECT: {e}",
                base.display()
            ));
            None
        }
    }
}

#[test]
#[cfg(not(any(target_os = "macos", target_os = "openbsd")))]
fn direct_mode_serves_unaligned_tails_and_ranges() {
    let Some(base) = o_direct_dir() else {
        return;
    };
    let files = Files::new_in(&base);
    let data = pattern(300_000, 9);
    std::fs::write(files.root().join("mid.bin"), &data).unwrap();
    let server = Server::start(&files.root(), &["--direct", "--chunk", "64K"]);
    // 5 MiB + 1: the last chunk ends one byte into an aligned block.
    let (code, _, body) = get(&server.url("/big.bin"), &[]);
    assert_eq!(code, 200);
    assert_same("big.bin, O_DIRECT", &body, &files.big);
    let (code, _, body) = get(&server.url("/small.txt"), &[]);
    assert_eq!((code, &body), (200, &files.small));
    let len = files.big.len();
    for (range, start, end) in [
        ("bytes=4097-1234566", 4097, 1234567),
        ("bytes=1-1", 1, 2),
        ("bytes=65535-65536", 65535, 65537),
        ("bytes=-5", len - 5, len),
    ] {
        let (code, head, body) = get(
            &server.url("/big.bin"),
            &["--header", &format!("Range: {range}")],
        );
        assert_eq!(code, 206, "{range}: {head}");
        assert_same(&format!("O_DIRECT {range}"), &body, &files.big[start..end]);
    }
    drop(server);
    two_hundred_connections(&files.root(), &data, &["--direct", "--chunk", "32K"]);
}

/// The loop never waits for a file: while four responses wait for reads that take 1 s each
/// (the slow FUSE file system), requests that need no read are answered at once, and the
/// idle timer (0.3 s) does not close the connections whose responses wait for the file.
#[test]
#[cfg(target_os = "linux")]
fn slow_reads_do_not_hold_up_other_requests() {
    use support::fuse::{expected, SlowFs, SlowFsOptions};
    let opts = SlowFsOptions {
        read_delay: Duration::from_secs(1),
        ..SlowFsOptions::default()
    };
    let Some(fs) = SlowFs::mount_or_skip(opts) else {
        return;
    };
    let server = Server::start(
        fs.mountpoint(),
        &["--chunk", "256K", "--idle-timeout", "0.3"],
    );
    let url = server.url("/data");
    // Each download: 512 KiB in two reads of 1 s.
    let downloads: Vec<_> = (0..4u64)
        .map(|i| {
            let url = url.clone();
            thread::spawn(move || {
                let start = i * (1 << 20) + 4096 * i;
                let range = format!("Range: bytes={start}-{}", start + (512 << 10) - 1);
                let begun = Instant::now();
                let (code, head, body) = get(&url, &["--header", &range]);
                (start, code, head, body, begun.elapsed())
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let begun = Instant::now();
        let out = curl(&["--head", &url]);
        let took = begun.elapsed();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 200 OK\r\n"));
        let (code, _, _) = get(&server.url("/missing"), &[]);
        assert_eq!(code, 404);
        // A loop that waited for a read would take 1 s here.
        assert!(took < Duration::from_millis(500), "HEAD took {took:?}");
        thread::sleep(Duration::from_millis(100));
    }
    for d in downloads {
        let (start, code, head, body, took) = d.join().unwrap();
        assert_eq!(code, 206, "{head}");
        assert_same(
            &format!("FUSE at {start}"),
            &body,
            &expected(start, 512 << 10),
        );
        // Its two reads run at once (up to four per response).
        assert!(
            took >= Duration::from_secs(1),
            "two 1 s reads took {took:?}"
        );
    }
}

/// Not a test: mounts the slow FUSE file system (200 ms per read) for
/// `scripts/http_bench.sh`, prints `mounted PATH`, and unmounts once the file named by
/// `HTTP_BENCH_FUSE_STOP` exists (or after 15 minutes). Set `TMPDIR` to choose where the
/// mount point is created.
#[test]
#[ignore]
#[cfg(target_os = "linux")]
fn bench_fuse_mount() {
    use support::fuse::{SlowFs, SlowFsOptions};
    let stop = std::env::var_os("HTTP_BENCH_FUSE_STOP").expect("HTTP_BENCH_FUSE_STOP");
    let opts = SlowFsOptions {
        size: 64 << 20,
        ..SlowFsOptions::default()
    };
    let Some(fs) = SlowFs::mount_or_skip(opts) else {
        return;
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "mounted {}", fs.path().display()).unwrap();
    out.flush().unwrap();
    let until = Instant::now() + Duration::from_secs(900);
    while !Path::new(&stop).exists() && Instant::now() < until {
        thread::sleep(Duration::from_millis(100));
    }
    writeln!(out, "reads served: {:?}", fs.stats()).unwrap();
}
