"""``resources.gpu: auto``: the memory model, the fraction it picks, the sweep field, and what Ray is asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sweep_fixtures import ROOT, tiny_spec

from rdarts import gpu_packing as gp
from rdarts.errors import UserError
from rdarts.spaces import get_space
from rdarts.sweep import gpu
from rdarts.sweep.problems import SweepError

GB = 1e9


def test_fraction_is_one_over_the_most_searches_that_fit() -> None:
    # 80 GB less 10 % = 72 GB; 72 / 10 = 7.2 -> 7 searches -> 1/7, rounded down to Ray's 4 decimals.
    assert gp.searches_per_gpu(10 * GB, 80 * GB, headroom=0.1) == 7
    assert gp.gpu_fraction(10 * GB, 80 * GB, headroom=0.1) == pytest.approx(0.1428)
    assert 7 * gp.gpu_fraction(10 * GB, 80 * GB, headroom=0.1) <= 1
    # 72 / 24 = 3 exactly -> 1/3 -> 0.3333; 72 / 36 = 2 -> 0.5
    assert gp.gpu_fraction(24 * GB, 80 * GB, headroom=0.1) == pytest.approx(0.3333)
    assert gp.gpu_fraction(36 * GB, 80 * GB, headroom=0.1) == 0.5
    # small searches: at most 8 per GPU; 0 headroom: 40 / 10 = 4
    assert gp.gpu_fraction(1 * GB, 80 * GB) == 0.125
    assert gp.gpu_fraction(10 * GB, 40 * GB, headroom=0.0) == 0.25
    # 50 GB on 80 GB: one fits (72 >= 50) -> a whole GPU; 75 GB: none fits -> still 1.0, and searches_per_gpu says 0
    assert gp.gpu_fraction(50 * GB, 80 * GB) == 1.0
    assert gp.searches_per_gpu(75 * GB, 80 * GB) == 0 and gp.gpu_fraction(75 * GB, 80 * GB) == 1.0


def test_fraction_rejects_bad_figures() -> None:
    with pytest.raises(ValueError, match="positive"):
        gp.gpu_fraction(0, 80 * GB)
    with pytest.raises(ValueError, match="headroom"):
        gp.gpu_fraction(1 * GB, 80 * GB, headroom=1.0)
    with pytest.raises(ValueError, match="fraction"):
        gp.memory_fraction_cap(0.0)


def test_memory_cap_leaves_the_headroom_free() -> None:
    assert gp.memory_fraction_cap(0.25, headroom=0.1) == pytest.approx(0.225)
    k = gp.searches_per_gpu(10 * GB, 80 * GB)
    # k capped trials together never exceed (1 - headroom) of the GPU, and each still holds its estimated peak
    cap = gp.memory_fraction_cap(gp.gpu_fraction(10 * GB, 80 * GB))
    assert k * cap <= 1 - gp.HEADROOM and cap * 80 * GB >= 10 * GB * 0.999


def test_peak_memory_scales_with_the_activations() -> None:
    s1 = get_space("s1")
    base = dict(layers=8, channels=16, batch_size=64, image_size=32)
    peak = gp.peak_training_bytes(s1.normal, s1.reduce, **base)
    assert gp.peak_training_bytes(s1.normal, s1.reduce, **{**base, "batch_size": 128}) == pytest.approx(2 * peak)
    assert gp.peak_training_bytes(s1.normal, s1.reduce, **{**base, "channels": 32}) == pytest.approx(2 * peak)
    assert gp.peak_training_bytes(s1.normal, s1.reduce, **{**base, "image_size": 16}) == pytest.approx(peak / 4)
    # by hand: 4 bytes * 64 * 16 * 32^2 * 8 cells * cell_cost * EIGEN_FACTOR (λ_max dominates the step)
    hand = 4 * 64 * 16 * 32 ** 2 * 8 * gp.cell_cost(s1.normal, s1.reduce, 8) * gp.EIGEN_FACTOR
    assert peak == pytest.approx(hand)
    assert 4 * GB < peak < 10 * GB  # the reference size: a few GB
    darts = get_space("darts")
    assert gp.peak_training_bytes(darts.normal, darts.reduce, **base) > 3 * peak  # 8 ops per edge against 2
    step_only = gp.peak_training_bytes(s1.normal, s1.reduce, **base, eigenvalues=False, order="first")
    assert step_only < peak
    bf16 = gp.peak_training_bytes(s1.normal, s1.reduce, **base, eigenvalues=False, dtype="bf16")
    assert bf16 == pytest.approx(gp.peak_training_bytes(s1.normal, s1.reduce, **base, eigenvalues=False) / 2)
    with pytest.raises(ValueError, match="order"):
        gp.peak_training_bytes(s1.normal, s1.reduce, **base, order="third")


def test_gpu_packing_imports_neither_torch_nor_ray_nor_mlflow() -> None:
    code = ("import sys, rdarts.gpu_packing, rdarts.sweep.gpu\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'mlflow'}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


@pytest.mark.parametrize("value, expected", [("auto", "auto"), (0.5, 0.5), (2, 2.0), (0, 0.0), (1, 1.0)])
def test_the_field_takes_auto_or_a_number(value: object, expected: object) -> None:
    assert tiny_spec("g", resources={"gpu": value}).resources.gpu == expected


@pytest.mark.parametrize("value", ["half", "Auto", 1.5, -1, True, None, [0.5], float("inf")])
def test_the_field_names_itself_on_bad_values(value: object) -> None:
    with pytest.raises(SweepError, match=r"resources\.gpu: must be 'auto', a fraction up to 1 or a whole number|"
                                         r"resources\.gpu: must be 'auto' or a number greater than or equal to 0"):
        tiny_spec("g", resources={"gpu": value})


def test_auto_plan_fits_the_largest_trial() -> None:
    spec = tiny_spec("g", grid={"channels": [4, 8]}, resources={"gpu": "auto", "gpu_memory_gb": 80})
    p = gpu.search_plan(spec)
    peaks = [gpu.search_peak(t["search"])[0] for t in spec.trials()]
    assert p.peak_bytes == max(peaks) and p.per_gpu == 8 and p.fraction == 0.125
    assert "8 per GPU" in p.describe() and "resources.gpu_memory_gb" in p.describe()
    # a GPU so small that the largest trial needs most of it
    tiny_gb = max(peaks) / GB / 0.95
    small = tiny_spec("g", grid={"channels": [4, 8]}, resources={"gpu": "auto", "gpu_memory_gb": tiny_gb})
    assert gpu.search_plan(small).per_gpu == 0 and gpu.search_gpu(small) == 1.0
    with pytest.raises(UserError, match=r"^resources\.gpu: auto: the largest trial .* set resources\.gpu: 1"):
        gpu.check(gpu.search_plan(small))
    assert gpu.search_gpu(tiny_spec("g", resources={"gpu": 0.5})) == 0.5


def test_preflight_checks_auto() -> None:
    from rdarts.sweep.preflight import check_resources

    auto = tiny_spec("g", resources={"gpu": "auto", "gpu_memory_gb": 80})
    check_resources(auto, {"CPU": 2.0, "GPU": 1.0})
    with pytest.raises(UserError, match=r"^resources\.gpu: each trial asks for 0\.125 GPU\(s\) \(auto\), but this "):
        check_resources(auto, {"CPU": 2.0, "GPU": 0.0})
    with pytest.raises(UserError, match=r"^resources\.gpu_memory_gb: 80 GB .* has 24\.0 GB; set resources\.gpu_memo"):
        check_resources(auto, {"CPU": 2.0, "GPU": 1.0, "GPU_MEMORY_GB": 24.0})


def test_runner_asks_ray_for_the_computed_fraction() -> None:
    from rdarts.sweep.runner import _with_resources
    from rdarts.sweep.trainable import search_trainable

    spec = tiny_spec("g", resources={"cpu": 2, "gpu": "auto", "gpu_memory_gb": 80})
    assert _with_resources(search_trainable, spec)._resources.required_resources == {"CPU": 2.0, "GPU": 0.125}


def test_retrain_plan_from_the_genotypes() -> None:
    from rdarts.config import RetrainConfig
    from rdarts.spaces import Genotype

    cell = tuple(("sep_conv_3x3", i % 2) for i in range(8))
    genotype = Genotype(cell, (2, 3, 4, 5), cell, (2, 3, 4, 5))

    spec = tiny_spec("g", resources={"gpu": "auto", "gpu_memory_gb": 16})
    cfg = RetrainConfig(dataset="cifar10").to_dict()  # the protocol's 20 cells x 36 channels, batch 96
    p = gpu.retrain_plan(spec, [(genotype.to_json(), cfg)])
    assert "retrain, 20 cells x 36 channels, batch 96, 32 px" in p.largest and 0 < p.fraction <= 1


def test_trial_caps_nothing_without_cuda() -> None:
    pytest.importorskip("ray")
    from rdarts.tune_trial import cap_gpu_memory

    assert cap_gpu_memory(0.0) is None and cap_gpu_memory(1.0) is None
    import torch

    if not torch.cuda.is_available():
        assert cap_gpu_memory(0.25) is None
