"""StableNet sample reweighting: positive weights summing to the batch size, memory, determinism."""

from __future__ import annotations

import torch

from training.reweighting import ReweightConfig, SampleReweighter, decorrelation_loss


def test_weights_are_positive_and_sum_to_the_batch_size():
    reweighter = SampleReweighter(ReweightConfig(inner_steps=5), torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        z = torch.randn(6, 32, generator=g)
        w = reweighter(z)
        assert w.shape == (6,) and not w.requires_grad
        assert (w > 0).all()
        assert torch.allclose(w.sum(), torch.tensor(6.0), atol=1e-4)
    assert reweighter.updates == 3 and reweighter.memory_features.shape == (6, 32)


def test_defaults_follow_the_reference():
    cfg = ReweightConfig()
    assert (cfg.lambdap, cfg.decay_pow, cfg.num_f, cfg.lrbl, cfg.min_lambda_times) == (70.0, 2.0, 1, 1.0, 0.01)


def test_weights_move_away_from_uniform_for_correlated_features():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(8, 1, generator=g)
    z = torch.cat([base, base * 2 + 0.01 * torch.randn(8, 1, generator=g), torch.randn(8, 6, generator=g)], 1)
    z[0] *= 6  # one sample drives the correlation
    w = SampleReweighter(ReweightConfig(lambdap=1.0), torch.Generator().manual_seed(0))(z)
    assert (w - 1).abs().max() > 1e-3


def test_decorrelation_loss_ignores_the_diagonal():
    features = torch.randn(10, 4, 1)
    uniform = torch.full((10,), 0.1)
    assert decorrelation_loss(features, uniform) > 0
    independent = torch.zeros(10, 4, 1)
    independent[:, 0, 0] = torch.arange(10.0)  # one varying feature: only a variance, no covariance
    assert decorrelation_loss(independent, uniform).item() == 0.0


def test_state_round_trip_continues_identically():
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(4, 16, generator=g) for _ in range(4)]
    a = SampleReweighter(ReweightConfig(inner_steps=4), torch.Generator().manual_seed(0))
    for z in batches[:2]:
        a(z)
    b = SampleReweighter(ReweightConfig(inner_steps=4), torch.Generator().manual_seed(99))
    b.load_state_dict({k: (v.clone() if torch.is_tensor(v) else v) for k, v in a.state_dict().items()})
    for z in batches[2:]:
        assert torch.equal(a(z), b(z))
