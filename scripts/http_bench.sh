#!/usr/bin/env bash
# Measures examples/http_server.rs against nginx (one worker, sendfile on; aio off, then
# aio threads) with wrk, in one run, on the same files, on 127.0.0.1 only.
#
#   flock /work/bench.lock scripts/http_bench.sh [--reps N] [--secs N] [--conns N]
#                                              [--only NAME] [--mio-args "OPTIONS"]
#
# Scenarios, each driven by `wrk -t1 -cCONNS -dSECS --latency` over the hot files:
#   hot        small files (1-16 KiB), all in the page cache
#   cold-disk  the same, while 8 other connections fetch 1 MiB ranges of large files that a
#              background loop keeps evicting from the page cache (posix_fadvise DONTNEED)
#   cold-fuse  the same, while 8 other connections fetch 256 KiB ranges of a file on the test
#              suite's slow FUSE file system (200 ms per read request)
# Each repetition starts every server afresh and runs the three scenarios on it. The report
# (medians over the repetitions, and the ratios within each repetition) goes to stdout and to
# target/http-bench-results.md. Needs root (FUSE), nginx, wrk, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=3 SECS=5 CONNS=32 ONLY="" MIO_ARGS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --only) ONLY=$2; shift 2 ;;          # run only the servers whose name contains this
    --mio-args) MIO_ARGS=$2; shift 2 ;;  # extra options for http_server, e.g. "--chunk 32K"
    --reps) REPS=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "http_bench: unknown option $1" >&2; exit 2 ;;
  esac
done
for tool in nginx wrk python3; do
  command -v "$tool" >/dev/null || { echo "http_bench: $tool is not installed" >&2; exit 1; }
done

echo "building (release)..." >&2
cargo build --release --quiet --example http_server
cargo test --release --quiet --test http_server --no-run 2>/dev/null
SERVER=target/release/examples/http_server

WORK=$(mktemp -d /var/tmp/mio-aio-http-bench.XXXXXX)
cleanup() {
  # The FUSE helper unmounts and exits once it sees fuse.stop.
  touch "$WORK/fuse.stop"
  for _ in $(seq 100); do
    [ -n "${FUSE_PID:-}" ] && kill -0 "$FUSE_PID" 2>/dev/null || break
    sleep 0.1
  done
  if grep -qs " ${ROOT:-/nonexistent}/" /proc/mounts; then
    echo "http_bench: the FUSE file system is still mounted under $ROOT; left $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

ROOT=$WORK/root
mkdir -p "$ROOT/hot" "$ROOT/cold" "$WORK/nginx"
python3 - "$ROOT" <<'EOF'
import os, random, sys
root = sys.argv[1]
rng = random.Random(1)
for i in range(100):
    with open(f"{root}/hot/{i}.bin", "wb") as f:
        f.write(rng.randbytes(rng.randint(1024, 16384)))
for i in range(4):
    with open(f"{root}/cold/{i}.bin", "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
EOF
sync

# The slow FUSE file system, mounted inside the root (TMPDIR) so both servers can reach it.
HTTP_BENCH_FUSE_STOP=$WORK/fuse.stop TMPDIR=$ROOT \
  cargo test --release --quiet --test http_server -- --ignored --exact bench_fuse_mount \
  --nocapture >"$WORK/fuse.out" 2>&1 &
FUSE_PID=$!
for _ in $(seq 300); do
  grep -q '^mounted ' "$WORK/fuse.out" 2>/dev/null && break
  sleep 0.1
done
FUSE_FILE=$(sed -n 's/^mounted //p' "$WORK/fuse.out")
[ -n "$FUSE_FILE" ] || { echo "http_bench: the FUSE mount failed:" >&2; cat "$WORK/fuse.out" >&2; exit 1; }
FUSE_URL=${FUSE_FILE#"$ROOT"}

export ROOT WORK SERVER REPS SECS CONNS FUSE_URL ONLY MIO_ARGS
python3 - <<'EOF'
import os, re, signal, socket, statistics, subprocess, sys, time

ROOT, WORK, SERVER = os.environ["ROOT"], os.environ["WORK"], os.environ["SERVER"]
REPS, SECS, CONNS = int(os.environ["REPS"]), int(os.environ["SECS"]), int(os.environ["CONNS"])
FUSE_URL = os.environ["FUSE_URL"]
COLD = [f"{ROOT}/cold/{i}.bin" for i in range(4)]

def log(*a):
    print(*a, file=sys.stderr, flush=True)

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def wait_port(port, proc):
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not listen")

def start_nginx(aio):
    port = free_port()
    d = f"{WORK}/nginx/{aio}"
    os.makedirs(d, exist_ok=True)
    conf = f"""
worker_processes 1;
daemon off;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    aio {aio};
    tcp_nopush on;
    keepalive_timeout 60;
    keepalive_requests 10000000;
    # As http_server's default --open-cache 1: descriptors reused for a second.
    open_file_cache max=1000 inactive=20s;
    open_file_cache_valid 1s;
    default_type application/octet-stream;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {ROOT};
        location / {{ }}
    }}
}}
"""
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(conf)
    p = subprocess.Popen(["nginx", "-c", f"{d}/nginx.conf", "-p", d],
                         stdout=subprocess.DEVNULL, stderr=open(f"{d}/stderr", "w"))
    wait_port(port, p)
    return p, port

def start_mio():
    port = free_port()
    p = subprocess.Popen([SERVER, "--root", ROOT, "--addr", f"127.0.0.1:{port}",
                          *os.environ["MIO_ARGS"].split()],
                         stdout=open(f"{WORK}/mio.stdout", "w"),
                         stderr=open(f"{WORK}/mio.stderr", "a"))
    wait_port(port, p)
    return p, port

SERVERS = {
    "nginx aio off": lambda: start_nginx("off"),
    "nginx aio threads": lambda: start_nginx("threads"),
    "mio-aio http_server": start_mio,
}
SERVERS = {k: v for k, v in SERVERS.items() if os.environ["ONLY"] in k}

def lua(name, body):
    path = f"{WORK}/{name}.lua"
    with open(path, "w") as f:
        f.write(body)
    return path

HOT_LUA = lua("hot", """
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/hot/" .. (i % 100) .. ".bin")
end
""")
COLD_DISK_LUA = lua("cold_disk", """
math.randomseed(os.time())
request = function()
  local off = math.random(0, 63) * 1048576
  return wrk.format("GET", "/cold/" .. math.random(0, 3) .. ".bin",
    {Range = "bytes=" .. off .. "-" .. (off + 1048575)})
end
""")
COLD_FUSE_LUA = lua("cold_fuse", f"""
math.randomseed(os.time())
request = function()
  local off = math.random(0, 255) * 262144
  return wrk.format("GET", "{FUSE_URL}", {{Range = "bytes=" .. off .. "-" .. (off + 262143)}})
end
""")

UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}

def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for pct, val, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        lat[pct] = float(val) * UNIT[unit]
    done = re.search(r"(\d+) requests in", out)
    if rps == 0 or not done or int(done.group(1)) == 0:
        # No request completed (wrk prints 0 latencies, and counts timeouts in req/s).
        rps = 0.0
        lat = {"50": float("inf"), "99": float("inf")}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": lat["50"], "p99": lat["99"],
            "non2xx": int(errors.group(1)) if errors else 0,
            "sockerr": sock.group(1) if sock else ""}

def evict_loop():
    # Keeps the large files out of the page cache for the whole scenario.
    code = ("import os,sys,time\n"
            "fds=[os.open(p,os.O_RDONLY) for p in sys.argv[1:]]\n"
            "while True:\n"
            "    [os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED) for fd in fds]\n"
            "    time.sleep(0.2)\n")
    return subprocess.Popen([sys.executable, "-c", code, *COLD])

def scenario(port, kind):
    url = f"http://127.0.0.1:{port}"
    extra = []
    if kind == "cold-disk":
        extra.append(evict_loop())
        time.sleep(0.3)
        extra.append(subprocess.Popen(
            ["wrk", "-t1", "-c8", f"-d{SECS + 2}s", "--timeout", "30s", "-s", COLD_DISK_LUA, url],
            stdout=subprocess.PIPE, text=True))
    elif kind == "cold-fuse":
        extra.append(subprocess.Popen(
            ["wrk", "-t1", "-c8", f"-d{SECS + 2}s", "--timeout", "30s", "-s", COLD_FUSE_LUA, url],
            stdout=subprocess.PIPE, text=True))
    if extra:
        time.sleep(1)  # let the cold load start
    hot = subprocess.run(["wrk", "-t1", f"-c{CONNS}", f"-d{SECS}s", "--latency", "-s", HOT_LUA, url],
                         capture_output=True, text=True, timeout=SECS + 60)
    res = parse_wrk(hot.stdout)
    cold_out = ""
    for p in extra:
        if p.stdout is not None:
            try:
                cold_out, _ = p.communicate(timeout=SECS + 60)
            except subprocess.TimeoutExpired:
                p.kill(); cold_out, _ = p.communicate()
        else:
            p.kill(); p.wait()
    if cold_out:
        m = re.search(r"(\d+) requests in", cold_out)
        res["cold_reqs"] = int(m.group(1)) if m else 0
        r = re.search(r"Transfer/sec:\s+(\S+)", cold_out)
        res["cold_rate"] = r.group(1) if r else "?"
    return res

KINDS = ["hot", "cold-disk", "cold-fuse"]
results = {s: {k: [] for k in KINDS} for s in SERVERS}
backend = None
for rep in range(REPS):
    for name, start in SERVERS.items():
        proc, port = start()
        try:
            for kind in KINDS:
                r = scenario(port, kind)
                results[name][kind].append(r)
                log(f"rep {rep + 1}/{REPS} {name:20} {kind:9} {r['rps']:9.0f} req/s  "
                    f"p50 {r['p50']:8.3f} ms  p99 {r['p99']:8.3f} ms  "
                    f"cold {r.get('cold_reqs', '-')} ({r.get('cold_rate', '-')})  "
                    f"non2xx {r['non2xx']} {r['sockerr']}")
        finally:
            proc.send_signal(signal.SIGQUIT if name.startswith("nginx") else signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill(); proc.wait()

out = []
p = out.append
if os.path.exists(f"{WORK}/mio.stdout"):
    with open(f"{WORK}/mio.stdout") as f:
        p(f"http_server {os.environ['MIO_ARGS']}: {f.read().strip().splitlines()[-1]}")
p(subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip())
p(f"wrk -t1 -c{CONNS} -d{SECS}s --latency over 100 hot files (1-16 KiB); cold load: 8 more "
  f"connections; {REPS} repetitions; medians (min-max)\n")
p("| server | scenario | req/s | p50 ms | p99 ms | p99 / hot p99 | cold requests done |")
p("|---|---|---|---|---|---|---|")
def div(a, b):
    return a / b if b else float("inf")
def med(xs):
    return statistics.median(xs)
def fmt(xs, f):
    return f"{f.format(med(xs))} ({f.format(min(xs))}-{f.format(max(xs))})"
for name in SERVERS:
    for kind in KINDS:
        rs = results[name][kind]
        ratios = [div(r["p99"], h["p99"]) for r, h in zip(rs, results[name]["hot"])]
        cold = "-" if kind == "hot" else str(int(med([r.get("cold_reqs", 0) for r in rs])))
        p(f"| {name} | {kind} | {fmt([r['rps'] for r in rs], '{:.0f}')} | "
          f"{fmt([r['p50'] for r in rs], '{:.3f}')} | {fmt([r['p99'] for r in rs], '{:.2f}')} | "
          f"{'-' if kind == 'hot' else fmt(ratios, '{:.2f}')} | {cold} |")
p("\nRatios within each repetition, mio-aio http_server / nginx aio threads (req/s: >1 is "
  "better; p99: <1 is better):\n")
p("| rep | scenario | req/s ratio | p99 ratio |")
p("|---|---|---|---|")
for rep in range(REPS if len(SERVERS) == 3 else 0):
    for kind in KINDS:
        m = results["mio-aio http_server"][kind][rep]
        n = results["nginx aio threads"][kind][rep]
        p(f"| {rep + 1} | {kind} | {div(m['rps'], n['rps']):.2f} | {div(m['p99'], n['p99']):.2f} |")
errs = ""
if os.path.exists(f"{WORK}/mio.stderr"):
    with open(f"{WORK}/mio.stderr") as f:
        errs = f.read().strip()
if errs:
    p("\nhttp_server stderr:\n" + errs[-2000:])
report = "\n".join(out) + "\n"
print(report)
os.makedirs("target", exist_ok=True)
with open("target/http-bench-results.md", "w") as f:
    f.write(report)
EOF
