"""How many runs and batched calls the paper's search (issue 11) needs per model.

Runs fig3's full-mode search policy on its l4 models (seed 0) at a shorter length and
prints the runs per batched call, the CPU time, and per model the rates trained, the
rounds, the chosen rate and the spacing next to it and across the stability edge. Used
for the full-mode cost estimate in benchmarks/README.md.

    .venv/bin/python benchmarks/search_rounds.py --iters 10000
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import torch

from depthaccel.experiments import fig3
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.search import search_models
from depthaccel.experiments.starts import fair_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as out:
        ctx = ExperimentContext(out)
        task = ctx.ethanol()
        cfg = fig3.Config.full()
        models = [fair_run(cfg, "gd", 1.0, depth=d, seed=0) for d in cfg.depths]
        calls: list[int] = []
        train = ctx.train

        def counting(X, y, p, runs, iters, **kw):
            calls.append(len(runs))
            return train(X, y, p, runs, iters, **kw)

        ctx.train = counting
        t0 = time.process_time()
        _, record = search_models(
            ctx, task.X, task.y, 4.0, models, cfg.search, args.iters, log_points=100
        )
        cpu = time.process_time() - t0
    print(f"runs per batched call: {calls}; CPU {cpu:.1f} s")
    for r in record["search"]:
        print(
            f"{r['model']}: {len(r['grid'])} rates, {r['rounds']} round(s), chosen "
            f"{r['chosen_lr']}, on edge {r['on_edge']}, spacing at the best "
            f"{r['spacing_at_best']:.3f}, across the stability edge "
            f"{r['spacing_at_stability_edge']}"
        )


if __name__ == "__main__":
    main()
