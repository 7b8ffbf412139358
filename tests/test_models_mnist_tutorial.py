"""The MNIST tutorial net, its overparameterized variant and its training loop
(``depthaccel.models.mnist_tutorial``), against hand-written references."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from depthaccel.models import mnist_tutorial as mt
from depthaccel.overparam import factors

SEED = 66478  # the tutorial's


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def _schedule(steps: int) -> mt.Schedule:
    return mt.Schedule(steps=steps, train_size=640)


def _random_splits(seed: int, dtype=torch.float32) -> mt.Splits:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(640, 1, 28, 28, generator=g) - 0.5).to(dtype)
    y = torch.randint(0, 10, (640,), generator=g)
    return mt.Splits(x, y, x[:64], y[:64], x[:1], y[:1])


def test_factored_forward_matches_product_forward_and_gradients():
    over, _ = mt.overparameterized_tutorial_net(SEED, dropout=0.0, dtype=torch.float64)
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64) - 0.5
    grads = []
    outs = []
    for factored in (True, False):
        over.zero_grad()
        over.factored_forward = factored
        out = over(x)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in over.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-12)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_l2_penalty_matches_hand_computation():
    plain = mt.tutorial_net(SEED, dtype=torch.float64)
    over, _ = mt.overparameterized_tutorial_net(SEED, dtype=torch.float64)

    def half_sq(t):
        return 0.5 * float((t.detach().double() ** 2).sum())

    want = sum(
        half_sq(getattr(plain, n).weight) + half_sq(getattr(plain, n).bias) for n in ("fc1", "fc2")
    )
    assert mt.l2_penalty(plain, "factors").item() == pytest.approx(want, rel=1e-12)
    assert mt.l2_penalty(plain, "product").item() == pytest.approx(want, rel=1e-12)
    want_f = want_p = 0.0
    for n in ("fc1", "fc2"):
        layer = getattr(over, n)
        w1, w2 = (t.detach().numpy() for t in factors(layer))
        b = half_sq(layer.bias)
        want_f += 0.5 * (w1**2).sum() + 0.5 * (w2**2).sum() + b
        want_p += 0.5 * ((w2 @ w1) ** 2).sum() + b
    assert mt.l2_penalty(over, "factors").item() == pytest.approx(want_f, rel=1e-12)
    assert mt.l2_penalty(over, "product").item() == pytest.approx(want_p, rel=1e-12)
    assert want_f != pytest.approx(want_p, rel=1e-3)
    with pytest.raises(ValueError, match="l2 target"):
        mt.l2_penalty(over, "weights")


def test_staircase_lr_and_batch_order_follow_the_tutorial():
    # tf.train.exponential_decay(0.01, step*64, 55000, 0.95, staircase=True)
    for step in (0, 1, 858, 859, 860, 1718, 1719, 8592):
        want = 0.01 * 0.95 ** (step * 64 // 55000)
        assert mt.staircase_lr(step) == pytest.approx(want, rel=1e-15)
    assert mt.staircase_lr(859) == 0.01 and mt.staircase_lr(860) == 0.01 * 0.95
    assert mt.batch_offset(0, 64, 55000) == 0
    assert mt.batch_offset(859, 64, 55000) == (859 * 64) % (55000 - 64)
    with pytest.raises(ValueError):
        mt.staircase_lr(-1)


def test_side_by_side_same_batches_and_masks_make_twins_identical():
    """Two copies of the same net, trained side by side, stay bit-identical (same
    minibatches, same dropout masks); a different dropout seed per net would break it."""
    plain, twin = mt.tutorial_net(SEED), mt.tutorial_net(SEED)
    g = torch.Generator().manual_seed(0)
    splits = mt.Splits(
        train_x=torch.rand(640, 1, 28, 28, generator=g) - 0.5,
        train_y=torch.randint(0, 10, (640,), generator=g),
        val_x=torch.rand(64, 1, 28, 28, generator=g) - 0.5,
        val_y=torch.randint(0, 10, (64,), generator=g),
        test_x=torch.zeros(1, 1, 28, 28),
        test_y=torch.zeros(1, dtype=torch.long),
    )
    torch.manual_seed(1234)
    caller_state = torch.random.get_rng_state()
    hist, lrs, done = mt.train_side_by_side({"a": plain, "b": twin}, splits, _schedule(2))
    # the per-step re-seeding stays inside the call: the caller's RNG is untouched
    assert torch.equal(torch.random.get_rng_state(), caller_state)
    assert done == 2 and lrs == [0.01, 0.01]
    assert hist["a"].loss == hist["b"].loss and len(hist["a"].loss) == 2
    for p, q in zip(plain.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
    # the recorded loss is cross-entropy + 5e-4 * l2 at the step's parameters
    assert all(lo > ce for lo, ce in zip(hist["a"].loss, hist["a"].ce, strict=True))


def test_one_sgd_step_matches_a_hand_written_momentum_update():
    """train_side_by_side's step = TF MomentumOptimizer on CE + 5e-4 * l2 (float64, no dropout)."""
    over, _ = mt.overparameterized_tutorial_net(SEED, dropout=0.0, dtype=torch.float64)
    ref = {k: v.clone() for k, v in over.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(640, 1, 28, 28, generator=g) - 0.5).double()
    y = torch.randint(0, 10, (640,), generator=g)
    splits = mt.Splits(x, y, x[:64], y[:64], x[:1], y[:1])
    mt.train_side_by_side({"o": over}, splits, _schedule(1))  # lr 0.01, fresh momentum = grad
    clone, _ = mt.overparameterized_tutorial_net(SEED, dropout=0.0, dtype=torch.float64)
    clone.load_state_dict(ref)
    params = dict(clone.named_parameters())
    loss = F.cross_entropy(clone(x[:64]), y[:64])
    reg = 0.0
    for n in ("fc1", "fc2"):
        layer = getattr(clone, n)
        reg = reg + 0.5 * sum((w**2).sum() for w in factors(layer))
        reg = reg + 0.5 * (layer.bias**2).sum()
    (loss + 5e-4 * reg).backward()
    got = dict(over.named_parameters())
    for name, p in params.items():
        torch.testing.assert_close(got[name], p.detach() - 0.01 * p.grad, rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------------------- experiment


def test_optimizer_factories_are_used_per_net():
    """A net given its own optimizer factory trains with it: twins stay identical for
    one step (momentum buffer = gradient) and differ after the second (no momentum)."""
    a, b = mt.tutorial_net(SEED, dropout=0.0), mt.tutorial_net(SEED, dropout=0.0)
    made = []

    def plain_sgd(model, schedule):
        made.append(schedule.base_lr)
        return torch.optim.SGD(model.parameters(), lr=schedule.base_lr)

    splits = _random_splits(3)
    mt.train_side_by_side({"a": a, "b": b}, splits, _schedule(1), optimizers={"b": plain_sgd})
    assert made == [0.01]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    a, b = mt.tutorial_net(SEED, dropout=0.0), mt.tutorial_net(SEED, dropout=0.0)
    mt.train_side_by_side({"a": a, "b": b}, splits, _schedule(2), optimizers={"b": plain_sgd})
    assert not torch.equal(a.fc2.weight, b.fc2.weight)


def test_unknown_factor_init_is_refused():
    with pytest.raises(ValueError, match="factor_init must be one of"):
        mt.overparameterized_tutorial_net(SEED, factor_init="zeros")
