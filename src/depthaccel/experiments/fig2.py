r"""Fig. 2: gradient descent on depth-2/3 linear nets vs the end-to-end scheme of Eq. 12.

Paper (Sec. 8): on the Ethanol task with l2 and l4 loss, GD on depth-2 and depth-3
linear networks (hidden width 1 and 100, learning rate 1e-3) is emulated by the
preconditioning scheme of Eq. 12 on a single layer, and the hidden width has a
negligible effect.

Here every net is paired with an Eq. 12 run that starts from the net's own initial
end-to-end vector (the product of its initial factors), so the comparison isolates the
update rule from the draw of the initialisation; the deviation between two curves is
``max_t |gap_a(t) - gap_b(t)| / gap_b(t)`` over the logged iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.results import Claim, ExperimentResult
from depthaccel.reporting import Curve, format_lr, plot_gap_panels, run_curve, write_curves_csv

NAME = "fig2"
TITLE = "Fig. 2: depth-2/3 linear nets vs the Eq. 12 scheme (l2 and l4, Ethanol)"


@dataclass(frozen=True)
class Config:
    losses: tuple[float, ...] = (2.0, 4.0)
    depths: tuple[int, ...] = (2, 3)
    widths: tuple[int, ...] = (1, 100)
    lr: float = 1e-3
    iters: int = 20_000
    # (init, init_scale) variants, each a row of panels. "balanced": Theorem 1's
    # assumption (Eq. 7), every width starts from the same end-to-end vector (Gaussian,
    # std init_scale per entry). "near_zero": i.i.d. N(0, init_scale^2) factor entries,
    # the paper's "near-zero" (its scale is not in our copy of the paper).
    inits: tuple[tuple[str, float], ...] = (("balanced", 1e-2), ("near_zero", 5e-2))
    seed: int = 0
    log_points: int = 1000
    emulate_tol: float = 0.05  # balanced: max relative deviation, scheme vs its net
    near_zero_tol: float = 0.10  # near-zero: same, after the first skip_fraction of iters
    width_tol: float = 0.10  # near-zero: width 1 vs width 100, after skip_fraction
    skip_fraction: float = 0.25
    assess_near_zero: bool = True  # False: near-zero claims shown without a verdict

    @classmethod
    def quick(cls) -> Config:
        return cls(iters=2_000, log_points=200, assess_near_zero=False)

    @classmethod
    def full(cls) -> Config:
        return cls()


def max_rel_dev(a: np.ndarray, b: np.ndarray, iters: np.ndarray, start: int = 0) -> float:
    """``max |a - b| / b`` over logged iterations ``>= start`` (NaN-safe: a NaN in either
    curve, i.e. a divergence, gives inf)."""
    keep = iters >= start
    a, b = np.asarray(a)[keep], np.asarray(b)[keep]
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    return float(np.max(np.abs(a - b) / np.abs(b)))


_NET_COLORS = {2: "tab:blue", 3: "tab:red", 4: "tab:green"}
_SCHEME_COLORS = {2: "navy", 3: "darkred", 4: "darkgreen"}
_SCHEME_MARKERS = {2: "o", 3: "^", 4: "s"}


def curve_styles(depth: int, first_width: bool) -> tuple[dict, dict]:
    """Matplotlib styles of a depth's net and of its Eq. 12 scheme. Nets: the depth's
    colour, solid for the first width and dash-dot for the second. The scheme lies on its
    net's curve, so it is drawn dotted in a darker shade of the depth's colour with a
    marker per depth (circle N=2, triangle N=3, square N=4), hollow from the first
    width's initialisation and filled from the second's: every curve of the figure has
    its own style."""
    dark = _SCHEME_COLORS.get(depth, "k")
    net = {
        "color": _NET_COLORS.get(depth, "0.4"),
        "ls": "-" if first_width else "-.",
        "lw": 1.5,
    }
    scheme = {
        "color": dark,
        "ls": ":",
        "lw": 1.8,
        "marker": _SCHEME_MARKERS.get(depth, "D"),
        "markevery": (0.05 if first_width else 0.1, 0.1),
        "ms": 5,
        "mfc": "none" if first_width else dark,
    }
    return net, scheme


def run(config: Config, ctx: ExperimentContext) -> ExperimentResult:
    from depthaccel.train import Run

    task = ctx.ethanol()
    X, y = task.X, task.y
    panels = []
    all_curves: list[Curve] = []
    devs: dict[str, dict] = {}
    start = int(config.skip_fraction * config.iters)
    for init, scale in config.inits:
        for p in config.losses:
            runs = []
            for depth in config.depths:
                for width in config.widths:
                    common = dict(
                        lr=config.lr,
                        depth=depth,
                        hidden=width,
                        init=init,
                        init_scale=scale,
                        seed=config.seed,
                    )
                    runs.append(Run("gd", **common))
                    runs.append(Run("e2e", **common))
            res = ctx.train(
                X,
                y,
                p,
                runs,
                config.iters,
                log_points=config.log_points,
            )
            by = {(r.run.method, r.run.depth, r.run.hidden): r for r in res}
            tag = f"{init}/l{p:g}"
            curves = []
            for depth in config.depths:
                for width in config.widths:
                    net, e2e = by[("gd", depth, width)], by[("e2e", depth, width)]
                    c_net = run_curve(
                        net, f"depth-{depth} net, width {width}, lr {format_lr(config.lr)}", tag
                    )
                    c_e2e = run_curve(
                        e2e, f"Eq. 12, N={depth} (from the width-{width} net's init)", tag
                    )
                    c_net.style, c_e2e.style = curve_styles(depth, width == config.widths[0])
                    curves += [c_net, c_e2e]
                    key = f"{tag}/depth{depth}/width{width}"
                    devs[f"{key}/scheme_vs_net"] = max_rel_dev(e2e.gap, net.gap, net.iters)
                    devs[f"{key}/scheme_vs_net_after_skip"] = max_rel_dev(
                        e2e.gap, net.gap, net.iters, start
                    )
                    devs[f"{key}/final_gap"] = {"net": net.final_gap, "scheme": e2e.final_gap}
                if len(config.widths) > 1:
                    a = by[("gd", depth, config.widths[-1])]
                    b = by[("gd", depth, config.widths[0])]
                    key = f"{tag}/depth{depth}/width{config.widths[-1]}_vs_width{config.widths[0]}"
                    devs[key] = max_rel_dev(a.gap, b.gap, b.iters)
                    devs[f"{key}/after_skip"] = max_rel_dev(a.gap, b.gap, b.iters, start)
                    devs[f"{key}/final"] = abs(a.final_gap - b.final_gap) / b.final_gap
            panels.append((f"l{p:g} loss, {init} init ({scale:g})", curves))
            all_curves += curves

    fig = plot_gap_panels(
        ctx.out_dir / "fig2.png",
        panels,
        suptitle=f"GD on deep linear nets vs Eq. 12 (lr {format_lr(config.lr)}, Ethanol)",
        ylabel="loss (distance from optimum)",
        ncols=len(config.losses),
    )
    csv = write_curves_csv(ctx.out_dir / "curves.csv", all_curves)

    claims = []
    quick_note = "" if config.iters >= 20_000 else f"quick mode: {config.iters} iterations"
    skip_txt = f"after the first {config.skip_fraction:.0%} of iterations"
    nz_note = (
        f"not assessed: {config.iters} iterations are mostly the near-zero start's "
        "transient; see full mode"
    )
    for init, _ in config.inits:
        after = init != "balanced"
        suffix = "scheme_vs_net_after_skip" if after else "scheme_vs_net"
        emu = {k: v for k, v in devs.items() if k.startswith(init + "/") and k.endswith(suffix)}
        worst = max(emu, key=emu.get)
        tol = config.near_zero_tol if after else config.emulate_tol
        claims.append(
            Claim(
                f"{init} init: the Eq. 12 scheme emulates GD on the depth-N nets "
                f"(N = {', '.join(map(str, config.depths))}; widths "
                f"{', '.join(map(str, config.widths))}; l2 and l4)",
                f"largest relative deviation scheme vs net{' ' + skip_txt if after else ''}: "
                f"{emu[worst]:.2e} ({worst.rsplit('/', 1)[0]}); final gaps there: net "
                f"{devs[worst.rsplit('/', 1)[0] + '/final_gap']['net']:.3e}, scheme "
                f"{devs[worst.rsplit('/', 1)[0] + '/final_gap']['scheme']:.3e}; over the whole curve: "
                + f"{max(v for k, v in devs.items() if k.startswith(init + '/') and k.endswith('scheme_vs_net')):.2e}",
                (emu[worst] < tol) if (init == "balanced" or config.assess_near_zero) else None,
                quick_note if init == "balanced" or config.assess_near_zero else nz_note,
            )
        )
    if len(config.widths) > 1:
        for init, _ in config.inits:
            wid = {
                k: v
                for k, v in devs.items()
                if k.startswith(init + "/") and k.endswith("/after_skip") and "_vs_width" in k
            }
            fin = {
                k: v
                for k, v in devs.items()
                if k.startswith(init + "/") and k.endswith("/final") and "_vs_width" in k
            }
            worst = max(wid, key=wid.get)
            text = (
                f"{init} init: width has a negligible effect (width {config.widths[-1]} vs "
                f"{config.widths[0]} at the same depth)"
            )
            measured = (
                f"largest relative deviation between the curves {skip_txt}: "
                f"{wid[worst]:.2e} ({worst.split('/')[1]}, {worst.split('/')[2]}); largest "
                f"relative difference of final gaps: {max(fin.values()):.2e}"
            )
            if init == "balanced":
                measured += (
                    " -- expected: a balanced factorisation of a rank-1 W_e has rank-1 "
                    "factors and GD keeps them rank 1, so width 100 runs the width-1 net"
                )
            assess = init == "balanced" or config.assess_near_zero
            claims.append(
                Claim(
                    text,
                    measured,
                    (wid[worst] < config.width_tol) if assess else None,
                    quick_note if assess else nz_note,
                )
            )

    notes = [
        f"Data: {task.source}; features and target standardised; loss (1/m) sum "
        "(1/p)(x^T w - y)^p (the (1/p) of the paper's l_p); no bias.",
        "Initialisations (one row of panels each): "
        + "; ".join(f"{i} with scale {s:g}" for i, s in config.inits)
        + ". 'balanced': the end-to-end vector is Gaussian with this std per entry and the "
        "factors are balanced (Eq. 7, Theorem 1's assumption), so every width starts from "
        "the same end-to-end vector. 'near_zero': i.i.d. Gaussian factor entries with this "
        "std (the paper says only 'near-zero'; at the trainer's default 1e-3 a depth-3 "
        "width-1 net at lr 1e-3 had not moved after 1e4 iterations in our trial, so we "
        "use a larger scale). Each Eq. 12 run starts from the end-to-end vector of the net "
        "it is compared with.",
        f"Iterations: {config.iters} (Fig. 2's horizon is not stated in our copy of the "
        "paper); learning rate 1e-3 for all, as in the paper.",
        "Deviation = max over logged iterations of |gap_a - gap_b| / gap_b. Near-zero init "
        "is only approximately balanced, so its deviations are taken "
        f"{skip_txt} (the whole-curve value is reported too). PASS thresholds: "
        f"{config.emulate_tol:g} (balanced, scheme vs net), {config.near_zero_tol:g} "
        f"(near-zero, scheme vs net), {config.width_tol:g} (widths).",
        "Why near-zero init can fail the emulation: Theorem 1 needs balanced factors "
        "(Eq. 7). i.i.d. N(0, s^2) entries are balanced only up to O(s^2 d) -- for a width-1 "
        "net, ||W_1||^2 ~ d s^2 against s^2 for each scalar, 0.32 vs 0.0025 at s = 0.05, "
        "d = 128, which is not small next to the trained weights -- and near 0 (the "
        "saddle) the net and its Eq. 12 twin escape at different times: the curves have "
        "the same shape, shifted. With a smaller s the imbalance shrinks but the escape "
        "takes far longer (at s = 1e-3 a depth-3 width-1 net had not moved after 1e4 "
        "iterations). The width comparison under near-zero init mixes in the same effect: "
        "the two widths start from different end-to-end vectors.",
    ]
    return ExperimentResult(
        settings={
            "what_was_run": (
                f"GD on depth {', '.join(map(str, config.depths))} nets of width "
                f"{', '.join(map(str, config.widths))} and the matching Eq. 12 runs, lr "
                f"{format_lr(config.lr)}, {config.iters} iterations, l2 and l4 losses, "
                f"inits {', '.join(f'{i} ({s:g})' for i, s in config.inits)}."
            ),
            "data_source": task.source,
            "lr": config.lr,
            "deviations": devs,
        },
        figures=[fig],
        curves=[csv],
        claims=claims,
        notes=notes,
    )
