"""No open doors: during a local ``rdarts sweep run`` every server of the sweep listens on loopback only, Ray's HTTP
agents refuse requests without the token, and the session files and the token are this user's alone.

Slow (about a minute): one real ``rdarts sweep run sweeps/smoke.yaml --no-reduce`` in a subprocess; its process tree's
listening sockets are read from /proc (no ``ss`` needed) while it runs.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sweep_fixtures import ROOT, SWEEPS

pytestmark = pytest.mark.slow


def _listening() -> dict[int, tuple[str, int]]:
    """Socket inode -> (address, port) of every listening TCP socket on the machine."""
    out: dict[int, tuple[str, int]] = {}
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            hex_addr, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_addr)
            # /proc prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            out[int(fields[9])] = (socket.inet_ntop(family, raw), int(hex_port, 16))
    return out


def _tree(root: int) -> set[int]:
    """``root`` and its descendants."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo += children.get(pid, [])
    return seen


def _sockets_of(pids: set[int]) -> set[tuple[str, int, str]]:
    listening = _listening()
    found = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and int(link[8:-1]) in listening:
                found.add((*listening[int(link[8:-1])], name))
    return found


def _is_loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _http_status(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/job_agent/jobs/x/logs", timeout=3) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ValueError, http.client.HTTPException):
        return None  # not HTTP (a gRPC server)


def test_a_local_sweep_listens_on_loopback_only_and_requires_the_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    temp = Path(tempfile.mkdtemp(prefix="rdt", dir="/tmp"))  # short: Ray's socket paths are capped at 107 bytes
    env.update(RDARTS_RAY_TMP=str(temp), RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.Popen([sys.executable, "-m", "rdarts", "sweep", "run", str(SWEEPS / "smoke.yaml"), "--no-reduce",
                             "--storage", str(tmp_path / "results")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen: set[tuple[str, int, str]] = set()
    statuses: dict[int, int | None] = {}
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            for addr, port, name in _sockets_of(_tree(proc.pid)) - seen:
                seen.add((addr, port, name))
                statuses[port] = _http_status(port)
            time.sleep(0.5)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert any(name == "gcs_server" for _, _, name in seen) and any(name == "raylet" for _, _, name in seen), seen
    outside = sorted(s for s in seen if not _is_loopback(s[0]))
    assert not outside, f"listening beyond loopback: {outside}"
    # Token authentication is on: Ray's HTTP agents refuse a request that carries no token.
    http = {p: s for p, s in statuses.items() if s is not None}
    assert any(s == 401 for s in http.values()), http
    assert temp.stat().st_mode & 0o777 == 0o700
    shutil.rmtree(temp, ignore_errors=True)
    token = Path.home() / ".ray" / "auth_token"
    assert token.stat().st_mode & 0o077 == 0
