r"""Theorem 2: the end-to-end field of Eq. 12/14 is not a gradient field for N > 2.

The field (Eq. 14, single output)::

    F_N(w) = ||w||^{2-2/N} ( g(w) + (N-1) <g(w), w_hat> w_hat ),   F_N(0) = 0,

where g = dL/dw is the gradient of the loss and w_hat = w / ||w||. If F_N were the
gradient of some function, its line integral around every closed curve would vanish.
The proof integrates around the curve Gamma_{r,R} (the paper's Fig. 1): in the plane
spanned by e = g(0)/||g(0)|| and a unit vector f orthogonal to it, with polar angle
theta measured from e,

    out along theta = theta1 from radius r to R  ->  arc at radius R to theta2
    ->  in along theta2 from R to r               ->  arc at radius r back to theta1.

For a constant gradient g = kappa (a linear loss) the integral is, in closed form,

    I_kappa = ||kappa|| (cos theta1 - cos theta2) (R^a - r^a) (N-1)(N-2) / (N a),
    a = 3 - 2/N,

(radial legs give N ||kappa|| cos(theta) (R^a - r^a)/a, arcs ||kappa|| rho^a
(cos theta2 - cos theta1)): non-zero exactly when N > 2; for N = 2 the field
``||w|| kappa + <kappa, w> w/||w||`` is the gradient of ``||w|| <kappa, w>`` (the paper's
footnote), for N = 1 it is kappa itself. A general loss adds a term of order R^{a+1}.

This experiment computes the integral numerically for the l_p regression loss
``L(w) = (1/m) sum (1/p)(x_i^T w - y_i)^p`` on random data, with the library's
``single_output_direction`` as F, by Gauss-Legendre quadrature on each of the four legs
(the integrand is analytic there since r > 0), doubling the number of nodes until two
successive values agree; the difference is the error estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from depthaccel.atomic import atomic_open
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.results import Claim
from depthaccel.experiments.spec import ExperimentSpec
from depthaccel.preconditioner import single_output_direction
from depthaccel.reporting import finish_figure, pyplot

NAME = "thm2"
TITLE = "Theorem 2: the end-to-end field F is not a gradient field for N > 2"
#: what was run, for the report: a template (experiments/spec.py, describe_run)
DESCRIBE = (
    "Line integral of F_N around Gamma_(r,R) for N in {config.depths:g} and R in "
    "[{config.radii}] (r = {config.r_over_R:g} R), float64 Gauss-Legendre "
    "quadrature."
)


@dataclass(frozen=True)
class Config:
    d: int = 5  # dimension of w
    m: int = 50  # examples of the random regression problem
    p: int = 2  # l_p loss of the regression problem
    depths: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 8.0)
    radii: tuple[float, ...] = (0.3, 0.1, 0.03, 0.01)  # outer radius R of Gamma_{r,R}
    r_over_R: float = 0.5
    theta1: float = 0.0
    # a quarter annulus: with theta2 = pi (a half annulus) the linear part of the
    # gradient cancels by symmetry, leaving only the constant part
    theta2: float = math.pi / 2
    nodes_start: int = 16
    nodes_max: int = 4096
    seed: int = 0
    nonzero_factor: float = 100.0  # |I| > this x quadrature error for "non-zero"
    zero_rtol: float = 1e-12  # |I| < this x integral of |F . dw| for "zero"

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(d=10, m=200, radii=(0.3, 0.1, 0.03, 0.01, 0.003, 0.001))


def regression_problem(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """Random data ``X`` (m x d, standard normal) and ``y = X w_true + 0.1 noise``."""
    rng = np.random.default_rng(config.seed)
    X = rng.standard_normal((config.m, config.d))
    w_true = rng.standard_normal(config.d)
    y = X @ w_true + 0.1 * rng.standard_normal(config.m)
    return X, y


def lp_gradient(X: np.ndarray, y: np.ndarray, p: int):
    """``g(w) = (1/m) X^T (Xw - y)^{p-1}`` for w of shape (..., d)."""
    m = X.shape[0]

    def g(w: np.ndarray) -> np.ndarray:
        r = w @ X.T - y
        return (r ** (p - 1)) @ X / m

    return g


def field(grad, depth: float):
    """F_N(w) of Eq. 14 through the library's ``single_output_direction``."""

    def F(w: np.ndarray) -> np.ndarray:
        wt = torch.from_numpy(np.ascontiguousarray(w))
        gt = torch.from_numpy(np.ascontiguousarray(grad(w)))
        return single_output_direction(wt, gt, depth).numpy()

    return F


def _legs(e, f, r, R, t1, t2):
    """The four legs of Gamma_{r,R} as (a, b, point(t), tangent(t)) on [a, b]."""

    def u(t):
        t = np.asarray(t)[..., None]
        return np.cos(t) * e + np.sin(t) * f

    def du(t):
        t = np.asarray(t)[..., None]
        return -np.sin(t) * e + np.cos(t) * f

    return [
        (r, R, lambda s: s[..., None] * u(t1 + 0 * s), lambda s: u(t1 + 0 * s)),
        (t1, t2, lambda t: R * u(t), lambda t: R * du(t)),
        (R, r, lambda s: s[..., None] * u(t2 + 0 * s), lambda s: u(t2 + 0 * s)),
        (t2, t1, lambda t: r * u(t), lambda t: r * du(t)),
    ]


def line_integral(F, e, f, r, R, t1, t2, n: int) -> tuple[float, float]:
    """Gauss-Legendre (n nodes per leg) of the closed line integral of F around
    Gamma_{r,R}, and the same quadrature of ``|F . dw|`` (the scale for "zero")."""
    x, wq = np.polynomial.legendre.leggauss(n)
    total = 0.0
    scale = 0.0
    for a, b, point, tangent in _legs(e, f, r, R, t1, t2):
        t = (a + b) / 2 + (b - a) / 2 * x
        integrand = np.sum(F(point(t)) * tangent(t), axis=-1)
        total += (b - a) / 2 * float(np.dot(wq, integrand))
        scale += abs(b - a) / 2 * float(np.dot(wq, np.abs(integrand)))
    return total, scale


def converged_integral(F, e, f, r, R, t1, t2, n0: int, n_max: int) -> dict[str, float]:
    """Double the nodes from ``n0`` until successive values agree to round-off (or
    ``n_max``); returns the value, the error estimate |I_2n - I_n|, the scale and n."""
    prev, _ = line_integral(F, e, f, r, R, t1, t2, n0)
    n = n0
    while True:
        n *= 2
        cur, scale = line_integral(F, e, f, r, R, t1, t2, n)
        err = abs(cur - prev)
        if err <= 1e-15 * scale or n >= n_max:
            return {"value": cur, "error": err, "scale": scale, "nodes": n}
        prev = cur


def constant_field_value(kappa_norm: float, depth: float, r: float, R: float, t1, t2) -> float:
    """Closed form of the integral for a constant gradient (see the module docstring)."""
    n = float(depth)
    a = 3.0 - 2.0 / n
    return (
        kappa_norm * (math.cos(t1) - math.cos(t2)) * (R**a - r**a) * (n - 1.0) * (n - 2.0) / (n * a)
    )


@dataclass
class Measured:
    """What thm2 measured. ``rows``: one per depth and outer radius R, with ``r``, the
    quadrature results (``value``, ``error``, ``scale`` = integral of |F.dw|, ``nodes``)
    of the regression loss (``regression``) and of its constant gradient g(0)
    (``linear``), and ``closed_form_linear``. ``e``, ``f``: the plane of the curve;
    ``X``, ``y``: the regression problem (for the figure's field)."""

    quick: bool
    config: Config
    grad_norm: float
    e: np.ndarray
    f: np.ndarray
    X: np.ndarray
    y: np.ndarray
    rows: list[dict]


def measure(config: Config, ctx: ExperimentContext) -> Measured:
    """Integrate F_N around Gamma_{r,R} for each depth and radius (float64, CPU)."""
    X, y = regression_problem(config)
    grad = lp_gradient(X, y, config.p)
    kappa = grad(np.zeros(config.d))
    kn = float(np.linalg.norm(kappa))
    if kn == 0:
        raise ValueError("the loss has zero gradient at w = 0: Theorem 2 does not apply")
    e = kappa / kn
    rng = np.random.default_rng(config.seed + 1)
    f = rng.standard_normal(config.d)
    f -= (f @ e) * e
    f /= np.linalg.norm(f)
    const_grad = lambda w: np.broadcast_to(kappa, np.shape(w)).copy()
    t1, t2 = config.theta1, config.theta2

    rows = []
    for depth in config.depths:
        for R in config.radii:
            r = config.r_over_R * R
            quad = dict(n0=config.nodes_start, n_max=config.nodes_max)
            reg = converged_integral(field(grad, depth), e, f, r, R, t1, t2, **quad)
            lin = converged_integral(field(const_grad, depth), e, f, r, R, t1, t2, **quad)
            rows.append(
                {
                    "depth": depth,
                    "R": R,
                    "r": r,
                    "regression": reg,
                    "linear": lin,
                    "closed_form_linear": constant_field_value(kn, depth, r, R, t1, t2),
                }
            )
    return Measured(ctx.quick, config, kn, e, f, X, y, rows)


_PAPER = "there exists no function (of W) whose gradient field is F (Theorem 2, N > 2)"


def judge(measured: Measured, config: Config) -> list[Claim]:
    """Non-zero for N > 2 (|I| above 100x its quadrature error and 1e-9 of
    integral|F.dw| at every R); zero to 1e-12 of integral|F.dw| for N = 1 and for N = 2
    with a linear loss; the quadrature matches the closed form; the leading term."""
    rows = measured.rows

    def at(depth, R=None):
        sel = [row for row in rows if row["depth"] == depth]
        return sel if R is None else [row for row in sel if row["R"] == R][0]

    R_main = config.radii[min(1, len(config.radii) - 1)]
    R_small = min(config.radii)
    claims = []
    big = [dep for dep in config.depths if dep > 2]
    for dep in big:
        row = at(dep, R_main)["regression"]
        ok = all(
            abs(x["regression"]["value"])
            > config.nonzero_factor * max(x["regression"]["error"], 1e-300)
            and abs(x["regression"]["value"]) > 1e3 * config.zero_rtol * x["regression"]["scale"]
            for x in at(dep)
        )
        claims.append(
            Claim.judged(
                f"N = {dep:g}: F's line integral around Gamma_(r,R) is non-zero",
                _PAPER,
                f"I = {row['value']:.3e} +- {row['error']:.0e} at R = {R_main:g}",
                ok,
                why="at some R the integral is within round-off or quadrature error of 0",
                details={
                    "|I| / integral|F.dw| at R": {
                        f"{x['R']:g}": abs(x["regression"]["value"]) / x["regression"]["scale"]
                        for x in at(dep)
                    },
                    "r": f"{config.r_over_R:g} R",
                },
            )
        )
    zero_checks = (
        (
            1.0,
            "regression",
            "Control, N = 1 (F = dL/dw is a gradient): the integral is zero",
            "the integral of a gradient along every closed curve is 0",
        ),
        (
            2.0,
            "linear",
            "N = 2, linear loss: F = grad(||w|| <kappa, w>), the integral is zero",
            "footnote 1: for N = 2 F is a gradient field under extra assumptions on L",
        ),
    )
    for depth, loss, statement, paper in zero_checks:
        if depth in config.depths:
            worst = max(abs(x[loss]["value"]) / x[loss]["scale"] for x in at(depth))
            claims.append(
                Claim.judged(
                    statement,
                    paper,
                    f"max |I| / integral|F.dw| = {worst:.1e}",
                    worst < config.zero_rtol,
                    why=f"{worst:.1e} is above the round-off bound {config.zero_rtol:g}",
                    details={"radii": list(config.radii), "bound": config.zero_rtol},
                )
            )
    qerr = max(
        abs(x["linear"]["value"] - x["closed_form_linear"]) / x["linear"]["scale"] for x in rows
    )
    claims.append(
        Claim.judged(
            "Quadrature check: a constant gradient gives the closed form",
            "||kappa|| (cos t1 - cos t2)(R^a - r^a)(N-1)(N-2)/(N a), a = 3 - 2/N",
            f"max |I - closed form| / integral|F.dw| = {qerr:.1e}",
            qerr < 1e-12,
            why=f"the quadrature misses the closed form by {qerr:.1e}",
        )
    )
    if big:
        lead = {}
        for dep in big:
            x = at(dep, R_small)
            lead[f"N={dep:g}"] = abs(x["regression"]["value"] / x["closed_form_linear"] - 1.0)
        worst = max(lead.values())
        claims.append(
            Claim.judged(
                "As R -> 0 the integral for N > 2 approaches the constant-gradient value",
                "proof of Theorem 2: the constant part of dL/dW dominates near W = 0",
                f"max |I / I_kappa - 1| = {worst:.1e} at R = {R_small:g}",
                worst < 0.05,
                why=f"at R = {R_small:g} the integral is {worst:.0%} off the leading term",
                details={"|I / I_kappa - 1|": lead},
            )
        )
    return claims


def settings(measured: Measured, config: Config) -> dict:
    return {
        "grad_norm_at_0": measured.grad_norm,
        "integrals": [
            {
                "depth": x["depth"],
                "R": x["R"],
                "r": x["r"],
                "I": x["regression"]["value"],
                "quadrature_error": x["regression"]["error"],
                "nodes": x["regression"]["nodes"],
                "I_constant_gradient": x["linear"]["value"],
                "I_closed_form": x["closed_form_linear"],
            }
            for x in measured.rows
        ],
    }


def render(measured: Measured, claims: list[Claim], outdir: Path) -> list[Path]:
    config = measured.config
    csv_path = outdir / "integrals.csv"
    with atomic_open(csv_path, "w") as fh:
        fh.write(
            "depth,R,r,I_regression,err_regression,scale_regression,nodes,"
            "I_constant_gradient,I_closed_form\n"
        )
        for x in measured.rows:
            g, lin = x["regression"], x["linear"]
            fh.write(
                f"{x['depth']:g},{x['R']:g},{x['r']:g},{g['value']:.17g},{g['error']:.3e},"
                f"{g['scale']:.17g},{g['nodes']},{lin['value']:.17g},"
                f"{x['closed_form_linear']:.17g}\n"
            )
    grad = lp_gradient(measured.X, measured.y, config.p)
    fig = _plot(
        outdir / "thm2.png", measured.rows, config, measured.e, measured.f, grad, measured.quick
    )
    return [fig, csv_path]


NOTES = (
    "Loss: l_p regression on random data, X m x d standard normal, y = X w_true + 0.1 "
    "noise (see settings.json for m, d, p, seed and ||g(0)||).",
    "Curve: the paper's Gamma_(r,R) (Fig. 1) in the plane of e = g(0)/||g(0)|| and a random "
    "unit f orthogonal to e. Quadrature: Gauss-Legendre per leg, nodes doubled until "
    "successive values agree to 1e-15 x integral|F.dw|; the error is |I_2n - I_n|.",
    "Theorem 2 is for N > 2; the closed form shows why N = 2 is special: the constant part "
    "of the gradient contributes (N-1)(N-2) = 0. With the quadratic regression loss the "
    "N = 2 integral is non-zero but of higher order in R (integrals.csv), consistent with "
    "the paper's footnote that N = 2 needs extra assumptions on L.",
    "Choice of angles: a quarter annulus (0 to pi/2). On a half annulus the linear part of "
    "a quadratic loss's gradient cancels by symmetry, so N = 2 would show 0 there even for "
    "a quadratic loss.",
)


def _plot(path: Path, rows, config: Config, e, f, grad, quick: bool = False) -> Path:
    plt = pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10.4, 4.2))
    # left: the curve and F_3 in the (e, f) plane (components of F along e and f)
    R = config.radii[min(1, len(config.radii) - 1)]
    r = config.r_over_R * R
    for a, b, point, _ in _legs(e, f, r, R, config.theta1, config.theta2):
        pts = point(np.linspace(a, b, 200))
        ax0.plot(pts @ e, pts @ f, "k-", lw=1.2)
    gx, gy = np.meshgrid(np.linspace(-1.2 * R, 1.2 * R, 15), np.linspace(-0.3 * R, 1.2 * R, 12))
    W = gx[..., None] * e + gy[..., None] * f
    F3 = field(grad, 3.0)(W.reshape(-1, len(e))).reshape(W.shape)
    ax0.quiver(gx, gy, -(F3 @ e), -(F3 @ f), color="tab:blue", alpha=0.7)
    ax0.plot([0], [0], "ro", ms=4)
    ax0.set_aspect("equal")
    ax0.set_xlabel("along e = g(0)/||g(0)||")
    ax0.set_ylabel("along f (orthogonal)")
    ax0.set_title(f"Gamma_(r,R), R = {R:g}, and -F_3 (update direction)")
    # right: |I| against R per depth, with the constant-gradient closed form
    cmap = plt.get_cmap("tab10")
    for i, dep in enumerate(config.depths):
        sel = [x for x in rows if x["depth"] == dep]
        Rs = np.array([x["R"] for x in sel])
        vals = np.array([abs(x["regression"]["value"]) for x in sel])
        errs = np.array([x["regression"]["error"] for x in sel])
        floor = np.maximum(vals, 1e-19)
        ax1.loglog(Rs, floor, "o-", color=cmap(i), label=f"N = {dep:g}: |I|")
        ax1.loglog(Rs, np.maximum(errs, 1e-19), ":", color=cmap(i), alpha=0.5)
        cf = np.array([abs(x["closed_form_linear"]) for x in sel])
        if (cf > 0).all():
            ax1.loglog(Rs, cf, "--", color=cmap(i), alpha=0.6, lw=1)
    ax1.set_xlabel(f"outer radius R (r = {config.r_over_R:.2g} R)")
    ax1.set_ylabel(r"$|\oint F_N \cdot dw|$ (floored at 1e-19)")
    ax1.set_ylim(bottom=3e-20)
    ax1.set_title("|I| (solid), quadrature error (dotted),\nconstant-gradient closed form (dashed)")
    ax1.legend(fontsize=7)
    return finish_figure(fig, path, quick)


SPEC = ExperimentSpec(
    NAME,
    "thm2",
    "line integral of Eq. 14's field F around the paper's closed curve near 0; "
    "claims: non-zero for N >= 3, zero to round-off for N = 1 (a true gradient)",
    title=TITLE,
    cost=(3.0, 1.7),
    config=Config,
)
