"""Real ``zattd`` clusters on loopback for the Python tests, TLS material made at test time,
and a fake server that answers with whatever bytes a test scripts.

Owns starting and stopping processes: every server is started from the same build as the
rest of the tests (``target/release/zattd``, or ``$ZATTD``), on loopback ports below the
ephemeral range picked at random and retried when a server reports "address already in use",
and is killed when its cluster is stopped, when the test process exits, or (through
``PR_SET_PDEATHSIG``) when the test process dies. Every wait is bounded by a deadline;
nothing here asserts on timing. A :class:`PortCut` (iptables, root only) removes on exit the
rules it adds.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from zatt import wire
from zatt._conn import Conn, ConnError

REPO = Path(__file__).resolve().parents[3]
BUILD = REPO / "target" / "release"
ZATTD = Path(os.environ.get("ZATTD", BUILD / "zattd"))
ZATT_CLI = Path(os.environ.get("ZATT_CLI", BUILD / "zatt"))

# Timings small enough for quick failover on a loaded machine, large enough not to flap.
FAST = ["--heartbeat-interval", "20ms", "--election-timeout", "300ms"]

_ALL: set[subprocess.Popen[bytes]] = set()
_ALL_LOCK = threading.Lock()


def _kill_all() -> None:
    with _ALL_LOCK:
        procs = list(_ALL)
    for p in procs:
        with contextlib.suppress(OSError):
            p.kill()
        with contextlib.suppress(Exception):
            p.wait(timeout=5)


atexit.register(_kill_all)

_PR_SET_PDEATHSIG = 1
# Servers die with the test process even if it is killed without stopping them: through
# util-linux's setpriv when the machine has it (nothing runs in the forked child), else by a
# prctl between fork and exec, through a libc handle loaded here rather than in the child.
_SETPRIV = shutil.which("setpriv")
_LIBC = None if _SETPRIV else ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _server_command(args: list[str]) -> list[str]:
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *args] if _SETPRIV else args


def missing_build_message(path: Path) -> str:
    return (
        f"{path} not found: the Python tests run against the servers of this build; build "
        "them first with `cargo build --release` (in CI, the `cargo test --workspace "
        "--release` step before the Python checks builds them)"
    )


def random_port(rng: random.Random) -> int:
    """A loopback port below the ephemeral range (32768 and up), free for TCP and UDP now.
    Free now is not free later: the cluster retries with new ports when a server says
    "address already in use"."""
    for _ in range(1000):
        port = rng.randrange(20000, 32000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind(("127.0.0.1", port))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free loopback port below 32768")


class Tls:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    def __init__(self, directory: Path) -> None:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.timezone.utc)
        start = now - datetime.timedelta(days=1)
        end = now + datetime.timedelta(days=30)

        def key() -> ec.EllipticCurvePrivateKey:
            return ec.generate_private_key(ec.SECP256R1())

        def name(cn: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

        def write_key(path: Path, k: ec.EllipticCurvePrivateKey) -> None:
            path.write_bytes(
                k.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )

        def write_cert(path: Path, c: x509.Certificate) -> None:
            path.write_bytes(c.public_bytes(serialization.Encoding.PEM))

        def make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
            k = key()
            cert = (
                x509.CertificateBuilder()
                .subject_name(name(cn))
                .issuer_name(name(cn))
                .public_key(k.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start)
                .not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=True,
                        crl_sign=True,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .sign(k, hashes.SHA256())
            )
            return k, cert

        def make_leaf(
            ca_key: ec.EllipticCurvePrivateKey,
            ca: x509.Certificate,
            cn: str,
            server: bool,
        ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
            k = key()
            usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
            builder = (
                x509.CertificateBuilder()
                .subject_name(name(cn))
                .issuer_name(ca.subject)
                .public_key(k.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start)
                .not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            )
            if server:
                builder = builder.add_extension(
                    x509.SubjectAlternativeName(
                        [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                    ),
                    critical=False,
                )
            return k, builder.sign(ca_key, hashes.SHA256())

        directory.mkdir(parents=True, exist_ok=True)
        ca_key, ca = make_ca("zatt test CA")
        server_key, server = make_leaf(ca_key, ca, "zatt test server", True)
        client_key, client = make_leaf(ca_key, ca, "zatt test client", False)
        other_key, other_ca = make_ca("another CA")
        self.ca = directory / "ca.pem"
        self.server_cert = directory / "server.pem"
        self.server_key = directory / "server.key"
        self.client_cert = directory / "client.pem"
        self.client_key = directory / "client.key"
        self.other_ca = directory / "other-ca.pem"
        write_cert(self.ca, ca)
        write_cert(self.server_cert, server)
        write_key(self.server_key, server_key)
        write_cert(self.client_cert, client)
        write_key(self.client_key, client_key)
        write_cert(self.other_ca, other_ca)
        del other_key

    def server_context(self) -> ssl.SSLContext:
        """What a server speaking TLS with the server certificate uses."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.server_cert), str(self.server_key))
        return ctx

    def context(self, with_client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(self.ca))
        if with_client_cert:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


class Node:
    def __init__(self, cluster: Cluster, id: int, port: int) -> None:
        self.cluster = cluster
        self.id = id
        self.port = port
        self.addr = f"127.0.0.1:{port}"
        self.data_dir = cluster.dir / f"n{id}"
        self.log_path = cluster.dir / f"n{id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_once = False

    def spawn(self, first_start: Sequence[str]) -> None:
        args = [str(ZATTD), "--id", str(self.id), "--data-dir", str(self.data_dir)]
        if not self.started_once:
            args += list(first_start)
        args += self.cluster.extra
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZATT_")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                _server_command(args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                preexec_fn=None if _SETPRIV else _die_with_parent,
            )
        with _ALL_LOCK:
            _ALL.add(self.proc)
        self.started_once = True

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, and wait for the process to be gone."""
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.kill()
            self.proc.wait(timeout=10)
            with _ALL_LOCK:
                _ALL.discard(self.proc)
            self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Cluster:
    """``n`` voters with ids 1..n, each with ``extra`` flags (and the FAST timings)."""

    def __init__(
        self,
        directory: Path,
        n: int = 3,
        extra: Sequence[str] = (),
        tls: Tls | None = None,
        client_ca: bool = False,
    ) -> None:
        if not ZATTD.exists():
            raise FileNotFoundError(missing_build_message(ZATTD))
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n = n
        self.tls = tls
        self.extra = FAST + list(extra)
        if tls is not None:
            self.extra += ["--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key)]
            if client_ca:
                self.extra += ["--tls-client-ca", str(tls.ca)]
        self._probe_tls = None if tls is None else tls.context(with_client_cert=client_ca)
        self.nodes: list[Node] = []
        self.cluster_arg = ""
        self._start()

    def _start(self) -> None:
        rng = random.Random()
        for _attempt in range(20):
            ports: list[int] = []
            while len(ports) < self.n:
                p = random_port(rng)
                if p not in ports:
                    ports.append(p)
            self.nodes = [Node(self, i + 1, p) for i, p in enumerate(ports)]
            self.cluster_arg = ",".join(f"{n_.id}={n_.addr}" for n_ in self.nodes)
            for node in self.nodes:
                shutil.rmtree(node.data_dir, ignore_errors=True)
                with contextlib.suppress(FileNotFoundError):
                    node.log_path.unlink()
                node.spawn(["--cluster", self.cluster_arg])
            if self._wait_listening():
                return
            self.stop()
        raise RuntimeError("could not find free loopback ports for a cluster in 20 tries")

    def _wait_listening(self, timeout: float = 30.0) -> bool:
        """True once every node answers Status as itself; False when one could not bind its
        port (the caller retries on other ports). Any other early exit is an error naming
        the node and its last log lines."""
        deadline = time.monotonic() + timeout
        pending = {n_.id for n_ in self.nodes}
        while pending:
            for node in self.nodes:
                if node.id not in pending:
                    continue
                if not node.running():
                    tail = node.log_tail()
                    if "address already in use" in tail:
                        return False
                    raise RuntimeError(f"zattd {node.id} exited at start:\n{tail}")
                s = self.status(node.id)
                # Ours, not another test's server that took the port meanwhile: the same id
                # and exactly this cluster's members.
                if (
                    s is not None
                    and s.id == node.id
                    and {m.addr for m in s.members} == {n_.addr for n_ in self.nodes}
                ):
                    pending.discard(node.id)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "servers never answered: "
                    + "; ".join(f"n{i}: {self.node(i).log_tail(5)}" for i in pending)
                )
            time.sleep(0.02)
        return True

    def node(self, id: int) -> Node:
        return self.nodes[id - 1]

    def addr(self, id: int) -> str:
        return self.node(id).addr

    @property
    def endpoints(self) -> list[str]:
        return [n_.addr for n_ in self.nodes]

    def client_options(self) -> dict[str, object]:
        return {} if self.tls is None else {"tls_ca": str(self.tls.ca)}

    def status(self, id: int, timeout: float = 1.0) -> wire.Status | None:
        """Node ``id``'s status over a raw connection, or None if it does not answer."""
        node = self.node(id)
        deadline = time.monotonic() + timeout
        try:
            conn = Conn(node.addr, timeout, self._probe_tls, None, 1 << 20)
        except ConnError:
            return None
        try:
            conn.send(wire.StatusRequest().encode(1), deadline)
            _, resp = conn.recv(deadline)
        except ConnError:
            return None
        finally:
            conn.close()
        return resp.status if isinstance(resp, wire.StatusReply) else None

    def wait_leader(self, timeout: float = 30.0) -> int:
        """The leader's id once every running node names it and it says it leads."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [n_.id for n_ in self.nodes if n_.running()]
            views = [self.status(i) for i in running]
            leaders = {v.leader for v in views if v is not None}
            if len(leaders) == 1 and None not in leaders and all(v is not None for v in views):
                leader = leaders.pop()
                assert leader is not None
                s = self.status(leader) if leader in running else None
                if s is not None and s.role == "leader":
                    return leader
            time.sleep(0.05)
        raise RuntimeError(
            "no single leader in time: "
            + "; ".join(f"n{n_.id}: {n_.log_tail(5)}" for n_ in self.nodes)
        )

    def kill(self, id: int) -> None:
        self.node(id).kill()

    def pause(self, id: int) -> None:
        """SIGSTOP: the server is frozen (its sockets still accept connections)."""
        proc = self.node(id).proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGSTOP)

    def resume(self, id: int) -> None:
        """SIGCONT after :meth:`pause`."""
        proc = self.node(id).proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGCONT)

    def wait_status(self, id: int, what: str, pred: Callable[[wire.Status], bool]) -> None:
        """Waits until ``pred`` holds for node ``id``'s status, within 30 seconds."""
        deadline = time.monotonic() + 30
        while True:
            s = self.status(id)
            if s is not None and pred(s):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"n{id}: {what} not reached in time; last status {s}")
            time.sleep(0.05)

    def restart(self, id: int) -> None:
        self.node(id).spawn([])

    def start_joiner(self, id: int) -> Node:
        """A server started with --join (empty, waiting to be added), on a fresh port."""
        rng = random.Random()
        for _ in range(20):
            node = Node(self, id, random_port(rng))
            node.spawn(["--join", "--listen", node.addr, "--cluster", self.cluster_arg])
            self.nodes.append(node)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if not node.running():
                    break
                s = self.status(id)
                if s is not None and s.id == id:
                    return node
                time.sleep(0.02)
            tail = node.log_tail()
            self.nodes.remove(node)
            node.kill()
            if "address already in use" not in tail:
                raise RuntimeError(f"joiner {id} did not start:\n{tail}")
        raise RuntimeError("no free port for a joiner in 20 tries")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def logs(self) -> str:
        return "\n".join(f"--- n{n_.id}\n{n_.log_tail(30)}" for n_ in self.nodes)


class SendThenClose(bytes):
    """Bytes a :class:`FakeServer` script returns to have them sent and the connection closed
    after them (a frame cut short this way is a server dying while it writes its reply)."""


class FakeServer:
    """A TCP server on loopback that reads request frames and answers each with what
    ``script(request_id, opcode, frame)`` returns: bytes to send (``b""`` sends nothing;
    :class:`SendThenClose` bytes close the connection after them) or ``None`` to close the
    connection (``close_after_reply``: close after every answer). ``tls``: a server-side
    context to speak TLS with. Runs in a thread; stop with :meth:`close`."""

    def __init__(
        self,
        script: Callable[[int, int, bytes], bytes | None],
        close_after_reply: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.script = script
        self.close_after_reply = close_after_reply
        self.tls = tls
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            self._conns.append(c)
            threading.Thread(target=self._handle, args=(c,), daemon=True).start()

    def _handle(self, c: socket.socket) -> None:
        buf = b""
        if self.tls is not None:
            c.settimeout(5.0)
            try:
                c = self.tls.wrap_socket(c, server_side=True)
            except OSError:
                return
            self._conns.append(c)
        c.settimeout(0.05)
        while not self._stop.is_set():
            try:
                chunk = c.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while len(buf) >= 13:
                n = int.from_bytes(buf[:4], "little") + 4
                if len(buf) < n:
                    break
                frame, buf = buf[:n], buf[n:]
                rid = int.from_bytes(frame[4:12], "little")
                out = self.script(rid, frame[12], frame)
                if out is None:
                    with contextlib.suppress(OSError):
                        c.close()
                    return
                if out:
                    try:
                        c.sendall(out)
                    except OSError:
                        return
                if self.close_after_reply or isinstance(out, SendThenClose):
                    with contextlib.suppress(OSError):
                        c.close()
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()
        self.sock.close()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _iptables(*args: str) -> str | None:
    """Runs ``iptables -w ARGS``; ``None`` when it succeeded, else why it did not."""
    exe = shutil.which("iptables") or "/usr/sbin/iptables"
    try:
        done = subprocess.run(
            [exe, "-w", *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot run iptables: {e}"
    if done.returncode != 0:
        return done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
    return None


def iptables_unusable() -> str | None:
    """Why this test process cannot add iptables rules (it needs root and the command), or
    ``None`` when it can."""
    why = _iptables("-L", "INPUT", "-n")
    return None if why is None else f"iptables cannot be used here ({why}); it needs root"


class PortCut:
    """iptables rules dropping a loopback UDP port's datagrams both ways: the server on that
    port is cut off from its peers (they speak UDP) while clients (TCP) still reach it. The
    rules carry a comment naming this process and are removed on exit."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._rules: list[list[str]] = []

    def __enter__(self) -> PortCut:
        tag = f"zatt-test-{os.getpid()}"
        try:
            for direction in ("--dport", "--sport"):
                rule = ["INPUT", "-i", "lo", "-p", "udp", direction, str(self.port)]
                rule += ["-m", "comment", "--comment", tag, "-j", "DROP"]
                why = _iptables("-I", *rule)
                if why is not None:
                    raise RuntimeError(f"cannot cut port {self.port} off: {why}")
                self._rules.append(rule)
        except BaseException:
            self.heal()
            raise
        return self

    def heal(self) -> None:
        """Removes the rules added (each once; removing twice is harmless)."""
        while self._rules:
            _iptables("-D", *self._rules.pop())

    def __exit__(self, *exc: object) -> None:
        self.heal()


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[bytes]:
    """The Rust ``zatt`` command line of this build."""
    if not ZATT_CLI.exists():
        raise FileNotFoundError(missing_build_message(ZATT_CLI))
    return subprocess.run(
        [str(ZATT_CLI), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if not k.startswith("ZATT_")},
    )


def frame(request_id: int, opcode: int, body: bytes = b"") -> bytes:
    """A response frame as a server would send it."""
    return (
        (len(body) + 9).to_bytes(4, "little")
        + request_id.to_bytes(8, "little")
        + bytes([opcode])
        + body
    )


def u64(v: int) -> bytes:
    return v.to_bytes(8, "little")


# The Status request's opcode: a client proves a connection that has not answered yet with one
# before a request it sends only once, so fake servers answer it (see :func:`status_reply`).
STATUS = 8


def status_reply(request_id: int) -> bytes:
    """A Status response for ``request_id``: the golden one of ``docs/PROTOCOL.md``."""
    golden = _golden_status()
    return golden[:4] + u64(request_id) + golden[12:]


@functools.lru_cache(maxsize=1)
def _golden_status() -> bytes:
    return golden_frames()["response/status"]


def session_of(request: bytes) -> tuple[int, int] | None:
    """The session tag of a Put, Delete or Cas request frame."""
    if request[13] == 0:
        return None
    return int.from_bytes(request[14:22], "little"), int.from_bytes(request[22:30], "little")


def golden_frames() -> dict[str, bytes]:
    """The golden frames of ``docs/PROTOCOL.md``: name → bytes."""
    text = (REPO / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    frames: dict[str, bytes] = {}
    for m in re.finditer(r"^```golden (\S+)\n(.*?)^```", text, re.S | re.M):
        digits = "".join("".join(line.split("#", 1)[0].split()) for line in m.group(2).splitlines())
        assert m.group(1) not in frames, f"golden {m.group(1)} appears twice"
        frames[m.group(1)] = bytes.fromhex(digits)
    return frames
