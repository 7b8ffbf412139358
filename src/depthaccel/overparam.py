r"""Overparameterize any PyTorch model by depth, and collapse it back.

``overparameterize(model, depth=N)`` replaces the weight of each selected layer by a
product of N factors (the paper's depth-N linear network, Section 2)::

    W = W_N W_{N-1} ... W_1,        W_j of shape (h_j, h_{j-1}),  h_0 = in, h_N = out,

using :mod:`torch.nn.utils.parametrize`: the layer keeps its class interface (``layer.weight``
is the product, recomputed on access), and the factors are ordinary Parameters at
``layer.parametrizations.weight.original0 .. original{N-1}`` (``original0 = W_1``), so any
optimizer sees them and ``state_dict`` saves them. Biases are left alone. The model
computes the same family of functions as before (depth adds no expressiveness), but
gradient descent on the factors follows the end-to-end rule of Eq. 10.

Convolutions (``Conv1d/2d/3d``, ``groups == 1``) become the original k x k kernel with
``h_1`` output channels followed by N-1 1 x 1 convolutions; equivalently their weight is
``W_N ... W_2 . reshape(W_1, (h_1, in * kh * kw))`` reshaped back to
``(out, in, kh, kw)``. Stride, padding and dilation are unchanged because the layer itself
is unchanged: only its weight is a product.

``collapse(model)`` removes the factorization again
(``parametrize.remove_parametrizations(..., leave_parametrized=True)``): each layer is a
plain ``nn.Linear`` / ``nn.Conv2d`` whose weight is the current product.

Initializations (``init=``):

- ``"preserve"``: balanced factors of the existing weight via its SVD, so the model
  computes the same function (to round-off). With ``W = U S V^T`` truncated to its
  numerical rank r and ``P_j = I[:h_j, :r]`` (:func:`depthaccel.nets.balanced_factors`)::

      W_1 = P_1 S^{1/N} V^T,   W_j = P_j S^{1/N} P_{j-1}^T,   W_N = U S^{1/N} P_{N-1}^T,

  which satisfies the balancedness condition of Eq. 7, ``W_{j+1}^T W_{j+1} = W_j W_j^T``,
  exactly in exact arithmetic. Needs every hidden width >= rank(W) (ValueError otherwise).
  Hidden units beyond r start at zero; under plain gradient descent they stay at zero
  (a saddle, as the paper's Section 5 explains for zero singular values).
- ``"random"``: fresh factors, each drawn like PyTorch's default ``nn.Linear`` /
  ``nn.ConvNd`` weight for its own shape: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
  (kaiming-uniform with a = sqrt(5)), with ``fan_in = h_{j-1}`` (``in * kh * kw`` for the
  first factor). With ``scale`` given, every entry is drawn from ``N(0, scale^2)`` instead
  (the paper's near-zero init). The original weight is discarded.
- ``"identity"``: the paper's "linear residual" near-identity init: every factor is a
  (padded) identity ``I[:h_j, :h_{j-1}]``; for a convolution the first factor is a Dirac
  kernel (``nn.init.dirac_``: the centre tap of channel i -> channel i). The product is
  then ``I[:out, :in]`` (Dirac for conv), NOT the original weight, which is discarded.
  With ``scale`` given, ``N(0, scale^2)`` noise is added to every entry.

Hidden widths (``hidden=``, the same for all N-1 inner dimensions of a layer): ``"out"``
(the layer's output width, the paper's MNIST choice), ``"min"`` (``min(out, in * kh * kw)``,
the smallest that keeps full expressiveness), or an int.

Layer selection (``include=``, ``exclude=``): each entry is either a supported layer type
name (``"Linear"``, ``"Conv1d"``, ``"Conv2d"``, ``"Conv3d"``; matched with ``isinstance``,
so subclasses count), or a module-name pattern matched with :func:`fnmatch.fnmatchcase`
against the qualified name from ``model.named_modules()`` (``"features.0"``,
``"encoder.*"``, ``"fc?"``); a pattern also selects everything below a matching module
(``"encoder"`` matches ``"encoder.0"``). A layer is overparameterized iff it is of a
supported type, matches at least one ``include`` entry and no ``exclude`` entry. A string
that is neither a supported type name nor a pattern matching any module name is a
ValueError (it catches typos such as ``"Conv2D"``).

Refusals (``ValueError``, raised before ANY layer is changed, so a refused call leaves the
model exactly as it was; should registration still fail, the layers already changed are
restored): an unsupported layer (``ConvTranspose2d``, ``Bilinear``, ``LSTM``, ...) named
explicitly by type, type name or a pattern that matches that module's own name; an include
pattern that selects no supported layer; a selected weight that is tied to another
parameter of the model (e.g. a Linear head sharing an Embedding's weight: factoring one
side would silently break the tie); a weight under an old-API ``torch.nn.utils.weight_norm``
/ ``spectral_norm`` hook (the weight is recomputed from ``weight_g``/``weight_v`` or
``weight_orig`` before each forward); grouped convolutions, lazy, non-float or already
parametrized weights.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from depthaccel.nets import balanced_factors

__all__ = [
    "LayerChange",
    "OverparamSummary",
    "ProductWeight",
    "SUPPORTED_LAYERS",
    "collapse",
    "factors",
    "overparameterize",
]

SUPPORTED_LAYERS: dict[str, type[nn.Module]] = {
    "Linear": nn.Linear,
    "Conv1d": nn.Conv1d,
    "Conv2d": nn.Conv2d,
    "Conv3d": nn.Conv3d,
}
_INITS = ("preserve", "random", "identity")
_HIDDEN_NAMES = ("out", "min")


class ProductWeight(nn.Module):
    r"""Parametrization ``weight = W_N ... W_2 . W_1`` (Eq. 1's end-to-end matrix).

    ``forward(W_1, ..., W_N)`` returns the product reshaped to ``(out, *in_shape)``,
    where:
        W_1: (h_1, *in_shape) -- ``in_shape = (in,)`` for Linear, ``(in, kh, kw)`` for
        Conv2d, flattened to (h_1, prod(in_shape)) for the product;
        W_j: (h_j, h_{j-1}) for j >= 2, h_N = out.
    ``right_inverse(W)`` returns balanced factors of ``W`` (``nets.balanced_factors``), so
    assigning ``layer.weight = W`` re-factors W exactly; at registration it returns the
    ``initial`` factors instead when they are given (``init='random'/'identity'``).
    """

    def __init__(
        self,
        out_features: int,
        in_shape: Sequence[int],
        depth: int,
        hidden: int,
        initial: Sequence[torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.out_features = int(out_features)
        self.in_shape = tuple(int(d) for d in in_shape)
        self.depth = int(depth)
        self.hidden = int(hidden)
        self._initial = None if initial is None else tuple(initial)

    @property
    def in_flat(self) -> int:
        return math.prod(self.in_shape)

    def factor_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of W_1 .. W_N."""
        if self.depth == 1:
            return [(self.out_features, *self.in_shape)]
        h = self.hidden
        shapes: list[tuple[int, ...]] = [(h, *self.in_shape)]
        shapes += [(h, h)] * (self.depth - 2)
        shapes.append((self.out_features, h))
        return shapes

    def forward(self, *factors: torch.Tensor) -> torch.Tensor:
        first = factors[0].reshape(factors[0].shape[0], -1)
        if len(factors) == 1:
            prod = first
        else:
            # multi_dot picks the cheapest association (W_1 is the wide factor).
            prod = torch.linalg.multi_dot([*reversed(factors[1:]), first])
        return prod.reshape(self.out_features, *self.in_shape)

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self._initial is not None:
            initial, self._initial = self._initial, None
            return initial
        flat = weight.reshape(self.out_features, self.in_flat)
        factors = balanced_factors(flat.detach(), self.depth, self.hidden)
        factors[0] = factors[0].reshape(-1, *self.in_shape)
        return tuple(factors)

    def extra_repr(self) -> str:
        return f"depth={self.depth}, shapes={self.factor_shapes()}"


@dataclass(frozen=True)
class LayerChange:
    """One overparameterized layer: its name, type, weight shape and factor shapes."""

    name: str
    layer_type: str
    weight_shape: tuple[int, ...]
    factor_shapes: tuple[tuple[int, ...], ...]

    @property
    def params_before(self) -> int:
        return math.prod(self.weight_shape)

    @property
    def params_after(self) -> int:
        return sum(math.prod(s) for s in self.factor_shapes)


@dataclass(frozen=True)
class OverparamSummary:
    """What ``overparameterize`` changed; ``params_*`` count the whole model's parameters."""

    depth: int
    hidden: str | int
    init: str
    layers: tuple[LayerChange, ...]
    params_before: int
    params_after: int

    def __str__(self) -> str:
        lines = [
            f"overparameterize: depth={self.depth}, hidden={self.hidden!r}, init={self.init!r}, "
            f"{len(self.layers)} layer(s) changed"
        ]
        width = max([len(c.name or "<model>") for c in self.layers] + [5])
        for c in self.layers:
            shapes = " -> ".join("x".join(map(str, s)) for s in c.factor_shapes)
            lines.append(
                f"  {c.name or '<model>':<{width}}  {c.layer_type:<6}  "
                f"{'x'.join(map(str, c.weight_shape))} = [{shapes}]  "
                f"{c.params_before:,} -> {c.params_after:,} params"
            )
        ratio = self.params_after / self.params_before if self.params_before else float("nan")
        lines.append(
            f"  model parameters: {self.params_before:,} -> {self.params_after:,} ({ratio:.3f}x)"
        )
        return "\n".join(lines)


def _count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _as_entries(arg: str | type | Iterable[str | type], what: str) -> list[str | type]:
    if isinstance(arg, str | type):
        return [arg]
    entries = list(arg)
    for e in entries:
        if not isinstance(e, str | type):
            raise ValueError(f"{what} entries must be strings or layer classes, got {e!r}")
    return entries


def _name_matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


def _make_matcher(entries: list[str | type], names: list[str], what: str):
    types: list[type] = []
    patterns: list[str] = []
    for e in entries:
        if isinstance(e, type):
            if not any(issubclass(e, t) for t in SUPPORTED_LAYERS.values()):
                raise ValueError(
                    f"{what}: unsupported layer class {e.__name__}; supported: "
                    f"{', '.join(SUPPORTED_LAYERS)}"
                )
            types.append(e)
        elif e in SUPPORTED_LAYERS:
            types.append(SUPPORTED_LAYERS[e])
        elif any(_name_matches(n, e) for n in names):
            patterns.append(e)
        elif isinstance(getattr(nn, e, None), type) and issubclass(getattr(nn, e), nn.Module):
            raise ValueError(
                f"{what}: unsupported layer type {e!r}; supported: {', '.join(SUPPORTED_LAYERS)}"
            )
        else:
            raise ValueError(
                f"{what}: {e!r} is neither a supported layer type "
                f"({', '.join(SUPPORTED_LAYERS)}) nor a module-name pattern matching any "
                f"module of the model (names look like {names[1:4] or names})"
            )

    def matches(name: str, module: nn.Module) -> bool:
        return isinstance(module, tuple(types)) or any(_name_matches(name, p) for p in patterns)

    return matches, patterns


def _check_explicit_patterns(patterns: list[str], modules: list[tuple[str, nn.Module]]) -> None:
    """Refuse include patterns that name unsupported layers or select no supported layer.

    A module whose own name matches a pattern and that holds parameters of its own but is
    not a supported type (``ConvTranspose2d``, ``Bilinear``, ``LSTM``, ...) was asked for
    explicitly: silently skipping it would report "0 layers changed".
    """
    supported = tuple(SUPPORTED_LAYERS.values())
    for p in patterns:
        hit_supported = False
        for name, m in modules:
            if not _name_matches(name, p):
                continue
            if isinstance(m, supported):
                hit_supported = True
            elif fnmatch.fnmatchcase(name, p) and any(True for _ in m.parameters(recurse=False)):
                raise ValueError(
                    f"include: {p!r} selects layer {name or '<model>'!r} "
                    f"({type(m).__name__}), which overparameterize does not support; "
                    f"supported: {', '.join(SUPPORTED_LAYERS)} (exclude it or select its "
                    "supported sublayers)"
                )
        if not hit_supported:
            found = sorted({type(m).__name__ for n, m in modules if _name_matches(n, p)})
            raise ValueError(
                f"include: {p!r} matches no supported layer (it matches {', '.join(found)}); "
                f"supported: {', '.join(SUPPORTED_LAYERS)}"
            )


def _old_api_hook(layer: nn.Module) -> str | None:
    """Name of an old-API weight reparametrization hook on ``layer`` (weight_norm etc.)."""
    for hook in layer._forward_pre_hooks.values():
        cls = type(hook)
        if cls.__module__.startswith("torch.nn.utils.") and cls.__name__ in (
            "WeightNorm",
            "SpectralNorm",
        ):
            return {"WeightNorm": "weight_norm", "SpectralNorm": "spectral_norm"}[cls.__name__]
    return None


def _layer_geometry(name: str, layer: nn.Module) -> tuple[int, tuple[int, ...]]:
    """(out, in_shape) of a supported layer's weight; errors for unsupported settings."""
    label = f"layer {name or '<model>'!r} ({type(layer).__name__})"
    weight = getattr(layer, "weight", None)
    if isinstance(weight, nn.parameter.UninitializedParameter):
        raise ValueError(f"{label} is lazy and not initialized yet; run one forward pass first")
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"{label} has no weight tensor")
    if parametrize.is_parametrized(layer, "weight"):
        already = any(isinstance(p, ProductWeight) for p in layer.parametrizations.weight)
        raise ValueError(
            f"{label} is already "
            + ("overparameterized; call collapse() first" if already else "parametrized")
        )
    if isinstance(layer, nn.modules.conv._ConvNd) and layer.groups != 1:
        raise ValueError(
            f"{label} has groups={layer.groups}; only groups == 1 convolutions can be "
            "overparameterized (exclude it)"
        )
    hook = _old_api_hook(layer)
    if hook is not None:
        raise ValueError(
            f"{label} has an old-API torch.nn.utils.{hook} hook (its weight is recomputed "
            f"before every forward); remove it first (torch.nn.utils.remove_{hook}) or "
            "exclude this layer"
        )
    if not isinstance(layer._parameters.get("weight"), nn.Parameter):
        raise ValueError(f"{label}: its weight is not a Parameter of the layer")
    if not weight.is_floating_point():
        raise ValueError(f"{label} has a non-floating weight ({weight.dtype})")
    return weight.shape[0], tuple(weight.shape[1:])


def _resolve_hidden(hidden: str | int, out_f: int, in_flat: int) -> int:
    if isinstance(hidden, bool) or not isinstance(hidden, int | str):
        raise ValueError(f"hidden must be 'out', 'min' or a positive int, got {hidden!r}")
    if hidden == "out":
        return out_f
    if hidden == "min":
        return min(out_f, in_flat)
    if isinstance(hidden, str):
        raise ValueError(f"hidden must be 'out', 'min' or a positive int, got {hidden!r}")
    if hidden < 1:
        raise ValueError(f"hidden width must be >= 1, got {hidden}")
    return hidden


def _initial_factors(
    pw: ProductWeight,
    init: str,
    like: torch.Tensor,
    generator: torch.Generator | None,
    scale: float | None,
    is_conv: bool,
) -> tuple[torch.Tensor, ...] | None:
    if init == "preserve":
        return None
    kw = {"dtype": like.dtype, "device": like.device}
    factors = []
    for j, shape in enumerate(pw.factor_shapes()):
        if init == "random":
            if scale is not None:
                f = torch.randn(shape, generator=generator, **kw) * scale
            else:
                bound = 1.0 / math.sqrt(math.prod(shape[1:]))
                f = (torch.rand(shape, generator=generator, **kw) * 2 - 1) * bound
        else:  # identity
            if j == 0 and is_conv:
                f = nn.init.dirac_(torch.empty(shape, **kw))
            else:
                f = torch.eye(shape[0], math.prod(shape[1:]), **kw).reshape(shape)
            if scale is not None:
                f = f + torch.randn(shape, generator=generator, **kw) * scale
        factors.append(f)
    return tuple(factors)


def _refuse_torchscript(model: nn.Module) -> None:
    """A TorchScript module (``torch.jit.script`` / ``trace``) holding a layer that would
    be changed cannot be reparametrized: refuse it instead of changing nothing."""
    for name, m in model.named_modules():
        if isinstance(m, torch.jit.ScriptModule) and (
            getattr(m, "original_name", None) in SUPPORTED_LAYERS
            or any(getattr(c, "original_name", None) in SUPPORTED_LAYERS for c in m.modules())
        ):
            where = "the model" if not name else f"submodule {name!r}"
            raise ValueError(
                f"{where} is a TorchScript module (torch.jit.script or trace), whose layers "
                "cannot be reparametrized: overparameterize the eager model, then script it"
            )


def overparameterize(
    model: nn.Module,
    depth: int = 2,
    hidden: str | int = "out",
    init: str = "preserve",
    include: str | type | Iterable[str | type] = ("Linear",),
    exclude: str | type | Iterable[str | type] = (),
    generator: torch.Generator | None = None,
    scale: float | None = None,
) -> tuple[nn.Module, OverparamSummary]:
    r"""Replace each selected layer's weight by a product of ``depth`` factors, in place.

    ``layer.weight = W_N ... W_1`` (a ``torch.nn.utils.parametrize`` parametrization,
    :class:`ProductWeight`); the factors are the Parameters
    ``layer.parametrizations.weight.original0 .. original{N-1}`` (W_1 first).

    Args:
        model: any module (modified in place; the root itself may be a layer).
        depth: N >= 1 factors per layer (1 wraps the weight in one factor: a no-op
            apart from the parameter names).
        hidden: inner width of every factor: ``"out"`` (layer output width), ``"min"``
            (``min(out, in*kh*kw)``) or an int >= 1.
        init: ``"preserve"`` (balanced SVD factors, same function), ``"random"`` (default
            PyTorch init per factor, or ``N(0, scale^2)``) or ``"identity"`` (padded
            identities / Dirac, plus ``N(0, scale^2)`` noise if ``scale``); see the module
            docstring.
        include, exclude: layer type names (``"Linear"``, ``"Conv1d"``, ``"Conv2d"``,
            ``"Conv3d"``), layer classes, or module-name glob patterns.
        generator: random generator for ``"random"`` and the ``scale`` noise.
        scale: see ``init``; must be > 0 when given; not allowed with ``"preserve"``.

    Returns:
        ``(model, summary)``: the same model object, and an :class:`OverparamSummary`.

    Raises:
        ValueError: bad arguments, or a TorchScript model (``torch.jit.script`` /
            ``trace``): overparameterize the eager model, then script it.

    Note: the parameters change, so create the optimizer after this call.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an int >= 1, got {depth!r}")
    if init not in _INITS:
        raise ValueError(f"init must be one of {_INITS}, got {init!r}")
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0 (or None), got {scale!r}")
    if scale is not None and init == "preserve":
        raise ValueError("scale has no effect with init='preserve' (the function is kept exactly)")
    _resolve_hidden(hidden, 1, 1)  # validate early, before touching the model
    _refuse_torchscript(model)

    modules = list(model.named_modules())
    names = [n for n, _ in modules]
    inc, inc_patterns = _make_matcher(_as_entries(include, "include"), names, "include")
    exc, _ = _make_matcher(_as_entries(exclude, "exclude"), names, "exclude")
    supported = tuple(SUPPORTED_LAYERS.values())
    _check_explicit_patterns(inc_patterns, modules)
    selected = [
        (n, m) for n, m in modules if isinstance(m, supported) and inc(n, m) and not exc(n, m)
    ]

    # Validate everything before changing anything, so an error leaves the model intact.
    owners: dict[int, list[str]] = {}
    for pname, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(pname)
    plans = []
    for name, layer in selected:
        out_f, in_shape = _layer_geometry(name, layer)
        own = f"{name}.weight" if name else "weight"
        others = [o for o in owners.get(id(layer.weight), []) if o != own]
        if others:
            raise ValueError(
                f"layer {name or '<model>'!r} shares its weight with {', '.join(others)} "
                "(tied weights); factoring it would silently break the tie, so it is not "
                "supported (exclude this layer)"
            )
        in_flat = math.prod(in_shape)
        h = _resolve_hidden(hidden, out_f, in_flat)
        pw = ProductWeight(out_f, in_shape, depth, h)
        if init == "preserve":
            try:
                factors = pw.right_inverse(layer.weight)
            except ValueError as err:
                raise ValueError(f"layer {name or '<model>'!r}: {err}") from None
        else:
            is_conv = isinstance(layer, nn.modules.conv._ConvNd)
            factors = _initial_factors(pw, init, layer.weight, generator, scale, is_conv)
        plans.append((name, layer, pw, factors))

    params_before = _count_params(model)
    changes = []
    done: list[tuple[nn.Module, nn.Parameter, list[str]]] = []
    try:
        for name, layer, pw, factors in plans:
            pw._initial = factors
            shape = tuple(layer.weight.shape)
            original = layer._parameters["weight"]
            order = list(layer._parameters)
            if parametrize.is_parametrized(layer):  # another tensor (e.g. bias) is parametrized
                _own_class(layer)
            parametrize.register_parametrization(layer, "weight", pw)
            done.append((layer, original, order))
            changes.append(
                LayerChange(
                    name=name,
                    layer_type=parametrize.type_before_parametrizations(layer).__name__,
                    weight_shape=shape,
                    factor_shapes=tuple(pw.factor_shapes()),
                )
            )
    except Exception:
        for layer, original, order in reversed(done):  # put the original Parameters back
            _own_class(layer)
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
            rest = dict(layer._parameters)
            rest["weight"] = original
            layer._parameters.clear()
            layer._parameters.update((k, rest[k]) for k in order)
        raise
    summary = OverparamSummary(
        depth=depth,
        hidden=hidden,
        init=init,
        layers=tuple(changes),
        params_before=params_before,
        params_after=_count_params(model),
    )
    return model, summary


def _own_class(module: nn.Module) -> None:
    """Give a parametrized module a private copy of its injected ``Parametrized*`` class.

    ``copy.deepcopy`` of a parametrized module shares that class with the original, and
    ``remove_parametrizations`` / ``register_parametrization`` edit the class (they delete
    or add the property), which would break the other copy.
    """
    cls = module.__class__
    own = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, own)


def factors(module: nn.Module) -> list[torch.Tensor] | None:
    r"""The factors ``[W_1, ..., W_N]`` of a layer overparameterized by
    :func:`overparameterize` (its end-to-end weight is ``W_N ... W_1``, Eq. 1), or None for
    a layer whose weight is not such a product.

    The tensors are the layer's Parameters themselves (not copies): an optimizer updates
    them, and writing to them under ``torch.no_grad()`` re-initialises the factors.
    """
    if not parametrize.is_parametrized(module, "weight"):
        return None
    plist = module.parametrizations.weight
    if len(plist) != 1 or not isinstance(plist[0], ProductWeight):
        return None
    return [getattr(plist, f"original{i}") for i in range(plist[0].depth)]


def collapse(model: nn.Module) -> nn.Module:
    r"""Turn every overparameterized layer back into a plain layer, in place.

    Each layer whose weight is a :class:`ProductWeight` gets the current product
    ``W_N ... W_1`` as its plain ``weight`` Parameter, and its original class back
    (``parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)``).
    Idempotent; a model with nothing to collapse is returned unchanged. The weight is a
    new Parameter: create the optimizer after this call. Safe on a ``copy.deepcopy`` of a
    model (``deployed = collapse(copy.deepcopy(model))`` leaves ``model`` intact).
    """
    for name, module in list(model.named_modules()):
        if not parametrize.is_parametrized(module, "weight"):
            continue
        plist = module.parametrizations.weight
        if not any(isinstance(p, ProductWeight) for p in plist):
            continue
        if len(plist) != 1:
            raise ValueError(
                f"layer {name or '<model>'!r} has other parametrizations stacked on its "
                "product weight; remove them first"
            )
        _own_class(module)
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model
