"""Bit-identity check of ``depthaccel.sweep`` across two versions of the code.

Runs a fixed set of sweeps -- a mixed grid (depths 1-3; GD on nets of width 1 and 2, the
end-to-end scheme, Adam/AdaGrad/AdaDelta; rates up to diverging ones) on the l2 and l4
losses with vector and 2-column targets, a Fortran-order X, float32 compute with a fixed
L*, torch float32 inputs with trainer options, the softmax cross-entropy, and a crash
after a checkpoint followed by a resume and a reuse -- and writes, per sweep, one JSON
file of the store keys, the data fingerprint, the reuse/resume counts and sha256 digests
of every result and of every stored row (the metadata in ``extra`` goes to a separate
``*.extra.json``: it names the executor and the process, so it may differ).

Run it with each version on the same machine and thread count, then compare:

    PYTHONPATH=<old checkout>/src python benchmarks/sweep_bit_identity.py before
    PYTHONPATH=<new checkout>/src python benchmarks/sweep_bit_identity.py after
    diff -r -x '*.extra.json' before after   # no output: identical

About 15 s on one core.
"""

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from depthaccel.losses import SoftmaxCE, lp_optimum
from depthaccel.store import Store
from depthaccel.sweep import sweep
from depthaccel.train import Run

THRESHOLDS = (1e-1, 1e-2, 1e-4)


def problem(m=80, d=6, k=1, seed=0, fortran=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    W = rng.standard_normal((d, k))
    y = X @ W / 2 + 0.3 * rng.standard_normal((m, k))
    if k == 1:
        y = y[:, 0]
    if fortran:
        X = np.asfortranarray(X)
    return X, y


def grid():
    runs = []
    for dp in (1, 2, 3):
        for lr in (1e-3, 1e-2, 3e-2, 10.0):  # 10.0 diverges
            runs.append(Run("gd", lr, depth=dp))
        if dp >= 2:
            for lr in (1e-2, 3e-2, 5.0):
                runs.append(Run("e2e", lr, depth=dp))
        for m in ("adam", "adagrad", "adadelta"):
            runs.append(Run(m, None, depth=dp))
        runs.append(Run("adam", 3e-2, depth=dp, hidden=3))
        runs.append(Run("gd", 1e-2, depth=dp, hidden=2))
    return runs


class Crash(Exception):
    pass


def dump(out_dir, name, res, store_path):
    """Write NAME.json (keys, counts, digests of the results and of the stored rows) and
    NAME.extra.json (the stored rows' metadata)."""
    h = hashlib.sha256()
    lines = {
        "keys": res.keys,
        "fingerprint": res.fingerprint,
        "reused": res.reused,
        "computed": res.computed,
        "resumed": sorted(res.resumed.values()),
    }
    for r in res.results:
        h.update(repr(r.run).encode())
        h.update(np.asarray(r.iters, dtype=np.int64).tobytes())
        h.update(np.asarray(r.gap, dtype=np.float64).tobytes())
        h.update(repr(sorted(r.first_hit.items())).encode())
        h.update(np.float64(r.final_gap).tobytes())
        h.update(repr((r.diverged, r.diverged_at)).encode())
        if r.accuracy is not None:
            h.update(np.asarray(r.accuracy, dtype=np.float64).tobytes())
    lines["results_sha256"] = h.hexdigest()
    hs = hashlib.sha256()
    extras = {}
    with Store(store_path) as st:
        stored = st.get_runs(res.keys)
        for k in sorted(stored):
            s = stored[k]
            hs.update(k.encode())
            hs.update(json.dumps(s.config, sort_keys=True).encode())
            hs.update((s.data_fingerprint + s.math_version + s.label).encode())
            hs.update(np.asarray(s.iters, dtype=np.int64).tobytes())
            hs.update(np.asarray(s.gap, dtype=np.float64).tobytes())
            hs.update(repr(sorted(s.first_hit.items())).encode())
            hs.update(np.float64(s.final_gap).tobytes())
            hs.update(repr((s.diverged, s.diverged_at)).encode())
            hs.update(json.dumps(s.extra.get("accuracy")).encode())
            extras[k] = {e: v for e, v in s.extra.items() if e != "accuracy"}
        lines["stored_sha256"] = hs.hexdigest()
        lines["stored_count"] = len(stored)
        lines["checkpoints_left"] = len(st.checkpoints())
    (out_dir / f"{name}.json").write_text(json.dumps(lines, indent=1, sort_keys=True) + "\n")
    extra_text = json.dumps(extras, indent=1, sort_keys=True) + "\n"
    (out_dir / f"{name}.extra.json").write_text(extra_text)
    print(name, lines["results_sha256"][:16], lines["stored_sha256"][:16], len(res.keys))


def crashed_then_resumed(X, y, p, runs, st, crash_at=4):
    """A sweep killed at its ``crash_at``-th checkpoint write, then the same sweep with
    one more run (the checkpointed group resumes)."""
    kw = dict(thresholds=THRESHOLDS, log_points=40, checkpoint_every=60, shard_runs=9)
    real = Store.save_checkpoint
    n = [0]

    def crash(self, *a):
        n[0] += 1
        if n[0] == crash_at:
            raise Crash
        real(self, *a)

    Store.save_checkpoint = crash
    try:
        sweep(X, y, p, runs, 400, store=st, **kw)
    except Crash:
        pass
    finally:
        Store.save_checkpoint = real
    return sweep(X, y, p, runs + [Run("gd", 2e-2, depth=3)], 400, store=st, **kw)


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    runs = grid()
    for p in (2, 4):
        data = {
            "vec": problem(),
            "k2": problem(k=2, seed=1),
            "fortran": problem(fortran=True, seed=2),
        }
        for variant, (X, y) in data.items():
            name = f"l{p}-{variant}"
            st = tmp / f"{name}.sqlite"
            res = sweep(X, y, p, runs, 300, store=st, thresholds=THRESHOLDS, log_points=40,
                        checkpoint_every=70, shard_runs=7)  # fmt: skip
            dump(out_dir, name, res, st)
        # optimum fixed by the caller, float32 compute
        X, y = problem(seed=3)
        st = tmp / f"l{p}-f32.sqlite"
        res = sweep(X, y, p, runs, 200, store=st, thresholds=THRESHOLDS, log_points=30,
                    optimum=lp_optimum(X, y, p).loss, dtype=torch.float32,
                    checkpoint_every=50)  # fmt: skip
        dump(out_dir, f"l{p}-f32", res, st)
        # a crash after a few checkpoints, a resume with one more run, then a reuse
        X, y = problem(seed=4)
        st = tmp / f"l{p}-resume.sqlite"
        res = crashed_then_resumed(X, y, p, runs, st)
        dump(out_dir, f"l{p}-resume", res, st)
        res = sweep(X, y, p, runs + [Run("gd", 2e-2, depth=3)], 400, store=st,
                    thresholds=THRESHOLDS[:2], log_points=40, checkpoint_every=60,
                    shard_runs=9)  # fmt: skip
        dump(out_dir, f"l{p}-reuse", res, st)
    # softmax cross-entropy: labels as an int64 tensor, L* computed
    rng = np.random.default_rng(11)
    Xc = rng.standard_normal((90, 5))
    scores = Xc @ rng.standard_normal((5, 3)) + 0.5 * rng.standard_normal((90, 3))
    labels = torch.as_tensor(np.argmax(scores, axis=1))
    ce_runs = [
        Run(m, lr, depth=dp)
        for dp in (1, 2, 3)
        for m, lr in (("gd", 0.1), ("gd", 1.0), ("gd", 500.0), ("adam", None))
    ]
    for l2 in (0.0, 1e-3):
        st = tmp / f"ce-{l2}.sqlite"
        res = sweep(torch.as_tensor(Xc), labels, SoftmaxCE(3, l2), ce_runs, 150, store=st,
                    thresholds=(1e-2,), log_points=20, checkpoint_every=40,
                    shard_runs=4)  # fmt: skip
        dump(out_dir, f"ce-{l2}", res, st)
    # torch float32 inputs, trainer options
    X32, y32 = problem(seed=9)
    st = tmp / "torch32.sqlite"
    res = sweep(torch.as_tensor(X32, dtype=torch.float32),
                torch.as_tensor(y32, dtype=torch.float32), 4, runs, 150, store=st,
                thresholds=THRESHOLDS, log_points=20, log_scale=True,
                diverge_factor=1e3)  # fmt: skip
    dump(out_dir, "torch32-opts", res, st)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/sweep_bit_identity.py OUT_DIR")
    main(Path(sys.argv[1]))
