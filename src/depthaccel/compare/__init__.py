"""Does depth accelerate *your* problem? ``depthaccel compare`` on a user's table.

``run_compare(CompareConfig(data=...))``:

1. loads the table (``depthaccel.data.load_table``: CSV or NPZ, a target column,
   standardised by default) and computes the l_p optimum L* (``lp_optimum``);
2. builds the grid: every method in ``methods`` at every depth in ``depths`` (the
   end-to-end scheme ``e2e`` only at depths > 1: at depth 1 it is GD), each at every
   learning rate in ``lrs``, hidden width ``hidden``, initialisation ``init`` (near-zero
   by default);
3. trains it through the results store in the output directory (``depthaccel.sweep``:
   finished runs are reused, long runs checkpoint every ``checkpoint_every``
   iterations and resume after a crash);
4. picks each model's (method, depth) best learning rate with the trainer's
   grid-search rule (``depthaccel.train.best_result``: lowest final gap, ties broken by
   first-hit iterations; diverged runs never win);
5. writes ``OUT/compare.png`` (gap vs iteration of each model at its best rate, log y),
   ``OUT/summary.csv`` (one row per run), ``OUT/curves.csv`` (run, iteration, gap) and
   ``OUT/REPORT.md`` (settings, the verdict, a table of final gaps and iterations to
   reach each threshold).

The verdict (:mod:`depthaccel.compare.verdict`) is a headline that answers the question,
then at most six bullets: the best deep model trained by gradient descent (a depth > 1
net, or the Eq. 10/12 scheme that emulates one) against depth-1 GD, the best adaptive
optimizer on a single layer against that deep model, caveats and what to try next. It
states what was measured (one seed, a finite grid, T iterations), not more.

One job per module: :mod:`~depthaccel.compare.config` (settings with their defaults and
limits, validators, the grid of runs), :mod:`~depthaccel.compare.select` (best rate per
model), :mod:`~depthaccel.compare.floor` (round-off floor of the gap),
:mod:`~depthaccel.compare.verdict`, :mod:`~depthaccel.compare.run` (``run_compare``),
:mod:`~depthaccel.compare.outputs` (CSV, plot, report).
"""

from depthaccel.compare.config import CompareConfig, build_runs, check_device, parse_loss
from depthaccel.compare.floor import FLOOR_SAFETY, roundoff_floor
from depthaccel.compare.outputs import OUTPUT_NAMES, STORE_NAMES, output_folder, write_outputs
from depthaccel.compare.result import CompareResult
from depthaccel.compare.run import run_compare
from depthaccel.compare.select import ModelBest, select_best
from depthaccel.compare.verdict import SAME_FACTOR, STALL_FRACTION, Comparison, Verdict, verdict

__all__ = [
    "FLOOR_SAFETY",
    "OUTPUT_NAMES",
    "SAME_FACTOR",
    "STALL_FRACTION",
    "STORE_NAMES",
    "CompareConfig",
    "CompareResult",
    "Comparison",
    "ModelBest",
    "Verdict",
    "build_runs",
    "check_device",
    "output_folder",
    "parse_loss",
    "roundoff_floor",
    "run_compare",
    "select_best",
    "verdict",
    "write_outputs",
]
