"""TrainState: the checkpoint form round-trips, format 1 still resumes, bad states are refused."""

import numpy as np
import pytest
import torch

from depthaccel.sweep import dumps_state, loads_state
from depthaccel.train import Run, TrainState, train

T = 60


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = X @ torch.randn(4, generator=g, dtype=torch.float64) + 0.3 * torch.randn(
        30, generator=g, dtype=torch.float64
    )
    return X, y / y.std()


RUNS = [
    Run("gd", 0.02, depth=3, init_scale=0.5),
    Run("adam", 0.01, depth=2, hidden=3, init_scale=0.5, seed=1),
    Run("e2e", 0.02, depth=2.5, init_scale=0.5, seed=2),
    Run("gd", 40.0, depth=2, init_scale=0.5, seed=3),  # diverges
]
KW = {"optimum": 0.0, "log_points": 13, "thresholds": (0.4, 0.2)}


def checkpoints():
    X, y = problem()
    states = []
    full = train(X, y, 4, RUNS, T, checkpoint_every=25, checkpoint=states.append, **KW)
    return X, y, full, states


def assert_same(a_results, b_results):
    for a, b in zip(a_results, b_results, strict=True):
        assert np.array_equal(a.gap, b.gap, equal_nan=True)
        assert a.first_hit == b.first_hit and a.diverged_at == b.diverged_at


def test_to_dict_from_dict_round_trip_and_resume():
    X, y, full, states = checkpoints()
    d = states[0]
    assert d["format"] == TrainState.FORMAT and d["t"] == 25
    st = TrainState.from_dict(loads_state(dumps_state(d)))  # weights_only torch.load
    assert st.t == 25 and st.iters == T and st.thresholds == [0.4, 0.2]
    assert st.shape == (30, 4, 1) and len(st.run_configs) == len(RUNS)
    again = st.to_dict()
    assert again.keys() == d.keys()
    for name, v in d.items():
        w = again[name]
        if isinstance(v, torch.Tensor):
            torch.testing.assert_close(w, v, rtol=0, atol=0, equal_nan=True, msg=name)
        elif name == "groups":
            assert [g.keys() for g in v] == [g.keys() for g in w]
            assert all(torch.equal(a[n], b[n]) for a, b in zip(v, w, strict=True) for n in a)
        elif name == "log_iters":
            assert np.array_equal(v, w)
        else:
            assert v == w, name
    assert_same(full, train(X, y, 4, RUNS, T, resume=st, **KW))


def test_format_1_states_still_resume():
    X, y, full, states = checkpoints()
    old = dict(states[1])
    old["format"] = "depthaccel.train.state/1"
    old["run_keys"] = old.pop("run_configs")
    assert_same(full, train(X, y, 4, RUNS, T, resume=old, **KW))


def test_bad_states_are_refused_with_one_line():
    X, y, _, states = checkpoints()
    for bad, match in [
        ({"format": "something else"}, "not a"),
        ([1, 2], "not a"),
        ({k: v for k, v in states[0].items() if k != "log_vals"}, "malformed"),
        ({**states[0], "t": 0}, "outside"),
        ({**states[0], "optimum": 1.0}, "does not match.*optimum"),
    ]:
        with pytest.raises(ValueError, match=match):
            train(X, y, 4, RUNS, T, resume=bad, **KW)
    with pytest.raises(ValueError, match="does not match.*run_configs"):
        train(X, y, 4, RUNS[::-1], T, resume=states[0], **KW)


def test_mask_every_step_is_validated():
    X, y = problem()
    with pytest.raises(ValueError, match="mask_every_step"):
        train(X, y, 4, RUNS[:1], 5, mask_every_step="yes", **KW)
