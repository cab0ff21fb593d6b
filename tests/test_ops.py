"""Candidate ops: shapes for every registered op, and the semantics of `none`, `noise` and drop path."""

from __future__ import annotations

import pytest
import torch

from rdarts.ops import OPS, drop_path, make_op
from rdarts.spaces import KNOWN_OPS


def test_every_op_a_space_may_name_has_a_factory() -> None:
    assert set(OPS) == set(KNOWN_OPS)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("stride", [1, 2])
def test_op_output_shape(name: str, stride: int) -> None:
    op = make_op(name, 4, stride, affine=False)
    x = torch.randn(2, 4, 8, 8)
    out = op(x)
    assert out.shape == (2, 4, 8 // stride, 8 // stride)
    assert out.dtype == x.dtype
    assert torch.isfinite(out).all()


def test_unknown_op_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="conv_9x9") as info:
        make_op("conv_9x9", 4, 1, affine=False)
    for name in OPS:
        assert name in str(info.value)


@pytest.mark.parametrize("stride", [1, 2])
def test_none_returns_zeros(stride: int) -> None:
    x = torch.randn(2, 4, 8, 8) + 5.0
    out = make_op("none", 4, stride, affine=False)(x)
    assert out.shape == (2, 4, 8 // stride, 8 // stride)
    assert torch.equal(out, torch.zeros_like(out))


def test_skip_connect_is_identity_at_stride_one() -> None:
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(make_op("skip_connect", 4, 1, affine=False)(x), x)


# ----------------------------------------------------------------------------------------------- noise
@pytest.mark.parametrize("stride", [1, 2])
def test_noise_ignores_the_input_values(stride: int) -> None:
    op = make_op("noise", 4, stride, affine=False)
    torch.manual_seed(7)
    a = op(torch.randn(2, 4, 8, 8))
    torch.manual_seed(7)
    b = op(100.0 + 10.0 * torch.randn(2, 4, 8, 8))
    assert a.shape == (2, 4, 8 // stride, 8 // stride)
    assert torch.equal(a, b)


def test_noise_is_standard_normal() -> None:
    out = make_op("noise", 4, 1, affine=False)(torch.full((64, 4, 64, 64), 3.0))  # 1M values, input mean 3
    assert abs(float(out.mean())) < 0.01  # standard error 0.001
    assert abs(float(out.std()) - 1.0) < 0.01
    # not the input, not constant, roughly Gaussian tails: P(|z| > 2) = 4.55%
    assert abs(float((out.abs() > 2).float().mean()) - 0.0455) < 0.003


def test_no_gradient_flows_through_noise() -> None:
    op = make_op("noise", 4, 1, affine=False)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    weight = torch.randn(2, 4, 8, 8)
    # The second term gives x a known gradient of ones; any gradient through the op would add weight-shaped terms.
    loss = (op(x) * weight).sum() + op(x).pow(2).sum() + x.sum()
    loss.backward()
    assert x.grad is not None
    assert torch.equal(x.grad, torch.ones_like(x))
    assert not op(x).requires_grad


def test_noise_is_the_same_in_eval_mode() -> None:
    op = make_op("noise", 4, 2, affine=False)
    x = torch.randn(2, 4, 8, 8)
    torch.manual_seed(3)
    train_out = op.train()(x)
    torch.manual_seed(3)
    eval_out = op.eval()(x)
    assert torch.equal(train_out, eval_out)  # no train/eval switch: still noise at test time
    assert eval_out.shape == (2, 4, 4, 4)
    assert float(eval_out.std()) > 0.5


# ----------------------------------------------------------------------------------------------- drop path
def test_drop_path_keeps_the_expectation() -> None:
    torch.manual_seed(11)
    x = torch.full((40_000, 3, 2, 2), 2.0)
    p = 0.3
    out = drop_path(x, p)
    # Whole samples are either dropped or scaled by 1/keep.
    per_sample = out.flatten(1)
    dropped = (per_sample == 0).all(dim=1)
    kept = torch.isclose(per_sample, torch.full_like(per_sample, 2.0 / (1 - p))).all(dim=1)
    assert bool((dropped | kept).all())
    # Bernoulli(0.7) over 40k samples: standard error of the drop rate 0.0023, of the mean 0.0066 (of 2.0).
    assert abs(float(dropped.float().mean()) - p) < 0.012
    assert abs(float(out.mean()) - 2.0) < 0.05


def test_drop_path_zero_is_the_identity() -> None:
    x = torch.randn(4, 3, 2, 2)
    assert drop_path(x, 0.0) is x
