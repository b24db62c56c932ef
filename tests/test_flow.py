"""Flow-matching maths (sana_core.flow): interpolation, target, shift map, logit-normal, loss, dropout, ODE."""
import math

import pytest
import torch

from sana_core import flow


def _pair(seed=0, shape=(3, 4, 5, 5)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def test_interpolation_endpoints_and_per_sample_sigma():
    x0, eps = _pair()
    assert torch.equal(flow.interpolate(x0, eps, torch.tensor(0.0)), x0)
    assert torch.equal(flow.interpolate(x0, eps, torch.tensor(1.0)), eps)
    sig = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    xt = flow.interpolate(x0, eps, sig)
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[2], eps[2])
    torch.testing.assert_close(xt[1], 0.75 * x0[1] + 0.25 * eps[1], rtol=0, atol=1e-15)


def test_target_is_d_dsigma_of_the_path():
    x0, eps = _pair(1)
    v = flow.velocity_target(x0, eps)
    torch.testing.assert_close(v, eps - x0, rtol=0, atol=0)
    for s, h in [(0.1, 0.3), (0.5, 0.2), (0.0, 1.0)]:  # path is linear: finite difference is exact
        a, b = torch.tensor(s + h, dtype=torch.float64), torch.tensor(s, dtype=torch.float64)
        fd = (flow.interpolate(x0, eps, a) - flow.interpolate(x0, eps, b)) / h
        torch.testing.assert_close(fd, v, rtol=0, atol=1e-12)


def test_shift_map_monotone_fixed_points_inverse():
    s = torch.linspace(0, 1, 1001, dtype=torch.float64)
    for shift in (0.5, 1.0, 3.0, 6.0):
        sh = flow.shift_sigma(s, shift)
        assert sh[0] == 0 and sh[-1] == 1
        assert bool((sh[1:] > sh[:-1]).all())
        torch.testing.assert_close(flow.unshift_sigma(sh, shift), s, rtol=0, atol=1e-14)
        if shift > 1:
            assert bool((sh[1:-1] > s[1:-1]).all())  # shift > 1 moves mass towards noise
    assert torch.equal(flow.shift_sigma(s, 1.0), s)
    assert flow.shift_sigma(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)  # 1.5 / 2
    assert flow.shift_sigma(torch.tensor(0.25), 3.0).item() == pytest.approx(0.5)  # 0.75 / 1.5
    with pytest.raises(ValueError, match="shift"):
        flow.shift_sigma(s, 0.0)


def test_logit_normal_moments():
    g = torch.Generator().manual_seed(0)
    m, sd, n = 0.3, 1.2, 400_000
    u = flow.logit_normal(n, m, sd, generator=g)
    assert u.dtype == torch.float32 and bool(((u > 0) & (u < 1)).all())
    z = torch.logit(u.double())
    assert z.mean().item() == pytest.approx(m, abs=0.01)
    assert z.std().item() == pytest.approx(sd, abs=0.01)
    # E[sigmoid(Z)] by Gauss-Hermite quadrature
    x, w = _hermgauss(80)
    expected = float((w * torch.sigmoid(m + math.sqrt(2) * sd * x)).sum() / math.sqrt(math.pi))
    assert u.double().mean().item() == pytest.approx(expected, abs=2e-3)
    # shifted training sigma: median is shift(sigmoid(mean)); s=3, mean 0 -> 0.75
    sig = flow.sample_sigmas(n, shift=3.0, generator=torch.Generator().manual_seed(1))
    assert sig.median().item() == pytest.approx(0.75, abs=0.005)
    # sigma' > 1/2  <=>  sigma > 1/4  <=>  z > -ln 3
    p_half = 0.5 + 0.5 * math.erf(math.log(3) / math.sqrt(2))
    assert (sig > 0.5).double().mean().item() == pytest.approx(p_half, abs=0.005)


def _hermgauss(n):
    import numpy as np

    x, w = np.polynomial.hermite.hermgauss(n)
    return torch.from_numpy(x), torch.from_numpy(w)


def test_loss_is_mean_over_chw_then_batch_unweighted():
    g = torch.Generator().manual_seed(3)
    pred, tgt = torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g)
    per = ((pred - tgt) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(flow.flow_loss(pred, tgt), per.mean())
    assert flow.flow_loss(tgt, tgt).item() == 0.0


def test_model_timestep_float_and_sana_truncation():
    s = torch.tensor([0.0, 0.12345, 0.9999, 1.0])
    torch.testing.assert_close(flow.model_timestep(s), s * 1000)
    assert flow.model_timestep(s, integer=True).tolist() == [0.0, 123.0, 999.0, 1000.0]


def test_caption_dropout_to_null_keeps_mask_and_global_draw_slices():
    g = torch.Generator().manual_seed(0)
    emb, null = torch.randn(6, 5, 8, generator=g), torch.randn(5, 8, generator=g)
    drop = torch.tensor([True, False, False, True, False, True])
    out = flow.drop_captions(emb, null, drop)
    assert torch.equal(out[drop], null.expand(3, 5, 8)) and torch.equal(out[~drop], emb[~drop])
    x0 = torch.randn(6, 4, 2, 2, generator=g)
    sigma, noise, _ = flow.draw_flow_noise(6, (4, 2, 2), generator=torch.Generator().manual_seed(5))
    xt, t, target, emb2 = flow.flow_training_inputs(x0, emb, sigma, noise, drop, null)
    assert torch.equal(emb2, out)
    torch.testing.assert_close(target, noise - x0)
    torch.testing.assert_close(t, sigma * 1000)
    with pytest.raises(ValueError, match="null embedding"):
        flow.flow_training_inputs(x0, emb, sigma, noise, drop, None)
    # drop rate ~ p; same generator seed -> same draws; a slice of the global draw is what a rank uses
    a = flow.draw_flow_noise(20000, (1,), generator=torch.Generator().manual_seed(9), caption_dropout=0.1)
    b = flow.draw_flow_noise(20000, (1,), generator=torch.Generator().manual_seed(9), caption_dropout=0.1)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert a[2].double().mean().item() == pytest.approx(0.1, abs=0.01)
    assert flow.draw_flow_noise(100, (1,), generator=torch.Generator(), caption_dropout=0.0)[2].sum() == 0


@pytest.mark.parametrize("grid", ["uniform", "shifted", "random"])
def test_perfect_velocity_integrates_back_to_data_exactly(grid):
    x0, eps = _pair(7)
    if grid == "uniform":
        sig = torch.linspace(1, 0, 11, dtype=torch.float64)
    elif grid == "shifted":
        sig = flow.sampling_sigmas(20, shift=3.0)
    else:
        inner = torch.sort(torch.rand(6, generator=torch.Generator().manual_seed(2), dtype=torch.float64),
                           descending=True).values
        sig = torch.cat([torch.ones(1, dtype=torch.float64), inner, torch.zeros(1, dtype=torch.float64)])
    assert sig[0] == 1 and sig[-1] == 0
    calls = []

    def v(x, s):  # the perfect field for this pair: the straight path's constant velocity
        calls.append(float(s))
        return flow.velocity_target(x0, eps)

    out = flow.euler_integrate(v, eps, sig)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-12)
    assert calls == pytest.approx(sig[:-1].tolist())


def test_gaussian_data_optimal_velocity_recovers_data_distribution():
    # x0 ~ N(mu, diag(s^2)), eps ~ N(0, I): x_sigma = a x0 + sigma eps with a = 1 - sigma, V = a^2 s^2 + sigma^2.
    # Optimal field v*(x, sigma) = E[eps - x0 | x_sigma = x] = (sigma - a s^2)/V (x - a mu) - mu.
    mu = torch.tensor([1.5, -0.5, 0.0, 3.0], dtype=torch.float64)
    s = torch.tensor([0.5, 2.0, 1.0, 0.25], dtype=torch.float64)

    def v_opt(x, sig):
        a = 1 - sig
        var = a**2 * s**2 + sig**2
        return (sig - a * s**2) / var * (x - a * mu) - mu

    x1 = torch.randn(4000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x1 = (x1 - x1.mean(0)) / x1.std(0)  # exact N(0, 1) sample moments: the flow map is affine, so the check is exact
    out = flow.euler_integrate(v_opt, x1, flow.sampling_sigmas(1000, shift=3.0))
    torch.testing.assert_close(out.mean(0), mu, rtol=0, atol=1e-3)  # Euler error only, O(1/steps)
    torch.testing.assert_close(out.std(0), s, rtol=0.01, atol=0)
    # the marginals along the way match too: at sigma = 1/2 the ensemble has the analytic mean/std
    mid = flow.euler_integrate(v_opt, x1, torch.linspace(1, 0.5, 501, dtype=torch.float64))
    torch.testing.assert_close(mid.mean(0), 0.5 * mu, rtol=0, atol=1e-3)
    torch.testing.assert_close(mid.std(0), torch.sqrt(0.25 * s**2 + 0.25), rtol=0.01, atol=0)
