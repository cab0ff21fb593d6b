"""The robust-DARTS catalogue on its defining properties, each against an oracle written here.

SDARTS: the perturbation stays in the ε ball, ε follows the released schedule, PGD raises the loss it attacks.
DARTS-: β runs 1 -> 0, and at β = 0 the supernet is plain DARTS. β-DARTS: the term's value and gradient against a
hand computation, and the α step carries it. PC-DARTS: exactly C/K channels through the ops, the shuffle is a
permutation, the genotype reads softmax(α)·edge weights. Every method on every space on real digits data, with
λ_max, resumed to the identical result. Sizes: 3 cells, 8 channels, 64-128 digits images at 8x8.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sweep_fixtures import progress, tiny_spec

from rdarts.architect import Architect
from rdarts.config import METHODS, ConfigError, SearchConfig
from rdarts.data import Augment
from rdarts.methods import DARTS, ROBUST_LABELS, method_labels
from rdarts.reduce.methods_table import methods_table
from rdarts.robust import beta_darts, darts_minus, pc_darts, sdarts
from rdarts.search import Search
from rdarts.spaces import SPACE_NAMES, get_space
from rdarts.supernet import Supernet, derive_genotype

ROBUST = [m for m in METHODS if m != "darts"]
SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def config(**overrides: Any) -> SearchConfig:
    base: dict[str, Any] = dict(space="s3", dataset="digits", n_train=64, image_size=8, layers=3, channels=8,
                                batch_size=32, epochs=2, order="first", device="cpu", hessian_max_iter=6, seed=1)
    return SearchConfig(**{**base, **overrides})


def images(digits: Any, start: int, stop: int) -> torch.Tensor:
    """Normalised images, as the search feeds them."""
    return Augment(digits, augment=False)(digits.images[start:stop], torch.Generator())


def batch(digits: Any, n: int = 32, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return images(digits, start, start + n), digits.labels[start:start + n]


# ----------------------------------------------------------------------------------------------------- SDARTS
def test_epsilon_ramps_as_the_released_loop() -> None:
    """0.03 + (0.3 - 0.03) * epoch / epochs (sota/cnn/train_search.py)."""
    assert sdarts.epsilon(0, 50) == pytest.approx(0.03)
    assert sdarts.epsilon(25, 50) == pytest.approx(0.165)
    assert sdarts.epsilon(49, 50) == pytest.approx(0.3 - 0.27 / 50)
    eps = [sdarts.epsilon(e, 10) for e in range(10)]
    assert all(b - a == pytest.approx(0.027) for a, b in zip(eps, eps[1:], strict=False))


def test_simplex_is_the_codes_clip() -> None:
    w = torch.tensor([[-0.2, 0.5, 1.3], [-0.1, -0.3, -0.5], [0.2, 0.2, 0.6]])
    out = sdarts.simplex(w)
    assert torch.allclose(out[0], torch.tensor([0.0, 0.5, 1.0]) / 1.5)
    assert torch.equal(out[1], torch.tensor([1.0, 0.0, 0.0]))  # all clamped to 0: one-hot on the argmax
    assert torch.allclose(out[2], w[2])


def test_random_perturbation_stays_in_the_ball(generator: torch.Generator) -> None:
    w0 = (F.softmax(torch.randn(14, 3), -1), F.softmax(torch.randn(14, 3), -1))
    eps = 0.2
    w, deltas = sdarts.random_perturbation(w0, eps, generator)
    for a, d, p in zip(w0, deltas, w, strict=True):
        assert d.abs().max() <= eps and d.abs().max() > 0.8 * eps  # in the ball, and spread over it
        assert torch.equal(p, sdarts.simplex(a + d))
        assert (p >= 0).all() and torch.allclose(p.sum(-1), torch.ones(len(p)))


def test_pgd_raises_the_training_loss_it_attacks_and_stays_in_the_ball(digits: Any,
                                                                       generator: torch.Generator) -> None:
    space = get_space("s3")
    model = Supernet(space, 8, digits.num_classes, 3, digits.in_channels)
    x, y = batch(digits, 64)
    model.train()
    for _ in range(3):  # BN running statistics of real data: the attack runs in eval mode, as the code's
        model(x)
    w0 = tuple(w.detach() for w in model.mixture_weights())
    eps = 0.3

    def loss(w: tuple[torch.Tensor, torch.Tensor]) -> float:
        model.eval()
        with torch.no_grad():
            out = float(F.cross_entropy(model(x, weights=w), y))
        model.train()
        return out

    w, deltas = sdarts.pgd_perturbation(model, x, y, w0, eps, generator)  # type: ignore[arg-type]
    assert model.training  # the attack gives the model back in train mode
    for a, d, p in zip(w0, deltas, w, strict=True):
        assert d.abs().max() <= eps + 1e-6
        assert torch.allclose(p, sdarts.simplex(a + d))
    attacked, clean = loss(w), loss(w0)  # type: ignore[arg-type]
    randoms = [loss(sdarts.random_perturbation(w0, eps, generator)[0]) for _ in range(6)]  # type: ignore[arg-type]
    assert attacked > clean and attacked > sum(randoms) / len(randoms)


@pytest.mark.parametrize("method", ["sdarts-rs", "sdarts-adv"])
def test_the_search_perturbs_each_weight_step_with_that_epochs_epsilon(method: str, digits: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[float, float]] = []
    name = "pgd_perturbation" if method == "sdarts-adv" else "random_perturbation"
    original = getattr(sdarts, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        w, deltas = original(*args, **kwargs)
        eps = args[4] if method == "sdarts-adv" else args[1]
        seen.append((eps, max(float(d.abs().max()) for d in deltas)))
        return w, deltas

    monkeypatch.setattr(sdarts, name, spy)
    Search(config(method=method, epochs=3, ev_every=3), train_data=digits).run()
    assert len(seen) == 3  # one weight step per epoch (32 training images, batch 32)
    assert [e for e, _ in seen] == pytest.approx([sdarts.epsilon(e, 3) for e in range(3)])
    assert all(d <= e + 1e-6 for e, d in seen)


# ----------------------------------------------------------------------------------------------------- DARTS-
def test_darts_minus_beta_is_one_at_the_start_and_zero_at_the_end() -> None:
    assert darts_minus.beta(0, 50) == 1.0 and darts_minus.beta(50, 50) == 0.0
    assert darts_minus.beta(25, 50) == pytest.approx(0.5) and darts_minus.beta(49, 50) == pytest.approx(0.02)


def test_darts_minus_search_sets_beta_per_epoch(digits: Any) -> None:
    search = Search(config(method="darts-minus", epochs=4, ev_every=4), train_data=digits)
    seen: list[float] = []
    train_epoch = search.train_epoch

    def spy(epoch: int) -> tuple[float, float]:
        out = train_epoch(epoch)
        seen.append(search.model.aux_beta)  # type: ignore[attr-defined]
        return out

    search.train_epoch = spy  # type: ignore[method-assign]
    search.run()
    assert seen == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_darts_minus_at_beta_zero_is_plain_darts(digits: Any) -> None:
    for name in ("s1", "darts"):
        space = get_space(name)
        minus = darts_minus.DartsMinusSupernet(space, 8, digits.num_classes, 3, digits.in_channels)
        plain = Supernet(space, 8, digits.num_classes, 3, digits.in_channels)
        own = plain.state_dict()
        x = images(digits, 0, 16)
        for train in (True, False):  # train mode: BN on batch statistics; eval: on the shared running ones
            plain.load_state_dict({k: v for k, v in minus.state_dict().items() if k in own})
            minus.train(train)
            plain.train(train)
            minus.aux_beta = 0.0
            assert torch.equal(minus(x), plain(x))
        minus.aux_beta = 1.0
        assert not torch.allclose(minus(x), plain(x))


def test_the_auxiliary_skip_adds_beta_times_the_input_on_a_stride_one_edge() -> None:
    op = darts_minus.AuxSkipMixedOp(4, 1, ("skip_connect", "sep_conv_3x3"))
    plain = op._ops
    x = torch.randn(2, 4, 6, 6)
    w = torch.tensor([0.3, 0.7, 0.4])
    expected = 0.3 * plain[0](x) + 0.7 * plain[1](x) + 0.4 * x
    assert torch.allclose(op(x, w), expected, atol=1e-6)


# ----------------------------------------------------------------------------------------------------- β-DARTS
def test_beta_decay_value_and_gradient_on_hand_made_alpha() -> None:
    rows_n = [[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]]
    rows_r = [[1.0, 1.0, 1.0], [-2.0, 0.0, 2.0]]
    a_n = torch.tensor(rows_n, dtype=torch.float64, requires_grad=True)
    a_r = torch.tensor(rows_r, dtype=torch.float64, requires_grad=True)
    loss = beta_darts.beta_decay_loss([a_n, a_r])
    rows = rows_n + rows_r
    assert float(loss) == pytest.approx(sum(math.log(sum(math.exp(v) for v in r)) for r in rows) / 4)
    g_n, g_r = torch.autograd.grad(loss, [a_n, a_r])
    # d/dα_ij of mean_i logsumexp(α_i) = softmax(α_i)_j / n_edges
    for g, r in ((g_n, rows_n), (g_r, rows_r)):
        for gi, ri in zip(g.tolist(), r, strict=True):
            z = sum(math.exp(v) for v in ri)
            assert gi == pytest.approx([math.exp(v) / z / 4 for v in ri])
    assert beta_darts.beta_decay_weight(0, 50) == 0.0 and beta_darts.beta_decay_weight(25, 50) == 25.0


@pytest.mark.parametrize("order", ["first", "second"])
def test_the_alpha_step_carries_the_beta_decay_gradient(order: str, digits: Any) -> None:
    """Two copies of one supernet, one α step each: with the term, the gradient is the plain one plus
    λ softmax(α)/n_edges (λ = 50 * 10/20 = 25 at epoch 10 of 20)."""
    space = get_space("s3")
    plain = Supernet(space, 8, digits.num_classes, 3, digits.in_channels)
    regularised = Supernet(space, 8, digits.num_classes, 3, digits.in_channels)
    regularised.load_state_dict(plain.state_dict())
    alphas0 = [a.detach().clone() for a in plain.alpha_parameters()]
    train, valid = batch(digits, 32), batch(digits, 32, 32)
    method = beta_darts.BetaDarts()
    method.begin_epoch(regularised, 10, 20)
    for model, extra in ((plain, None), (regularised, method.alpha_loss)):
        w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9)
        Architect(model, w_opt, order=order, extra_loss=extra).step(train, valid, 0.025, 3e-4)
    n_edges = sum(len(a) for a in alphas0)
    for a, r, a0 in zip(regularised.alpha_parameters(), plain.alpha_parameters(), alphas0, strict=True):
        assert torch.allclose(a.grad, r.grad + 25.0 * F.softmax(a0, -1) / n_edges, rtol=1e-5, atol=1e-7)
        assert not torch.allclose(a.grad, r.grad)


# ----------------------------------------------------------------------------------------------------- PC-DARTS
def test_channel_shuffle_is_a_permutation() -> None:
    C, K = 16, 4
    x = torch.arange(C, dtype=torch.float32).view(1, C, 1, 1)
    out = pc_darts.channel_shuffle(x, K).flatten().long().tolist()
    assert sorted(out) == list(range(C)) and out != list(range(C))
    assert out == [(c % K) * (C // K) + c // K for c in range(C)]  # ShuffleNet: group-major becomes group-minor


@pytest.mark.parametrize("stride", [1, 2])
def test_a_partial_edge_sends_exactly_c_over_k_channels_through_its_ops(stride: int) -> None:
    C, K = 16, pc_darts.K
    op = pc_darts.PartialMixedOp(C, stride, ("max_pool_3x3", "skip_connect", "sep_conv_3x3"))
    widths: list[int] = []
    for sub in op.mixed._ops:
        sub.register_forward_hook(lambda m, inp, out: widths.append(inp[0].shape[1]))
    x = torch.randn(2, C, 8, 8)
    w = torch.tensor([0.2, 0.3, 0.5, 0.7])
    out = op(x, w)
    assert widths == [C // K] * 3
    assert all(bn.num_features == C // K for bn in op.mixed.modules() if isinstance(bn, torch.nn.BatchNorm2d))
    # the other channels only pass by: changing them moves the output only where the shuffle puts them
    x2 = x.clone()
    x2[:, C // K:] += 1.0
    diff = (op(x2, w) - out).abs().sum((0, 2, 3))
    perm = [(c % K) * (C // K) + c // K for c in range(C)]  # output channel c holds input channel perm[c]
    moved = {c for c in range(C) if perm[c] >= C // K}
    assert {c for c in range(C) if diff[c] > 0} == moved
    if stride == 1:
        shuffled = pc_darts.channel_shuffle(x2 - x, K) * 0.7
        assert torch.allclose(op(x2, w) - out, shuffled, atol=1e-5)


def test_edge_normalisation_sums_to_one_per_node_and_the_genotype_reads_the_products() -> None:
    space = get_space("s3")
    net = pc_darts.PCSupernet(space, 8, 10, 3, 1)
    e = pc_darts.node_softmax(net.betas_normal.detach(), space.steps)
    starts = [0, 2, 5, 9, 14]
    for a, b in zip(starts, starts[1:], strict=False):
        assert float(e[a:b].sum()) == pytest.approx(1.0)
    with torch.no_grad():  # node 1 (edges 2, 3, 4): α prefers edges 2 and 3, β strongly edge 4
        net.alphas_normal.zero_()
        net.alphas_normal[2:4, 2] = 1.0
        net.alphas_normal[4, 2] = 0.8
        net.betas_normal.zero_()
        net.betas_normal[4] = 3.0
    alpha_only = derive_genotype(*net.alpha_softmax(), space)
    got = net.genotype()
    def node1(g: Any) -> list[int]:
        return sorted(j for _, j in g.normal[2:4])

    assert node1(alpha_only) == [0, 1] and node1(got) == [0, 2]  # the products: edge 4, then the first of a tie
    assert len(net.arch_parameters()) == 4 and len(net.alpha_parameters()) == 2
    ids = {id(p) for p in net.weight_parameters()}
    assert not ids & {id(p) for p in net.arch_parameters()}


def test_pc_darts_warms_up_without_alpha_steps(digits: Any) -> None:
    search = Search(config(method="pc-darts", epochs=10), train_data=digits)
    assert search.method.warmup == 3  # type: ignore[attr-defined]
    snapshots = []
    for epoch in range(4):
        search.train_epoch(epoch)
        snapshots.append([a.detach().clone() for a in search.model.arch_parameters()])
    before = [a for a in snapshots[0]]
    assert all(torch.equal(a, b) for s in snapshots[:3] for a, b in zip(s, before, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(snapshots[3], before, strict=True))


def test_pc_darts_lambda_max_is_over_alpha_only(digits: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import rdarts.search as search_module

    seen: list[int] = []
    original = search_module.dominant_alpha_eigenvalue

    def spy(model: Any, alphas: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(sum(a.numel() for a in alphas))
        return original(model, alphas, *args, **kwargs)

    monkeypatch.setattr(search_module, "dominant_alpha_eigenvalue", spy)
    search = Search(config(method="pc-darts", epochs=1), train_data=digits)
    search.run()
    assert seen == [sum(a.numel() for a in search.model.alpha_parameters())]


# ----------------------------------------------------------------------------------------------------- settings
def test_invalid_combinations_and_unknown_methods_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match=r"method 'pc-darts'.*channels.*8.*got channels=4"):
        config(method="pc-darts", channels=4)
    with pytest.raises(ConfigError, match="method must be one of darts, sdarts-rs, sdarts-adv, darts-minus"):
        config(method="sdarts")


def test_a_checkpoint_knows_its_method_and_old_darts_checkpoints_still_resume(digits: Any, tmp_path: Path) -> None:
    assert "method" not in config().result_affecting()  # as before the setting existed
    assert config(method="pc-darts").result_affecting()["method"] == "pc-darts"
    Search(config(method="pc-darts", epochs=1), tmp_path, train_data=digits).run()
    with pytest.raises(ConfigError, match=r"other settings \(method\)"):
        Search(config(epochs=1), tmp_path, train_data=digits).resume()


def test_cli_refuses_an_unknown_method_listing_the_valid_ones() -> None:
    res = subprocess.run([sys.executable, "-m", "rdarts", "search", "--method", "sdarts", "--dataset", "digits"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert all(m in res.stderr for m in METHODS)


def test_each_method_has_its_own_label_never_plain_darts() -> None:
    settings = [config(method=m).to_dict() for m in ROBUST]
    labels = method_labels(settings)
    assert [ls for ls in labels] == [[ROBUST_LABELS[m]] for m in ROBUST]
    assert ROBUST_LABELS == {"sdarts-rs": "SDARTS-RS", "sdarts-adv": "SDARTS-ADV", "darts-minus": "DARTS-",
                             "beta-darts": "β-DARTS", "pc-darts": "PC-DARTS"}
    # a weight-decay grid of a robust method is not R-DARTS(L2), and early stopping shows in its label
    grid = [config(method="sdarts-rs", weight_decay=w).to_dict() for w in (3e-4, 9e-4)]
    grid.append(config(method="darts-minus", early_stop="es").to_dict())
    assert method_labels(grid) == [["SDARTS-RS"], ["SDARTS-RS(wd=0.0009)"], ["DARTS-+ES"]]
    assert DARTS not in {label for ls in labels for label in ls}


@pytest.mark.parametrize("space", ["s1", "s2", "s3", "s4", "darts"])
def test_the_comparison_sweeps_have_every_method_three_seeds_and_one_table_row_each(space: str) -> None:
    from rdarts.sweep.spec import load_sweep

    trials = load_sweep(SWEEPS / f"robust_methods_{space}_cifar10.yaml").trials()
    by_method: dict[str, set[int]] = {}
    for t in trials:
        assert t["search"]["space"] == space and t["search"]["dataset"] == "cifar10"
        by_method.setdefault(t["search"]["method"], set()).add(t["search"]["seed"])
    assert by_method == {m: {1, 2, 3} for m in METHODS}
    table = pd.DataFrame([{
        "trial": f"t{t['index']}", "method": t["method"], "candidate": f"c{t['index']}", "valid_acc": 0.5,
        "final_eigenvalue": 0.1, "end_eigenvalue": 0.1,
        **{f"cfg.{k}": t["search"][k] for k in ("space", "dataset", "order", "seed", "weight_decay", "drop_path")},
    } for t in trials])
    rows = methods_table(table, {f"c{t['index']}": 3.0 for t in trials})
    assert sorted(rows["method"]) == sorted(["DARTS", "DARTS-ES", "R-DARTS(L2)", *ROBUST_LABELS.values()])
    assert (rows["n_searches"] >= 3).all()
    pc = rows[rows["method"] == "PC-DARTS"].iloc[0]
    assert pc["order"] == "first" and (pc["paper_mean"] == 2.57 if space == "darts" else math.isnan(pc["paper_mean"]))


def test_the_quickstart_comparison_runs_every_method_on_the_cpu() -> None:
    from rdarts.sweep.spec import load_sweep

    trials = load_sweep(SWEEPS / "robust_methods_quickstart.yaml").trials()
    assert {t["search"]["method"] for t in trials} == set(METHODS)
    assert {t["search"]["device"] for t in trials} == {"cpu"} and {t["search"]["order"] for t in trials} == {"first"}
    labels = {label for t in trials for label in t["method"].split(", ")}
    assert labels == {"DARTS", "DARTS-ES", "R-DARTS(L2)", *ROBUST_LABELS.values()}


# ----------------------------------------------------------------------------------------------------- end to end
def _run_and_resume(method: str, space: str, digits: Any, tmp_path: Path) -> None:
    cfg = config(method=method, space=space, epochs=2, ev_every=1)
    whole = Search(cfg, tmp_path / "whole", train_data=digits).run()
    assert all(math.isfinite(r["dominant_eigenvalue"]) and r["dominant_eigenvalue"] != 0 for r in whole.records)

    class Interrupt(Exception):
        pass

    def stop(record: dict[str, Any]) -> None:
        if record["epoch"] == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        Search(cfg, tmp_path / "cut", train_data=digits).run(on_epoch=stop)
    resumed = Search(cfg, tmp_path / "cut", train_data=digits)
    result = resumed.run()
    def comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:  # no timings; NaN equal to NaN
        return [{k: "nan" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()
                 if k not in ("epoch_time_s", "hessian_time_s")} for r in records]

    assert comparable(result.records) == comparable(whole.records)
    assert result.genotype == whole.genotype
    final = Search(cfg, tmp_path / "whole", train_data=digits)
    final.resume()
    for a, b in zip(final.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


FAST = ("sdarts-rs", "pc-darts")  # a random draw per step, and extra architecture parameters: the riskiest resumes


@pytest.mark.parametrize("method", FAST)
def test_methods_search_s3_with_lambda_max_and_resume_exactly(method: str, digits: Any, tmp_path: Path) -> None:
    _run_and_resume(method, "s3", digits, tmp_path)


@pytest.mark.slow  # 25 searches, twice each: about 2 minutes on one core
@pytest.mark.parametrize("space", SPACE_NAMES)
@pytest.mark.parametrize("method", ROBUST)
def test_every_method_searches_every_space_and_resumes_exactly(method: str, space: str, digits: Any,
                                                               tmp_path: Path) -> None:
    if space == "s3" and method in FAST:
        pytest.skip("in the fast tier")
    _run_and_resume(method, space, digits, tmp_path)


@pytest.mark.slow  # a local Ray, six tiny searches: about 2 minutes on 2 cores
def test_a_method_grid_runs_as_ray_tune_trials_with_lambda_max(ray_session: None, tmp_path: Path) -> None:
    import io

    from rdarts.sweep.runner import run_sweep

    spec = tiny_spec("methods", grid={"method": list(METHODS)}, search={"channels": 8, "epochs": 2},
                     max_concurrent=2)
    outcome = run_sweep(spec, storage=str(tmp_path / "results"), verbose=0, out=io.StringIO())
    assert outcome.num_errors == 0 and [r["status"] for r in outcome.rows] == ["finished"] * len(METHODS)
    assert [r["method"] for r in outcome.rows] == ["DARTS", *(ROBUST_LABELS[m] for m in ROBUST)]
    for r in outcome.rows:
        assert all(x["dominant_eigenvalue"] > 0 for x in progress(r["path"]))  # λ_max every epoch (ev_every 1)
