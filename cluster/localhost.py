#!/usr/bin/env python3
"""Make this machine a one-node on-premises cluster for ``ray up``: the head on 127.0.0.1, reached over ssh.

``setup`` (root; idempotent) prepares what ``cluster/local-venv.yaml`` expects of a host, then writes that file with
its placeholders filled in, and prints the commands from ``ray up`` to the MLflow UI and ``ray down``:

1. the Debian packages it and the head's commands run (``openssh-server``, ``rsync``, ``procps``, ``curl``), when
   missing;
2. an ssh user (default ``rdarts``; a separate account, so that the head's ``ray stop`` cannot touch any other Ray
   on this machine) in the group ``rdarts-ssh``, with key-only login, and a key pair for the user running ``ray up``;
3. an ACL entry ``u:USER:x`` on each folder above the venv and its interpreter that the user cannot pass through
   (a root-made venv often points into /root);
4. an sshd of its own on 127.0.0.1:22 only (key logins of ``rdarts-ssh`` members only), unless an sshd there already
   lets the key in (Ray's local provider connects to port 22 and has no setting for another);
5. the shared folder (what NFS is on a real cluster) owned by the ssh user, and a check that the user can run the
   venv's ``rdarts``, ``ray`` and ``mlflow``.

``teardown`` stops the sshd that ``setup`` started and removes its ACL entries (run it after ``ray down``);
``--remove-user`` also deletes the user and its home. The sshd listens on 127.0.0.1 only; Ray's own ports do not
(see cluster/README.md).

    .venv/bin/python cluster/localhost.py setup              # writes build/localhost/localhost.yaml
    .venv/bin/python cluster/localhost.py setup --ports free # every Ray/MLflow port picked free (a Ray already runs)
    .venv/bin/python cluster/localhost.py teardown
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "cluster" / "local-venv.yaml"
DEFAULT_DIR = ROOT / "build" / "localhost"
STATE_FILE = "localhost.json"
SSHD = "/usr/sbin/sshd"
# The sshd that setup starts lets in the members of this group: a second setup (another --user, e.g. the tests')
# joins it and reuses that sshd, since there is only one port 22.
SSH_GROUP = "rdarts-ssh"
TEMPLATE_VENV = "/opt/rdarts/.venv"
TEMPLATE_SHARED = "/mnt/rdarts"
DEFAULT_PORTS = {"gcs": 6379, "dashboard": 8265, "mlflow": 5000}
# Ray's other fixed default ports: with --ports free they move too, so a second Ray on the machine (a test session,
# a laptop's own `ray start`) cannot take them first ("No available agent to submit job").
EXTRA_RAY_PORTS = ("ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                   "runtime-env-agent-port", "metrics-export-port")


class SetupError(Exception):
    """What went wrong and what to do about it; printed on one line, exit 2."""


@dataclass
class Localhost:
    """What ``setup`` made; saved as ``<dir>/localhost.json`` for ``teardown`` (and tests)."""

    config: str
    user: str
    home: str
    key: str
    shared: str
    venv: str
    storage: str
    dashboard: str
    mlflow: str
    ports: dict[str, int]
    sshd_pid_file: str | None  # None: an sshd that was already there is used
    granted: list[str]  # folders given an ACL entry u:USER:x


def _run(cmd: list[str], *, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# What this script and the cluster file run, and the Debian package of each: sshd and the client, rsync (the
# launcher's file sync), pgrep and curl (the head's MLflow start command), runuser and useradd (here).
NEEDED = {SSHD: "openssh-server", "ssh": "openssh-client", "ssh-keygen": "openssh-client", "rsync": "rsync",
          "pgrep": "procps", "curl": "curl", "runuser": "util-linux", "useradd": "passwd"}


def ensure_packages(packages: tuple[str, ...] | None = None) -> None:
    """Debian packages, when missing: by default those of ``NEEDED`` (``apt-get`` starts no daemon in a container)."""
    if packages is None:
        packages = tuple(sorted({pkg for exe, pkg in NEEDED.items() if not shutil.which(exe)}))
    if not packages:
        return
    print(f"localhost: installing {' '.join(packages)} (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if _run(["apt-get", "install", "-y", "-qq", *packages], env=env, check=False).returncode:
        _run(["apt-get", "update", "-qq"], env=env, check=False)  # a fresh machine's package lists may be stale
        r = _run(["apt-get", "install", "-y", "-qq", *packages], env=env, check=False)
        if r.returncode:
            raise SetupError(f"apt-get could not install {' '.join(packages)}: {r.stderr.strip()[-300:]}")


def ensure_user(user: str) -> pwd.struct_passwd:
    """The ssh user: a login shell, a home, no password but not locked (sshd refuses locked accounts' keys)."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        print(f"localhost: adding user {user}", flush=True)
        _run(["useradd", "--create-home", "--shell", "/bin/bash", user])
        pw = pwd.getpwnam(user)
    _run(["groupadd", "-f", SSH_GROUP])
    _run(["usermod", "-p", "*", "-a", "-G", SSH_GROUP, user])
    return pw


def ensure_keys(folder: Path, pw: pwd.struct_passwd) -> Path:
    """A key pair for ``ray up`` in ``folder``; its public half in the ssh user's authorized_keys."""
    key = folder / "id_ed25519"
    if not key.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rdarts-localhost", "-f", str(key)])
    public = key.with_suffix(".pub").read_text().strip()
    ssh_dir = Path(pw.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    auth = ssh_dir / "authorized_keys"
    lines = auth.read_text().splitlines() if auth.exists() else []
    if public not in lines:
        auth.write_text("\n".join([*lines, public]) + "\n")
    for path in (ssh_dir, auth):
        os.chown(path, pw.pw_uid, pw.pw_gid)
    ssh_dir.chmod(0o700)
    auth.chmod(0o600)
    return key


def ssh_login_works(user: str, key: Path) -> bool:
    r = _run(["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
              "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
              f"{user}@127.0.0.1", "true"], check=False)
    return r.returncode == 0


def ensure_sshd(folder: Path, user: str, key: Path) -> Path | None:
    """An sshd on 127.0.0.1:22 that lets ``key`` in as ``user``; its pid file, or None for one already there."""
    pid_file = folder / "sshd.pid"
    if _port_open(22):
        if ssh_login_works(user, key):
            return pid_file if pid_file.exists() else None
        raise SetupError(f"something already listens on 127.0.0.1:22 and does not let {user} in with {key}; Ray's "
                         f"local provider only connects to port 22: stop it, or make it accept {key}.pub for {user}")
    host_key = folder / "ssh_host_ed25519_key"
    if not host_key.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)])
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"# written by cluster/localhost.py: key logins of the group {SSH_GROUP}, on the loopback address only",
        "Port 22",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"PidFile {pid_file}",
        f"AllowGroups {SSH_GROUP}",
        "AuthorizedKeysFile .ssh/authorized_keys",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin no",
        "UsePAM no",
        "X11Forwarding no",
        "AllowTcpForwarding local",  # `ray attach -p` / `ray dashboard` tunnels
        "Subsystem sftp internal-sftp",
        "",
    ]))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    r = _run([SSHD, "-f", str(config)], check=False)
    if r.returncode:
        raise SetupError(f"sshd did not start: {(r.stderr or r.stdout).strip()}")
    deadline = time.monotonic() + 10
    while not ssh_login_works(user, key):
        if time.monotonic() > deadline:
            raise SetupError(f"sshd started but {user} cannot log in with {key}; see {config}")
        time.sleep(0.3)
    return pid_file


def _can_enter(user: str, folder: Path) -> bool:
    return _run(["runuser", "-u", user, "--", "test", "-x", str(folder)], check=False).returncode == 0


def _traverse_targets(venv: Path) -> list[str]:
    """The folders the ssh user must pass through: above the venv, its interpreter and sweeps/ (parents first)."""
    targets = {venv / "bin" / "python", (venv / "bin" / "python").resolve(), ROOT / "sweeps"}
    return sorted({str(d) for t in targets for d in t.parents})


def grant_traverse(venv: Path, user: str) -> list[str]:
    """Let ``user`` pass through the folders above the venv and its interpreter that it may not enter.

    A venv made by root often points at an interpreter under /root (pyenv), which is mode 0700. An ACL entry
    ``u:USER:x`` on just those folders lets that one user reach known paths without listing them; ``teardown``
    takes it away again. Returns the folders changed.
    """
    granted: list[str] = []
    for d in _traverse_targets(venv):
        if _can_enter(user, Path(d)):
            continue
        if not shutil.which("setfacl"):
            ensure_packages(("acl",))
        _run(["setfacl", "-m", f"u:{user}:x", d])
        granted.append(d)
        print(f"localhost: {user} may now pass through {d} (ACL u:{user}:x; teardown removes it)", flush=True)
    return granted


def check_venv(venv: Path, user: str) -> None:
    probe = "import rdarts, ray, mlflow; print(ray.__version__)"
    r = _run(["runuser", "-u", user, "--", str(venv / "bin" / "python"), "-c", probe], check=False, cwd="/")
    if r.returncode:
        raise SetupError(f"user {user} cannot run {venv}/bin/python with rdarts, ray and mlflow "
                         f"({(r.stderr or r.stdout).strip().splitlines()[-1:]}); run scripts/setup first, and make "
                         f"the checkout and the venv readable by {user}")


def pick_ports(mode: str) -> dict[str, int]:
    if mode == "free":
        return {**{k: _free_port() for k in DEFAULT_PORTS}, **{k: _free_port() for k in EXTRA_RAY_PORTS}}
    taken = [f"{k} {p}" for k, p in DEFAULT_PORTS.items() if _port_open(p)]
    if taken:
        raise SetupError(f"port(s) in use on 127.0.0.1: {', '.join(taken)} (another Ray or MLflow?); stop it, or "
                         "run setup with --ports free")
    return dict(DEFAULT_PORTS)


def _replace(text: str, old: str, new: str, where: str) -> str:
    if old not in text:
        raise SetupError(f"{TEMPLATE.name}: {where}: expected {old!r} to fill in; was the template edited?")
    return text.replace(old, new)


def render(*, user: str, key: Path, venv: Path, shared: Path, ports: dict[str, int],
           name: str = "rdarts-localhost") -> dict:
    """``cluster/local-venv.yaml`` with its placeholders filled in for a head on 127.0.0.1 and no workers."""
    cfg = yaml.safe_load(TEMPLATE.read_text())
    cfg["cluster_name"] = name
    cfg["provider"] = {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    cfg["auth"] = {"ssh_user": user, "ssh_private_key": str(key)}
    cfg["file_mounts"] = {"~/work/sweeps": str(ROOT / "sweeps")}  # absolute: `ray up` works from any folder
    gcs, dash, mlflow = ports["gcs"], ports["dashboard"], ports["mlflow"]
    extra = " ".join(f"--{name}={ports[name]}" for name in EXTRA_RAY_PORTS if name in ports)

    def fill(cmd: str, where: str) -> str:
        if TEMPLATE_VENV in cmd:
            cmd = cmd.replace(TEMPLATE_VENV, str(venv))
        cmd = cmd.replace(TEMPLATE_SHARED, str(shared))
        cmd = cmd.replace("127.0.0.1:5000", f"127.0.0.1:{mlflow}").replace("--port 5000", f"--port {mlflow}")
        if "ray start --head" in cmd:
            # (No --node-ip-address=127.0.0.1: `ray start` swaps a loopback address for the host's own.)
            cmd = _replace(cmd, "--port=6379", f"--port={gcs} --dashboard-port={dash} {extra}".rstrip(), where)
        cmd = cmd.replace("$RAY_HEAD_IP:6379", f"$RAY_HEAD_IP:{gcs}")
        return cmd

    for k in ("setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        cfg[k] = [fill(c, k) for c in cfg[k]]
    text = "\n".join(cfg["setup_commands"] + cfg["head_start_ray_commands"])
    for needed, what in ((str(venv), "the venv path"), (str(shared), "the shared folder"),
                         (f"--port {mlflow}", "MLflow's port"), (f"--port={gcs}", "Ray's port")):
        if needed not in text:
            raise SetupError(f"{TEMPLATE.name}: {what} ({TEMPLATE_VENV}, {TEMPLATE_SHARED}, 5000, 6379) was not "
                             "found in the commands; was the template edited?")
    return cfg


def _save_state(folder: Path, **fields: Any) -> None:
    """Merge ``fields`` into ``<folder>/localhost.json`` as setup goes, so that teardown can undo a setup that
    failed half-way (a user added, an ACL granted, an sshd started)."""
    path = folder / STATE_FILE
    state = json.loads(path.read_text()) if path.exists() else {}
    if "granted" in fields:  # a second setup keeps what the first one granted, for teardown to take back
        fields["granted"] = sorted(set(fields["granted"]) | set(state.get("granted", [])))
    path.write_text(json.dumps({**state, **fields}, indent=1) + "\n")


def setup(args: argparse.Namespace) -> Localhost:
    if os.geteuid() != 0:
        raise SetupError("setup needs root: it installs openssh-server, adds a user and starts sshd (run it with sudo)")
    folder = Path(args.dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)  # the private key lives here
    venv = Path(args.venv).resolve() if args.venv else Path(sys.prefix)
    shared = Path(args.shared).resolve()
    ensure_packages()
    pw = ensure_user(args.user)
    _save_state(folder, user=args.user, venv=str(venv))
    key = ensure_keys(folder, pw)
    shared.mkdir(parents=True, exist_ok=True)
    os.chown(shared, pw.pw_uid, pw.pw_gid)
    _save_state(folder, granted=grant_traverse(venv, args.user))
    check_venv(venv, args.user)
    pid_file = ensure_sshd(folder, args.user, key)
    _save_state(folder, sshd_pid_file=str(pid_file) if pid_file else None)
    ports = pick_ports(args.ports)
    cfg = render(user=args.user, key=key, venv=venv, shared=shared, ports=ports, name=args.name)
    config = folder / "localhost.yaml"
    config.write_text(f"# written by cluster/localhost.py from {TEMPLATE.relative_to(ROOT)}: the head on "
                      "127.0.0.1, no workers\n" + yaml.safe_dump(cfg, sort_keys=False, width=1000))
    state = json.loads((folder / STATE_FILE).read_text())
    made = Localhost(config=str(config), user=args.user, home=pw.pw_dir, key=str(key), shared=str(shared),
                     venv=str(venv), storage=str(shared / "rdarts_results"),
                     dashboard=f"http://127.0.0.1:{ports['dashboard']}", mlflow=f"http://127.0.0.1:{ports['mlflow']}",
                     ports=ports, sshd_pid_file=state["sshd_pid_file"], granted=state["granted"])
    _save_state(folder, **asdict(made))
    return made


def teardown(args: argparse.Namespace) -> None:
    folder = Path(args.dir).resolve()
    state_file = folder / STATE_FILE
    if not state_file.exists():
        raise SetupError(f"no {state_file}: nothing was set up with --dir {folder}")
    state = json.loads(state_file.read_text())
    user = state["user"]
    pid_file = state.get("sshd_pid_file")
    if pid_file and Path(pid_file).exists():
        pid = int(Path(pid_file).read_text().split()[0])
        try:
            os.kill(pid, 15)
            print(f"localhost: stopped sshd (pid {pid})")
        except ProcessLookupError:
            pass
    # Removing the user: its ACL entries everywhere setup may have put one, also from an earlier setup.
    folders = _traverse_targets(Path(state["venv"])) if args.remove_user else state.get("granted", [])
    for d in folders:
        if _run(["setfacl", "-x", f"u:{user}", d], check=False).returncode == 0 and d in state.get("granted", []):
            print(f"localhost: removed the ACL entry of {user} from {d}")
    if args.remove_user:
        _run(["pkill", "-u", user], check=False)
        time.sleep(1)
        _run(["userdel", "--remove", user], check=False)
        shutil.rmtree(f"/tmp/torchinductor_{user}", ignore_errors=True)  # torch's per-user cache
        print(f"localhost: removed user {user}")


def _next_steps(made: Localhost) -> str:
    cfg = shlex.quote(os.path.relpath(made.config))
    return "\n".join([
        f"localhost: ready; cluster file {made.config}",
        "next (from the repository root):",
        f"  .venv/bin/ray up -y {cfg}",
        f"  .venv/bin/rdarts sweep submit sweeps/quickstart.yaml --address {made.dashboard} --storage {made.storage}",
        f"  .venv/bin/rdarts sweep logs <job id> --address {made.dashboard} --follow",
        f"  MLflow UI: {made.mlflow}   Ray dashboard: {made.dashboard}   results: {made.storage}",
        f"  .venv/bin/ray down -y {cfg}",
        "  .venv/bin/python cluster/localhost.py teardown",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster/localhost.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup", help="prepare this machine and write the cluster file")
    p.add_argument("--dir", default=str(DEFAULT_DIR), help="where the key, sshd files and cluster file go")
    p.add_argument("--user", default="rdarts", help="the ssh user the head runs as")
    p.add_argument("--name", default="rdarts-localhost", help="cluster_name (ray up keeps one state per name)")
    p.add_argument("--shared", default="/srv/rdarts", help="the shared folder (Tune storage, MLflow's store)")
    p.add_argument("--venv", help="the virtual environment with rdarts (default: the one running this)")
    p.add_argument("--ports", choices=("default", "free"), default="default",
                   help="default: Ray 6379, dashboard 8265, MLflow 5000; free: all picked free")
    p = sub.add_parser("teardown", help="stop the sshd that setup started (after ray down)")
    p.add_argument("--dir", default=str(DEFAULT_DIR))
    p.add_argument("--remove-user", action="store_true", help="also delete the ssh user and its home")
    args = parser.parse_args(argv)
    try:
        if args.command == "setup":
            print(_next_steps(setup(args)))
        else:
            teardown(args)
    except SetupError as e:
        print(f"cluster/localhost.py: error: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print(f"cluster/localhost.py: error: {shlex.join(e.cmd)} failed: {(e.stderr or '').strip()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
