"""The prepared GPU benchmark: one run on a lent GPU (one NVIDIA H200, 15 minutes in all) answers what is fast there.

Imports only torch and the rdarts engine (that machine has no Ray and no MLflow). On the GPU machine:

    python benchmarks/bench_gpu.py --out $OUT/bench_gpu.json              # full run, under 10 minutes
    python benchmarks/bench_gpu.py --device cpu --quick --out bench.json  # the same table at toy sizes (~1 min)

It prints progress lines, then one table (section | item | value | unit | × first row | note), and writes the same
rows as JSON to ``--out``. Ratios are side by side in one run, not pass/fail. Sections, each within its share of
``--budget-s`` (default 480 s):

1. ``steps``: ms per search step of the reference configuration (S1, 8 cells x 16 channels, batch 64, 32 px,
   random CIFAR-shaped images), second-order α step + weight step exactly as ``Search.train_epoch`` runs them, in
   strict fp32 (TF32 off), torch's defaults, TF32, bf16 autocast (``amp``), channels_last, bf16 + channels_last.
2. ``eigen``: λ_max (Lanczos on Hessian-vector products, ``Search.measure_eigenvalue``): seconds and HVPs, cold
   and warm-started from the previous Ritz vector.
3. ``memory``: peak memory per (space, cells, channels, batch) in a fresh process: CUDA ``max_memory_allocated`` of
   a step and of λ_max; on CPU the peak resident-set growth. Beside it the ``rdarts.gpu_packing`` estimate and
   measured / estimate: refit ``gpu_packing.EIGEN_FACTOR`` by that ratio's median.
4. ``agreement``: the second-order α gradient in bf16 autocast against fp32 on the same state (relative error,
   cosine). On CPU with torch's CPU autocast (the search's ``amp`` is CUDA-only).
5. ``packing``: k = 1, 2, 4, 8 searches as separate processes on the device, started together, each N steps
   (each capped at ``gpu_packing.memory_fraction_cap(1/k)`` on CUDA): summed steps/s and the ratio to k = 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the measurements beside this script
from bench_gpu_measure import (  # noqa: E402
    PRECISIONS,
    Size,
    bf16_agreement,
    eigen_times,
    estimate,
    log,
    memory_worker,
    pack_worker,
    step_time,
    steps_for,
)

SCRIPT = Path(__file__).resolve()
SECTIONS = ("steps", "eigen", "memory", "agreement", "packing")
SHARES = {"steps": 0.30, "eigen": 0.10, "memory": 0.20, "agreement": 0.05, "packing": 0.35}
FULL = {"size": Size("s1", 8, 16, 64, 32), "ks": (1, 2, 4, 8),
        "memory": [Size("s1", 5, 16, 64, 32), Size("s1", 8, 16, 64, 32), Size("s1", 8, 16, 128, 32),
                   Size("s1", 8, 32, 64, 32), Size("s3", 8, 16, 64, 32), Size("darts", 8, 16, 32, 32)]}
QUICK = {"size": Size("s1", 3, 4, 8, 8), "ks": (1, 2),
         "memory": [Size("s1", 3, 4, 8, 8), Size("s1", 3, 8, 8, 8), Size("s1", 5, 8, 16, 8)]}


# ------------------------------------------------------------------------------------------------- pure helpers
def section_budgets(total_s: float, shares: dict[str, float] = SHARES) -> dict[str, float]:
    """Seconds per section: ``total_s`` split by ``shares`` (normalised)."""
    norm = sum(shares.values())
    return {k: total_s * v / norm for k, v in shares.items()}


def packing_rows(results: dict[int, list[dict[str, float]]]) -> list[dict[str, float]]:
    """Per k: summed steps/s of its workers and the ratio to k = 1 (the smallest k measured)."""
    rows = [{"k": k, "steps_per_s": sum(r["steps"] / r["seconds"] for r in rs),
             "step_ms": 1000 * statistics.median(r["seconds"] / r["steps"] for r in rs)}
            for k, rs in sorted(results.items())]
    for row in rows:
        row["ratio"] = row["steps_per_s"] / rows[0]["steps_per_s"]
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    """The one table: a markdown row per measurement."""
    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cols = ("section", "item", "value", "unit", "ratio", "note")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- driver
def _worker_cmd(args: argparse.Namespace, mode: str, size: Size, **extra: object) -> list[str]:
    cmd = [sys.executable, str(SCRIPT), "--worker", mode, "--device", args.device, "--size",
           ",".join(str(v) for v in asdict(size).values())]
    return cmd + [a for k, v in extra.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def _worker_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "BENCH_GPU_THREADS": str(threads)}


def _last_json(text: str) -> dict[str, float]:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def run_memory(args: argparse.Namespace, sizes: list[Size], budget_s: float) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    deadline = time.monotonic() + budget_s
    for size in sizes:
        left = deadline - time.monotonic()
        est = estimate(size)
        row: dict[str, object] = {"size": size.label(), "estimate_bytes": est}
        if left < 5:
            rows.append({**row, "skipped": "budget"})
            continue
        try:
            res = subprocess.run(_worker_cmd(args, "memory", size), capture_output=True, text=True, timeout=left,
                                 env=_worker_env(args.threads))
            got = _last_json(res.stdout) if res.returncode == 0 else {}
            row.update(got or {"skipped": f"worker failed: {res.stderr.strip().splitlines()[-1:]}"})
        except subprocess.TimeoutExpired:
            row["skipped"] = "budget"
        peak = max(float(row.get("step_bytes", math.nan)), float(row.get("eigen_bytes", math.nan)))
        measured = peak if math.isfinite(peak) else float(row.get("rss_peak_delta_bytes", math.nan))
        row.update(measured_bytes=measured, measured_over_estimate=measured / est)
        rows.append(row)
        log(f"memory {size.label()}: {measured / 1e6:.0f} MB measured, {est / 1e6:.0f} MB estimated")
    return rows


def run_packing(args: argparse.Namespace, size: Size, ks: tuple[int, ...], step_s: float,
                budget_s: float) -> list[dict[str, float]]:
    deadline = time.monotonic() + budget_s
    startup = 25.0 if args.device == "cuda" else 5.0
    steps = steps_for((budget_s - startup * len(ks)) / 2, step_s * sum(ks), lo=3, hi=100)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    results: dict[int, list[dict[str, float]]] = {}
    for k in ks:
        if deadline - time.monotonic() < startup:
            log(f"packing k={k}: skipped (budget)")
            continue
        threads = max(1, cores // k) if args.device == "cpu" else max(1, min(2, cores // k))
        cmd = _worker_cmd(args, "pack", size, steps=steps, fraction=1 / k)
        procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env=_worker_env(threads)) for _ in range(k)]
        # The budget holds even if a worker hangs: at the deadline every worker is killed (its result is lost).
        watchdog = threading.Timer(max(1.0, deadline - time.monotonic()), lambda ps=procs: [q.kill() for q in ps])
        watchdog.start()
        try:
            for p in procs:  # all warmed up before any is timed
                while (line := p.stdout.readline()) and not line.startswith("READY"):
                    pass
            for p in procs:
                p.stdin.write("GO\n")
                p.stdin.flush()
            outs = [p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0] for p in procs]
            results[k] = [_last_json(o) for o in outs]
        except (subprocess.TimeoutExpired, IndexError, json.JSONDecodeError) as e:
            log(f"packing k={k}: no result ({type(e).__name__})")
        finally:
            watchdog.cancel()
            for p in procs:
                if p.poll() is None:
                    p.kill()
        log(f"packing k={k}: {steps} steps each, {threads} thread(s) each")
    rows = packing_rows(results) if results else []
    for row in rows:
        row["steps"] = steps
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    p.add_argument("--quick", action="store_true", help="toy sizes, k = 1, 2 (CPU smoke run)")
    p.add_argument("--budget-s", type=float, default=None, help="seconds for all sections (480; quick: 120)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_GPU_THREADS", "2")))
    p.add_argument("--out", default="bench_gpu.json")
    p.add_argument("--worker", choices=("memory", "pack"), help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=10, help=argparse.SUPPRESS)
    p.add_argument("--fraction", type=float, default=1.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        f = args.size.split(",")
        size = Size(f[0], *map(int, f[1:]))
        out = memory_worker(size, args.device) if args.worker == "memory" else pack_worker(
            size, args.device, args.steps, args.fraction)
        print(json.dumps(out), flush=True)
        return
    run(args)


def run(args: argparse.Namespace) -> None:
    t_start = time.monotonic()
    plan = QUICK if args.quick else FULL
    size: Size = plan["size"]  # type: ignore[assignment]
    budgets = section_budgets(args.budget_s or (120.0 if args.quick else 480.0))
    dev_name = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu"
    log(f"{dev_name}, torch {torch.__version__}, reference {size.label()}, budgets {budgets}")
    table: list[dict[str, object]] = []
    sections: dict[str, object] = {}

    steps: list[dict[str, object]] = []
    for name in PRECISIONS:
        t, n = step_time(size, args.device, name, budgets["steps"] / len(PRECISIONS))
        note = "" if args.device == "cuda" or name in ("fp32", "default", "channels_last") else "no-op on CPU"
        steps.append({"precision": name, "ms_per_step": 1000 * t, "steps": n, "note": note})
        log(f"steps {name}: {1000 * t:.1f} ms/step over {n} steps")
    sections["steps"] = steps
    table += [{"section": "steps", "item": r["precision"], "value": r["ms_per_step"], "unit": "ms/step",
               "ratio": r["ms_per_step"] / steps[0]["ms_per_step"], "note": f"{r['steps']} steps {r['note']}".strip()}
              for r in steps]

    eig = eigen_times(size, args.device)
    sections["eigen"] = eig
    log(f"eigen: {eig}")
    table += [{"section": "eigen", "item": f"lambda_max {r['kind']}", "value": r["seconds"], "unit": "s",
               "ratio": r["seconds"] / eig[0]["seconds"], "note": f"{r['hvps']} HVPs, {r['ms_per_hvp']:.1f} ms/HVP"}
              for r in eig]

    mem = run_memory(args, plan["memory"], budgets["memory"])  # type: ignore[arg-type]
    sections["memory"] = mem
    what = "CUDA max_memory_allocated" if args.device == "cuda" else "CPU peak RSS growth"
    table += [{"section": "memory", "item": r["size"], "value": r.get("measured_bytes", math.nan) / 1e6,
               "unit": "MB", "ratio": r.get("measured_over_estimate", math.nan),
               "note": r.get("skipped", f"{what}; ratio: measured / gpu_packing estimate "
                                        f"({r['estimate_bytes'] / 1e6:.0f} MB)")} for r in mem]

    agree = bf16_agreement(size, args.device)
    sections["agreement"] = agree
    table += [{"section": "agreement", "item": "alpha grad bf16 vs fp32", "value": agree["rel_error"],
               "unit": "rel. error", "ratio": agree["cosine"], "note": f"ratio column: cosine; {agree['how']}"}]

    pack = run_packing(args, size, plan["ks"], steps[1]["ms_per_step"] / 1000, budgets["packing"])  # type: ignore
    sections["packing"] = pack
    table += [{"section": "packing", "item": f"k={r['k']}", "value": r["steps_per_s"], "unit": "steps/s (sum)",
               "ratio": r["ratio"], "note": f"{r['steps']} steps each, {r['step_ms']:.1f} ms/step median"}
              for r in pack]

    meta = {"device": args.device, "device_name": dev_name, "torch": torch.__version__, "quick": args.quick,
            "reference": asdict(size), "budgets_s": budgets, "wall_s": time.monotonic() - t_start}
    Path(args.out).write_text(json.dumps({"meta": meta, "sections": sections, "table": table}, indent=2))
    print(f"# {dev_name}, torch {torch.__version__}, reference {size.label()}, second order; "
          f"{meta['wall_s']:.0f} s; JSON: {args.out}")
    print(format_table(table), flush=True)


if __name__ == "__main__":
    main()
