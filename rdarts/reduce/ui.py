"""``rdarts ui``: the MLflow UI on 127.0.0.1 for a sweep's tracking store, with the address of its runs table."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from rdarts.errors import UserError
from rdarts.experiment import load_spec
from rdarts.tracking import experiment_id_of, is_http, resolve_uri, runs_page


def free_port(preferred: int) -> int:
    """``preferred`` if nothing listens there on 127.0.0.1, else the next free port after it."""
    for port in range(preferred, preferred + 100):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise UserError(f"no free port on 127.0.0.1 from {preferred} to {preferred + 99}; pass --port")


def serve_ui(path: str | None, *, tracking_uri: str | None = None, port: int = 5000) -> int:
    """Start ``mlflow ui`` for the store of the sweep at ``path`` (or ``tracking_uri``) until Ctrl-C."""
    if path is None and tracking_uri is None:
        raise UserError("give the sweep folder (rdarts ui ~/rdarts_results/quickstart) or --tracking-uri URI")
    name = None
    if path is not None:
        folder = Path(path).expanduser().resolve()
        spec = load_spec(str(folder))
        uri, _ = resolve_uri(spec.tracking.uri, folder, tracking_uri)
        name = spec.tracking.experiment or spec.name
    else:
        uri = str(tracking_uri)
    if is_http(uri):  # a server already serves it
        print(runs_page(uri, experiment_id_of(uri, name) if name else None))
        return 0
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise UserError(f"no MLflow store at {uri} yet: it is written when the sweep starts (or by 'rdarts reduce')")
    port = free_port(port)
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow) if mlflow.is_file() else "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):  # noqa: S310 - our own loopback server
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise UserError(f"the MLflow UI did not start on {base} within 90 s") from None
                time.sleep(0.5)
        if proc.poll() is not None:
            raise UserError(f"the MLflow UI exited at once (code {proc.returncode}): {' '.join(cmd)}")
        print(f"MLflow UI for {uri}: {runs_page(base, experiment_id_of(uri, name) if name else None)}", flush=True)
        print("Ctrl-C stops it.", flush=True)
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    return 0
