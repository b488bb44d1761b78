"""Integration test support: real processes on free loopback ports in a temporary
directory. Every test starts what it needs (test backends, the gateway) and the
tear-down stops it all and checks the gateway's log for errors and sanitizer
reports."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("SWITCHYARD_BIN") or os.path.join(ROOT, "build", "switchyard")
SANITIZED = os.environ.get("SWITCHYARD_SANITIZE", "OFF").upper() in ("ON", "1", "TRUE")
# Sanitizer builds are slower: scale waits, never assertions on speed.
SLOW = 3.0 if SANITIZED else 1.0

BAD_LOG = re.compile(r"(ERROR: AddressSanitizer|runtime error:|LeakSanitizer|Z error \[)")


_given = set()



def wait_for(cond, timeout=20.0, what="the condition", every=0.05):
    """Polls cond() until it returns something true (returned), for up to
    timeout seconds (scaled for sanitizer builds); fails the test otherwise."""
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError("timed out waiting for " + what)


def http(method, url, body=None, token=None, timeout=10):
    """One admin API call with an optional bearer token and JSON body:
    (status, body bytes), error statuses included."""
    import urllib.error
    import urllib.request
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

def free_port():
    """A port nothing listens on, never the same twice in one test process."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _given:
            _given.add(port)
            return port


def wait_port(port, timeout=10.0, proc=None):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %d" % (proc.returncode, port))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listening on %d" % port)


class Env:
    """Processes and files of one test."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sy-test-")
        self.procs = []
        self.gateways = []
        self.allowed = []   # regexes of log lines a test provokes on purpose
        self.postgres = []

    def path(self, name):
        return os.path.join(self.dir, name)

    def start_backend(self, name, port=None, args=()):
        port = port or free_port()
        with open(self.path("backend-%s-%d.log" % (name, port)), "w") as log:
            p = subprocess.Popen([sys.executable, os.path.join(HERE, "backend.py"), "--port", str(port), "--name",
                                  name] + list(args), stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        wait_port(port, proc=p)
        return port

    def start_redis(self, port=None, notifications="", args=()):
        """A real redis-server on loopback, no persistence (`args`, e.g. --dir and
        --dbfilename, may name a dump to load at start)."""
        port = port or free_port()
        with open(self.path("redis-%d.log" % port), "w") as log:
            p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--notify-keyspace-events", notifications,
                                  # never a dump.rdb from (or into) the current directory
                                  "--dir", self.dir, "--dbfilename", "redis-%d.rdb" % port] + list(args),
                                 stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        wait_port(port, proc=p)
        # The port answering is not enough: another test process running at the
        # same time may hold it. Only our own redis-server will do.
        deadline = time.time() + 10 * SLOW
        while True:
            info = self.redis(port, "INFO", "server")
            m = re.search(r"^process_id:(\d+)", info, re.M)
            if m and int(m.group(1)) == p.pid:
                break
            if p.poll() is not None or time.time() > deadline:
                raise RuntimeError("redis-server on %d is not ours (pid %s, ours %d): port taken by another test"
                                   % (port, m.group(1) if m else "?", p.pid))
            time.sleep(0.02)
        p.port = port
        return p

    def start_postgres(self, port=None):
        """A real PostgreSQL (initdb + pg_ctl) on loopback, owned by an unprivileged user
        when the tests run as root. Stopped (and its files removed) by close()."""
        pg = Postgres(self, port or free_port())
        pg.init()
        pg.start()
        self.postgres.append(pg)
        return pg

    def start_sentinel(self, master_port, name="symaster", quorum=1):
        """A redis-sentinel on loopback watching the master at master_port as `name`
        (quick failure detection: down after 1 s, failover timeout 2 s)."""
        port = free_port()
        conf = self.path("sentinel-%d.conf" % port)
        with open(conf, "w") as f:
            f.write("port %d\nbind 127.0.0.1\ndir %s\n" % (port, self.dir) +
                    "sentinel monitor %s 127.0.0.1 %d %d\n" % (name, master_port, quorum) +
                    "sentinel down-after-milliseconds %s 1000\n" % name +
                    "sentinel failover-timeout %s 2000\n" % name +
                    "sentinel parallel-syncs %s 1\n" % name)
        with open(self.path("sentinel-%d.log" % port), "w") as log:
            p = subprocess.Popen(["redis-server", conf, "--sentinel"], stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        wait_port(port, proc=p)
        p.port = port
        return p

    def start_sentinel_group(self, name="symaster", sentinels=2, quorum=1):
        """A Redis master, its replica (in sync) and `sentinels` redis-sentinels that
        know both and each other. Returns a SentinelGroup."""
        master = self.start_redis()
        replica = self.start_redis(args=["--replicaof", "127.0.0.1", str(master.port)])
        wait_for(lambda: "master_link_status:up" in self.redis(replica.port, "INFO", "replication"),
                 what="the replica in sync")
        g = SentinelGroup(self, name, master, replica,
                          [self.start_sentinel(master.port, name, quorum) for _ in range(sentinels)])
        wait_for(g.knows, timeout=30, what="sentinels discover each other and the replica")
        return g

    def start_pg_standby(self, primary):
        """A streaming standby of the Postgres `primary` (pg_basebackup -R), started,
        streaming, and stopped by close()."""
        standby = Standby(self, free_port(), primary)
        standby.start()
        self.postgres.append(standby)
        wait_for(lambda: primary.scalar("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
                 == "1", timeout=60, what="the standby streaming")
        return standby

    def redis(self, port, *args):
        r = subprocess.run(["redis-cli", "-p", str(port)] + [str(a) for a in args], capture_output=True, text=True,
                           timeout=10)
        return r.stdout.strip()

    def write_config(self, text, name="switchyard.yaml"):
        path = self.path(name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_gateway(self, config_text, port, name="gw", extra_env=None, wait=True, args=(), pass_fds=()):
        if not re.search(r"^admin:", config_text, re.M):
            # Listeners are exclusive: never the shared default admin address.
            config_text += "\nadmin: {address: 127.0.0.1:%d}\n" % free_port()
        cfg = self.write_config(config_text, name + ".yaml")
        log_path = self.path(name + ".log")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        if extra_env:
            env.update(extra_env)
        with open(log_path, "w") as log:
            p = subprocess.Popen([BIN, "-c", cfg] + list(args), stdout=log, stderr=subprocess.STDOUT, env=env,
                                 pass_fds=pass_fds)
        p.log_path = log_path
        p.config_path = cfg
        self.procs.append(p)
        self.gateways.append(p)
        if wait:
            wait_port(port, proc=p)
            # The admin listener is bound after the data listeners: a test that
            # talks to it first must not find it refused.
            m = re.search(r"^admin:\s*\{\s*address:\s*127\.0\.0\.1:(\d+)", config_text, re.M)
            if m:
                wait_port(int(m.group(1)), proc=p)
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=20):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout * SLOW)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode

    def close(self):
        problems = []
        for p in reversed(self.procs):
            rc = self.stop(p)
            if p in self.gateways and rc not in (0, None) and not getattr(p, "killed", False):
                problems.append("gateway exited with %s" % rc)
        for pg in self.postgres:
            pg.destroy()
        for p in self.gateways:
            with open(p.log_path, errors="replace") as f:
                for line in f:
                    if BAD_LOG.search(line) and not any(re.search(a, line) for a in self.allowed):
                        problems.append("gateway log: " + line.strip())
        if problems:
            keep = self.dir
            raise AssertionError("\n".join(problems[:20]) + "\n(files kept in %s)" % keep)
        if os.environ.get("SY_KEEP"):
            print("(SY_KEEP: files kept in %s)" % self.dir, flush=True)
            return
        shutil.rmtree(self.dir, ignore_errors=True)


PG_BIN = os.environ.get("PG_BIN") or "/usr/lib/postgresql/15/bin"


class Postgres:
    """One PostgreSQL 15 cluster in a directory of its own (under /tmp, so that the
    unprivileged user can reach it), on 127.0.0.1:port, database "switchyard",
    trust authentication for loopback."""

    def __init__(self, env, port):
        self.env = env
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="sy-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "pg.log")
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres"
            shutil.chown(self.dir, self.user)
            os.chmod(self.dir, 0o755)

    def _run(self, args, check=True, timeout=60):
        cmd = (["runuser", "-u", self.user, "--"] if self.user else []) + args
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError("%s failed: %s %s" % (" ".join(args), r.stdout, r.stderr))
        return r

    def init(self):
        self._run([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "switchyard", "--auth=trust",
                   "--no-sync", "-E", "UTF8", "--locale=C"])

    def start(self):
        opts = ("-c listen_addresses=127.0.0.1 -c port=%d -c unix_socket_directories=%s -c fsync=off "
                "-c full_page_writes=off -c synchronous_commit=off" % (self.port, self.dir))
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", "60",
                   "start"])
        if not getattr(self, "created", False):
            self.psql("CREATE DATABASE switchyard", db="postgres")
            self.created = True

    def stop(self, mode="fast"):
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", mode, "-w", "-t", "60", "stop"],
                  check=False)

    def destroy(self):
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def conninfo(self):
        return "host=127.0.0.1 port=%d dbname=switchyard user=switchyard connect_timeout=5" % self.port

    def psql(self, sql, db="switchyard"):
        """Runs sql with the real psql client; returns the rows as lists of strings."""
        r = subprocess.run(["psql", "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
                            str(self.port), "-U", "switchyard", "-d", db, "-c", sql],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("psql: %s" % r.stderr.strip())
        return [line.split("\t") for line in r.stdout.splitlines() if line != ""]

    def scalar(self, sql):
        rows = self.psql(sql)
        return rows[0][0] if rows else None


class Standby(Postgres):
    """A streaming standby of `primary`: pg_basebackup -R into its own directory."""

    def __init__(self, env, port, primary):
        super().__init__(env, port)
        self.created = True  # the database comes with the base backup
        self._run([os.path.join(PG_BIN, "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U",
                   "switchyard", "-D", self.data, "-R", "-X", "stream", "--no-sync", "--checkpoint=fast"], timeout=120)

    def promote(self):
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-w", "-t", "60", "promote"])


def failover_conninfo(primary, standby):
    """A multi-host conninfo that finds whichever of the two takes writes."""
    return ("host=127.0.0.1,127.0.0.1 port=%d,%d dbname=switchyard user=switchyard "
            "target_session_attrs=read-write connect_timeout=5" % (primary.port, standby.port))


class SentinelGroup:
    """What Env.start_sentinel_group started: master and replica (redis-server
    processes with .port; a test that fails over may swap them), the sentinels."""

    def __init__(self, env, name, master, replica, sentinels):
        self.env, self.name = env, name
        self.master, self.replica, self.sentinels = master, replica, sentinels

    def master_port(self):
        """The master's port as the first sentinel names it (None: no answer)."""
        out = self.env.redis(self.sentinels[0].port, "SENTINEL", "get-master-addr-by-name", self.name).split("\n")
        return int(out[1]) if len(out) == 2 else None

    def knows(self):
        """Every sentinel sees one replica and all the other sentinels, and does not
        take the master for down."""
        for s in self.sentinels:
            lines = self.env.redis(s.port, "SENTINEL", "MASTER", self.name).split("\n")
            d = dict(zip(lines[::2], lines[1::2]))
            if (d.get("num-slaves") != "1" or d.get("num-other-sentinels") != str(len(self.sentinels) - 1)
                    or "s_down" in d.get("flags", "")):
                return False
        return True


def curl(*args, timeout=60):
    """Runs the real curl; returns (status, headers dict lower-cased, body bytes)."""
    cmd = ["curl", "-sS", "-D", "-", "--max-time", str(int(timeout * SLOW))] + list(args)
    r = subprocess.run(cmd, capture_output=True, timeout=timeout * SLOW + 10)
    out = r.stdout
    status, headers = 0, {}
    # Skip interim 1xx heads.
    while out.startswith(b"HTTP/"):
        head, _, rest = out.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for l in lines[1:]:
            k, _, v = l.partition(b":")
            headers[k.strip().lower().decode()] = v.strip().decode()
        out = rest
        if status >= 200:
            break
    return status, headers, out


def raw(port, data, timeout=5.0, read_all=True):
    """Sends raw bytes on a fresh connection; returns what came back until close or timeout."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(timeout * SLOW)
    s.sendall(data)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
            if not read_all and b"\r\n\r\n" in out:
                break
    except socket.timeout:
        out += b"<timeout>"
    s.close()
    return out


def backend_stats(port):
    s, h, b = curl("http://127.0.0.1:%d/__stats" % port)
    return json.loads(b)


def base_config(gw_port, legacy_port, new_port, extra_route="", extra_top="", workers=2, percent=2500,
                extra_keys=""):
    return """workers: %d
listen:
  - address: 127.0.0.1:%d
access_log: %%(log)s
%s
pools:
  legacy: {endpoints: [127.0.0.1:%d]}
  new: {endpoints: [127.0.0.1:%d]}
routes:
  - name: nav
    match: {path_prefix: /}
    user_key: [{header: X-User-Id}, {cookie: uid}, {query: user}]
    legacy: legacy
    new: new
    percent_bp: %d
    test_users: ["42", "admin-7"]
    expose_variant: true
    override: {header: X-Switchyard-Variant, trusted_cidrs: [127.0.0.0/8]}
%s%s
""" % (workers, gw_port, extra_top, legacy_port, new_port, percent, extra_keys, extra_route)


class GatewayTest(unittest.TestCase):
    """Starts a legacy and a new backend; tests start the gateway they need."""

    def setUp(self):
        self.env = Env()
        self.legacy = self.env.start_backend("legacy")
        self.new = self.env.start_backend("new")
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port

    def tearDown(self):
        self.env.close()

    def gateway(self, text=None, **kw):
        if text is None:
            text = base_config(self.port, self.legacy, self.new, **kw)
        self.access_log = self.env.path("access.log")
        return self.env.start_gateway(text.replace("%(log)s", self.access_log), self.port)

    def access_lines(self, wait=0.3):
        time.sleep(wait)  # the access log is written by a background thread
        with open(self.access_log) as f:
            text = f.read()
        # A line the writer thread has not finished yet (no newline) is not read.
        return [json.loads(l) for l in text.split("\n")[:-1] if l.strip()]

    def access_wait(self, cond, what="the access log lines", timeout=20):
        """The access log's lines once cond(lines) holds. The log is written by a
        background thread, and a worker queues a request's line only after the
        response went out: a client may see its response long before the line
        is in the file (seconds, on a loaded sanitized build)."""
        got = []

        def ready():
            lines = self.access_lines(0)
            if cond(lines):
                got.append(lines)
                return True
            return False
        wait_for(ready, timeout, what)
        return got[0]


class RedisConn:
    """A persistent RESP connection (for timing edits without a process spawn)."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.f = self.s.makefile("rb")

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        return self.f.readline()

    def close(self):
        self.f.close()
        self.s.close()


class Client:
    """A keep-alive HTTP client (http.client) for many requests quickly."""

    def __init__(self, port):
        import http.client
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * SLOW)

    def get(self, path, headers=None):
        import http.client
        for attempt in range(2):
            try:
                self.conn.request("GET", path, headers=headers or {})
                r = self.conn.getresponse()
                body = r.read()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, body
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10 * SLOW)
                if attempt:
                    raise

    def variant(self, user, path="/x"):
        s, h, b = self.get(path, {"X-User-Id": str(user)})
        return h.get("x-backend")

    def close(self):
        self.conn.close()


def main():
    unittest.main(verbosity=2)
