"""LAMB against a direct numpy transcription of You et al. (2019), Algorithm 2; groups; the schedule."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from bertwwm.modeling.model import bert_config, build_model
from bertwwm.modeling.optim import Lamb, build_optimizer, no_decay, parameter_groups, warmup_linear_decay


def lamb_reference(ws, grads_per_step, lr, b1, b2, eps, wd):
    """The paper's update, per layer (tensor), in float64 numpy."""
    ws = [w.astype(np.float64).copy() for w in ws]
    ms = [np.zeros_like(w) for w in ws]
    vs = [np.zeros_like(w) for w in ws]
    for t, grads in enumerate(grads_per_step, start=1):
        for i, g in enumerate(grads):
            g = g.astype(np.float64)
            ms[i] = b1 * ms[i] + (1 - b1) * g
            vs[i] = b2 * vs[i] + (1 - b2) * g * g
            m_hat = ms[i] / (1 - b1 ** t)
            v_hat = vs[i] / (1 - b2 ** t)
            r = m_hat / (np.sqrt(v_hat) + eps) + wd * ws[i]
            w_norm, r_norm = np.linalg.norm(ws[i]), np.linalg.norm(r)
            trust = w_norm / r_norm if w_norm > 0 and r_norm > 0 else 1.0  # phi(z) = z
            ws[i] = ws[i] - lr * trust * r
    return ws


def test_lamb_matches_the_paper_formulas():
    rng = np.random.default_rng(0)
    shapes = [(5, 7), (7,), (3, 2, 4)]
    w0 = [rng.normal(size=s) for s in shapes]
    w0.append(np.zeros((4,)))  # a zero tensor: trust ratio falls back to 1
    grads = [[rng.normal(size=w.shape) * (0.1 + t) for w in w0] for t in range(6)]
    grads[2][1] = np.zeros(w0[1].shape)  # a zero gradient step for one tensor
    params = [torch.nn.Parameter(torch.tensor(w, dtype=torch.float64)) for w in w0]
    opt = Lamb([{"params": params[:2], "weight_decay": 0.01}, {"params": params[2:], "weight_decay": 0.0}],
               lr=0.02, betas=(0.9, 0.999), eps=1e-6)
    for step in grads:
        for p, g in zip(params, step):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    want = lamb_reference(w0[:2], [s[:2] for s in grads], 0.02, 0.9, 0.999, 1e-6, 0.01) + \
        lamb_reference(w0[2:], [s[2:] for s in grads], 0.02, 0.9, 0.999, 1e-6, 0.0)
    for p, w in zip(params, want):
        np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-12, atol=1e-14)
    # The update moved every tensor and the layer-wise step size is lr * ||w|| (trust ratio) for nonzero w.
    assert not np.allclose(params[0].detach().numpy(), w0[0])
    assert np.abs(params[3].detach().numpy()).max() > 0


def test_lamb_state_round_trips_exactly():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3))
    opt = Lamb([p], lr=0.1)
    for _ in range(2):
        p.grad = torch.randn(4, 3)
        opt.step()
    clone = torch.nn.Parameter(p.detach().clone())
    opt2 = Lamb([clone], lr=0.1)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as after torch.save/torch.load
    g = torch.randn(4, 3)
    p.grad, clone.grad = g.clone(), g.clone()
    opt.step()
    opt2.step()
    assert torch.equal(p, clone)


def test_no_weight_decay_on_bias_and_layernorm():
    hf = build_model(bert_config("tiny"), nsp=True)
    decay, keep = parameter_groups(hf, 0.01)
    names = {id(p): n for n, p in hf.named_parameters()}
    assert decay["weight_decay"] == 0.01 and keep["weight_decay"] == 0.0
    assert all(not no_decay(names[id(p)]) for p in decay["params"])
    kept = {names[id(p)] for p in keep["params"]}
    assert "bert.embeddings.LayerNorm.weight" in kept and "cls.predictions.bias" in kept
    assert "bert.encoder.layer.0.attention.self.query.bias" in kept
    # The tied decoder weight is the embedding matrix and appears exactly once.
    all_params = decay["params"] + keep["params"]
    assert len({id(p) for p in all_params}) == len(all_params) == len(list(hf.parameters()))
    for name in ("adamw", "lamb"):
        opt = build_optimizer(hf, name, lr=1e-4)
        assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    with pytest.raises(ValueError):
        build_optimizer(hf, "sgd", lr=1e-4)


def test_warmup_then_linear_decay():
    assert warmup_linear_decay(0, 10, 100) == pytest.approx(0.1)
    assert warmup_linear_decay(9, 10, 100) == pytest.approx(1.0)
    assert warmup_linear_decay(10, 10, 100) == pytest.approx(1.0)
    assert warmup_linear_decay(55, 10, 100) == pytest.approx(0.5)
    assert warmup_linear_decay(100, 10, 100) == 0.0
    # the rate of each of 12 updates at peak 2.0 (step = updates done before it): the first is non-zero
    lrs = [2.0 * warmup_linear_decay(step, 4, 12) for step in range(12)]
    assert lrs[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert lrs[4:] == pytest.approx([2.0 * (12 - s) / 8 for s in range(4, 12)])
