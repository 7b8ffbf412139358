r"""Claim 1: the spectrum of the end-to-end preconditioner ``P_W`` in closed form.

For ``W = sum_r s_r u_r v_r^T`` (k x d, singular values padded with zeros), the operator
``P_W(G) = sum_{j=1..N} [W W^T]^{(j-1)/N} G [W^T W]^{(N-j)/N}`` (Eq. 10) has the
eigenvectors ``u_r v_{r'}^T`` with eigenvalues::

    K(s_r, s_r') = sum_{j=1..N} s_r^{2(N-j)/N} s_r'^{2(j-1)/N}
                 = (s_r^2 - s_r'^2) / (s_r^{2/N} - s_r'^{2/N})    (s_r != s_r')
                 = N s_r^{2(N-1)/N}                              (s_r == s_r')

where r = 1..k, r' = 1..d (so k*d eigenvalues) and ``0^0 = 1``.

What this experiment checks, on random matrices of several shapes, ranks (incl.
rank-deficient and zero) and repeated singular values, for integer and fractional depths:

1. the eigenvalues of the library's explicit ``preconditioner_matrix(W, N)`` equal the
   formula above, evaluated here independently in numpy (sum form for integer N, ratio
   form for fractional N);
2. for integer N, ``preconditioner_matrix`` equals the definition built term by term,
   ``sum_j [W^T W]^{(N-j)/N} kron [W W^T]^{(j-1)/N}`` with fractional powers by ``eigh``;
3. ``end_to_end_direction(W, G, N)`` (one SVD) equals ``P_W vec(G)``.

Deviations are relative to the largest eigenvalue (resp. the norm of the result).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from depthaccel.atomic import atomic_open
from depthaccel.experiments.context import ExperimentContext
from depthaccel.experiments.results import Claim
from depthaccel.experiments.spec import ExperimentSpec
from depthaccel.preconditioner import end_to_end_direction, preconditioner_matrix
from depthaccel.reporting import finish_figure, pyplot

NAME = "claim1"
TITLE = "Claim 1: the spectrum of the end-to-end preconditioner P_W"
#: what was run, for the report: a template (experiments/spec.py, describe_run)
DESCRIBE = (
    "{case_count} matrix shapes and ranks (rank-deficient, zero and repeated "
    "singular values included) x {config.trials} random matrices x depths "
    "{config.depths:g}, in float64."
)


@dataclass(frozen=True)
class MatrixCase:
    """A random k x d matrix of the given rank; ``repeated`` makes its non-zero singular
    values pairwise equal (1, 1, 2, 2, ...) to exercise the ``s_r == s_r'`` branch."""

    k: int
    d: int
    rank: int
    repeated: bool = False


_CASES = (
    MatrixCase(1, 6, 1),
    MatrixCase(4, 4, 4),
    MatrixCase(3, 5, 3),
    MatrixCase(5, 3, 3),
    MatrixCase(5, 5, 2),
    MatrixCase(4, 6, 2),
    MatrixCase(6, 4, 1),
    MatrixCase(4, 4, 4, repeated=True),
    MatrixCase(5, 3, 0),
)


@dataclass(frozen=True)
class Config:
    cases: tuple[MatrixCase, ...] = _CASES
    depths: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 8.0)
    trials: int = 10
    seed: int = 0
    tolerance: float = 1e-10  # max relative deviation for PASS

    @classmethod
    def quick(cls) -> Config:
        return cls(trials=2)

    @classmethod
    def full(cls) -> Config:
        return cls(trials=20)


def random_matrix(case: MatrixCase, rng: np.random.Generator) -> np.ndarray:
    """A k x d matrix of exact rank ``case.rank`` with singular values in [0.1, 3]
    (pairwise repeated when ``case.repeated``), built from random orthogonal factors."""
    k, d, r = case.k, case.d, case.rank
    if r > min(k, d):
        raise ValueError(f"rank {r} exceeds min(k, d) for {case}")
    U, _ = np.linalg.qr(rng.standard_normal((k, k)))
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    if case.repeated:
        s = np.repeat(rng.uniform(0.1, 3.0, size=(r + 1) // 2), 2)[:r]
    else:
        s = rng.uniform(0.1, 3.0, size=r)
    return (U[:, :r] * s) @ V[:, :r].T


def formula_eigenvalues(W: np.ndarray, depth: float) -> np.ndarray:
    """Claim 1's k*d eigenvalues ``K(s_r, s_r')`` (sorted), evaluated directly in numpy.

    Singular values below ``max(k, d) * eps * s_max`` are set to 0 (the matrix's rank is
    exact; numpy returns round-off there). Integer N: the sum over j with ``0^0 = 1``;
    fractional N: the ratio form, and ``N s^{2(N-1)/N}`` (s the mean) where a and b agree
    to 1e-7 relative (the ratio form cancels catastrophically there).
    """
    k, d = W.shape
    s = np.linalg.svd(W, compute_uv=False)
    if s.size and s[0] > 0:
        s = np.where(s > max(k, d) * np.finfo(float).eps * s[0], s, 0.0)
    a = np.zeros(k)
    b = np.zeros(d)
    a[: s.size] = s
    b[: s.size] = s
    A, B = np.meshgrid(a, b, indexing="ij")
    n = float(depth)
    if n == round(n):
        N = round(n)
        K = sum(A ** (2 * (N - j) / N) * B ** (2 * (j - 1) / N) for j in range(1, N + 1))
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (A**2 - B**2) / (A ** (2 / n) - B ** (2 / n))
        # near-equal pairs (repeated singular values come out of the SVD equal only up
        # to round-off): the diagonal form at the midpoint, exact to O((a - b)^2)
        mid = (A + B) / 2
        diag = n * mid ** (2 * (n - 1) / n)
        K = np.where(np.abs(A - B) <= 1e-7 * np.maximum(A, B), diag, ratio)
    return np.sort(K.ravel())


def _psd_power(M: np.ndarray, q: float, tol: float) -> np.ndarray:
    """``[M]^q`` of a symmetric PSD matrix by eigh; eigenvalues below ``tol`` are 0 and
    ``[M]^0 = I`` (also on the null space)."""
    if q == 0:
        return np.eye(M.shape[0])
    lam, Q = np.linalg.eigh(M)
    lam = np.where(lam > tol, lam, 0.0)
    return (Q * lam**q) @ Q.T


def definition_matrix(W: np.ndarray, depth: int) -> np.ndarray:
    """``P_W = sum_{j=1..N} [W^T W]^{(N-j)/N} kron [W W^T]^{(j-1)/N}`` term by term
    (column-major vec), integer N only."""
    k, d = W.shape
    smax2 = np.linalg.norm(W, 2) ** 2
    tol = max(k, d) * np.finfo(float).eps * max(smax2, 1e-300) * 10
    N = int(depth)
    return sum(
        np.kron(_psd_power(W.T @ W, (N - j) / N, tol), _psd_power(W @ W.T, (j - 1) / N, tol))
        for j in range(1, N + 1)
    )


def check_case(W: np.ndarray, G: np.ndarray, depth: float) -> dict:
    """Relative deviations of (1) the spectrum, (2) the definition (integer N, else NaN),
    (3) ``end_to_end_direction`` against ``P_W vec(G)``; also the sorted eigenvalues
    (``eig``) and formula values (``ref``)."""
    Wt = torch.from_numpy(W)
    P = preconditioner_matrix(Wt, depth).numpy()
    eig = np.sort(np.linalg.eigvalsh((P + P.T) / 2))
    ref = formula_eigenvalues(W, depth)
    scale = max(float(np.abs(ref).max()), 1e-300)
    spec_dev = float(np.abs(eig - ref).max()) / scale if ref.max() > 0 else float(np.abs(eig).max())
    if float(depth) == round(depth):
        Pdef = definition_matrix(W, round(depth))
        def_dev = float(np.abs(P - Pdef).max() / max(np.abs(Pdef).max(), 1e-300))
    else:
        def_dev = float("nan")
    vecG = G.reshape(-1, order="F")
    expect = (P @ vecG).reshape(W.shape, order="F")
    got = end_to_end_direction(Wt, torch.from_numpy(G), depth).numpy()
    act_dev = float(np.abs(got - expect).max() / max(np.abs(expect).max(), 1e-300))
    return {
        "spectrum": spec_dev,
        "definition": def_dev,
        "action": act_dev,
        "eig": eig,
        "ref": ref,
    }


@dataclass
class Deviation:
    """The three relative deviations of one matrix and depth (``definition``: NaN for a
    fractional depth, which has no term-by-term definition check)."""

    k: int
    d: int
    rank: int
    repeated: bool
    depth: float
    spectrum: float
    definition: float
    action: float


@dataclass
class Measured:
    """What claim1 measured: one :class:`Deviation` per matrix and depth, and the
    (depth, formula, eigenvalues) triples the figure plots."""

    quick: bool
    rows: list[Deviation]
    eigenvalues: list[tuple[float, np.ndarray, np.ndarray]]


def measure(config: Config, ctx: ExperimentContext) -> Measured:
    """Check Claim 1 on ``config.trials`` random matrices per case and depth (float64,
    CPU: this is an exactness check; ``ctx.device``/``ctx.dtype`` do not apply)."""
    rng = np.random.default_rng(config.seed)
    rows, pairs = [], []
    for case in config.cases:
        for _ in range(config.trials):
            W = random_matrix(case, rng)
            G = rng.standard_normal(W.shape)
            for depth in config.depths:
                dev = check_case(W, G, depth)
                pairs.append((depth, dev.pop("ref"), dev.pop("eig")))
                rows.append(Deviation(case.k, case.d, case.rank, case.repeated, depth, **dev))
    return Measured(ctx.quick, rows, pairs)


def _worst(rows: list[Deviation], key: str) -> tuple[float, dict]:
    vals = [r for r in rows if np.isfinite(getattr(r, key))]
    r = max(vals, key=lambda r: getattr(r, key))
    where = {"shape": f"{r.k}x{r.d}", "rank": r.rank, "repeated": r.repeated, "depth": r.depth}
    return float(getattr(r, key)), where


def judge(measured: Measured, config: Config) -> list[Claim]:
    """Each of the three checks passes when its largest relative deviation is below
    ``config.tolerance``."""
    tol = config.tolerance
    n = len(measured.rows)
    checks = (
        (
            "spectrum",
            "P_W's eigenvalues are Claim 1's K(s_r, s_r'), for every N",
            "eigenvalues: sum_j s_r^{2(N-j)/N} s_r'^{2(j-1)/N}, r = 1..k, r' = 1..d",
            "eigenvalue",
        ),
        (
            "definition",
            "P_W equals its Kronecker-sum definition (integer N)",
            "P_W is a positive semidefinite preconditioning matrix (Eq. 11)",
            "entry",
        ),
        (
            "action",
            "end_to_end_direction (one SVD) equals P_W vec(G)",
            "Eq. 11: the update is -eta P_W vec(dL/dW)",
            "entry",
        ),
    )
    claims = []
    for key, statement, paper, unit in checks:
        worst, where = _worst(measured.rows, key)
        claims.append(
            Claim.judged(
                statement,
                paper,
                f"max relative deviation {worst:.1e} over {n} matrix/depth pairs",
                worst < tol,
                why=f"the deviation {worst:.1e} exceeds the tolerance {tol:g}",
                details={"worst at": where, "tolerance": tol, "relative to": f"largest {unit}"},
            )
        )
    return claims


def describe_fields(measured: Measured, config: Config) -> dict:
    """Values for ``DESCRIBE``."""
    return {"case_count": len(config.cases)}


def render(measured: Measured, claims: list[Claim], outdir: Path) -> list[Path]:
    csv_path = outdir / "deviations.csv"
    with atomic_open(csv_path, "w") as fh:
        fh.write("k,d,rank,repeated,depth,spectrum_rel_dev,definition_rel_dev,action_rel_dev\n")
        for r in measured.rows:
            fh.write(
                f"{r.k},{r.d},{r.rank},{int(r.repeated)},{r.depth},"
                f"{r.spectrum:.3e},{r.definition:.3e},{r.action:.3e}\n"
            )
    fig = _plot(outdir / "claim1.png", measured.eigenvalues, quick=measured.quick)
    return [fig, csv_path]


NOTES = (
    "Random matrices have singular values uniform in [0.1, 3] and random orthogonal "
    "singular vectors; rank-deficient and zero matrices have exact zeros, which both the "
    "library and the numpy reference threshold at max(k, d) * eps * s_max.",
    "The formula is evaluated in numpy independently of the library's claim1_eigenvalues "
    "(sum form for integer N, ratio form for fractional N); the definition check builds "
    "P_W from eigh-based fractional powers.",
)


def _plot(path: Path, pairs: list[tuple[float, np.ndarray, np.ndarray]], *, quick: bool) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.0))
    depths = sorted({p[0] for p in pairs})
    cmap = plt.get_cmap("viridis")
    lo, hi = np.inf, 0.0
    for i, dep in enumerate(depths):
        f = np.concatenate([p[1] for p in pairs if p[0] == dep])
        m = np.concatenate([p[2] for p in pairs if p[0] == dep])
        keep = f > 0
        color = cmap(i / max(1, len(depths) - 1))
        axes[0].loglog(f[keep], m[keep], ".", ms=3, color=color, label=f"N = {dep:g}")
        rel = np.abs(m - f) / np.maximum(np.abs(f).max(), 1e-300)
        axes[1].semilogy(
            f / max(f.max(), 1e-300),
            np.maximum(rel, 1e-18),
            ".",
            ms=3,
            color=color,
            label=f"N = {dep:g}",
        )
        if keep.any():
            lo, hi = min(lo, f[keep].min()), max(hi, f[keep].max())
    if hi > 0:
        axes[0].plot([lo, hi], [lo, hi], "k--", lw=0.8, label="y = x")
    axes[0].set_xlabel(r"Claim 1 formula $K(s_r, s_{r'})$")
    axes[0].set_ylabel(r"eigenvalue of $P_W$")
    axes[0].set_title(r"spectrum of $P_W$ vs Claim 1")
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("K / max K")
    axes[1].set_ylabel("|eigenvalue - K| / max K (floored at 1e-18)")
    axes[1].set_title("deviation")
    return finish_figure(fig, path, quick)


SPEC = ExperimentSpec(
    NAME,
    "claim1",
    "spectrum of the explicit preconditioner P_W on random (incl. rank-deficient) "
    "matrices vs Claim 1's eigenvalue formula; claims: they agree to round-off",
    title=TITLE,
    cost=(9.0, 2.4),
    config=Config,
)
