"""EndToEndSGD under torch.compile: the compiled step is the eager step.

Two ways of compiling (``torch.compile(opt.step)`` and a compiled function that calls
``opt.step()``), a small MLP and a small CNN, with and without momentum, depth 1 and 2,
``precondition_every`` 1 and 10. ``fullgraph=True`` wherever the step has no graph break:
depth 1, and the exact rule (the SVD compiles into the graph); the amortised rule's refresh
runs outside the graph (a graph break), so there ``fullgraph=False``, and ``fullgraph=True``
is refused by Dynamo. The default suite uses the ``aot_eager`` backend (Dynamo's graph and
AOTAutograd's functionalisation, without Inductor's C++ code generation, which costs ~20 s
per model on a small CPU); Inductor runs in the slow tests.
"""

import pytest
import torch

from depthaccel.optim import EndToEndSGD


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4), torch.nn.Linear(4, 1)
    )


def _cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(3 * 4 * 4, 2),
    )


MODELS = {"mlp": (_mlp, (8, 6)), "cnn": (_cnn, (4, 2, 6, 6))}
STEPS = 12


def _train(model_name, depth, momentum, every, compiled, *, backend="aot_eager", lr=0.02):
    """Parameters after STEPS steps, eager (compiled=None) or compiled ("step": the bound
    method; "fn": a compiled function calling it), from the same start and data."""
    make, xshape = MODELS[model_name]
    torch.manual_seed(0)
    model = make()
    x = torch.randn(*xshape)
    opt = EndToEndSGD(
        model.parameters(), lr=lr, depth=depth, momentum=momentum, precondition_every=every
    )
    fullgraph = depth == 1 or every == 1
    if compiled == "step":
        step = torch.compile(opt.step, backend=backend, fullgraph=fullgraph)
    elif compiled == "fn":

        @torch.compile(backend=backend, fullgraph=fullgraph)
        def step():
            opt.step()

    else:
        step = opt.step
    for _ in range(STEPS):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        step()
    return [p.detach().clone() for p in model.parameters()], opt


def _assert_round_off(a, b, tol=1e-6):
    for p, q in zip(a, b, strict=True):
        scale = q.abs().max().item()
        assert (p - q).abs().max().item() <= tol * max(scale, 1.0), (p - q).abs().max()


CASES = [
    (m, d, mom, every, how)
    for m in MODELS
    for d in (1, 2)
    for mom in (0.0, 0.9)
    for every in (1, 10)
    for how in ("step", "fn")
]
FAST = {("mlp", 2, 0.9, 1, "step"), ("cnn", 2, 0.0, 10, "fn"), ("mlp", 1, 0.9, 10, "fn")}


@pytest.mark.parametrize(
    "model_name,depth,momentum,every,how",
    [c if c in FAST else pytest.param(*c, marks=pytest.mark.slow) for c in CASES],
)
def test_compiled_step_matches_eager(model_name, depth, momentum, every, how):
    torch._dynamo.reset()
    eager, _ = _train(model_name, depth, momentum, every, None)
    compiled, opt = _train(model_name, depth, momentum, every, how)
    _assert_round_off(compiled, eager)
    start, _ = _train(model_name, depth, momentum, every, None, lr=0.0)
    assert any(not torch.equal(p, q) for p, q in zip(eager, start, strict=True))  # it moved


@pytest.mark.slow
@pytest.mark.parametrize("model_name,every", [("mlp", 1), ("cnn", 10)])
def test_inductor_step_matches_eager(model_name, every):
    torch._dynamo.reset()
    eager, _ = _train(model_name, 2, 0.9, every, None)
    compiled, _ = _train(model_name, 2, 0.9, every, "step", backend="inductor")
    _assert_round_off(compiled, eager, tol=1e-5)  # Inductor fuses (FMA): float32 round-off


def test_amortised_refresh_is_a_graph_break():
    """The refresh of precondition_every > 1 runs outside the graph: fullgraph=True is
    refused by Dynamo, as documented."""
    torch._dynamo.reset()
    model = _mlp()
    opt = EndToEndSGD(model.parameters(), lr=0.01, depth=2, precondition_every=10)
    model(torch.randn(3, 6)).sum().backward()
    with pytest.raises(torch._dynamo.exc.Unsupported, match="disable"):
        torch.compile(opt.step, backend="aot_eager", fullgraph=True)()


def test_compiled_step_refuses_a_nonfinite_gradient_and_a_bad_group():
    torch._dynamo.reset()
    model = _mlp()
    opt = EndToEndSGD(model.parameters(), lr=0.01, depth=2)
    step = torch.compile(opt.step, backend="aot_eager")
    model(torch.randn(3, 6)).sum().backward()
    before = [p.detach().clone() for p in model.parameters()]
    model[0].weight.grad[0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="NaN or inf"):
        step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    model[0].weight.grad[0, 0] = 0.0
    opt.param_groups[0] = dict(opt.param_groups[0], lr=-5.0)  # a replaced group
    with pytest.raises(ValueError, match="lr"):
        step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_tensor_lr_in_a_compiled_step_follows_the_scheduler():
    """PyTorch's compiled-optimizer recipe (a compiled function calling the optimizer's and
    the scheduler's step; a tensor lr that the scheduler changes in place): the same
    numbers as eager."""
    runs = []
    for compiled in (False, True):
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = _mlp()
        x = torch.randn(8, 6)
        opt = EndToEndSGD(model.parameters(), lr=torch.tensor(0.02), depth=2, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

        def step(opt=opt, sched=sched):
            opt.step()
            sched.step()

        if compiled:
            step = torch.compile(step, backend="aot_eager")
        for _ in range(6):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            step()
        runs.append([p.detach().clone() for p in model.parameters()])
    _assert_round_off(runs[1], runs[0])


def test_float_hyperparameters_changed_between_compiled_steps():
    """A float lr changed between steps (a new value, then a replaced group) recompiles
    with the lr as a symbolic float: the step-time checks must trace for it
    (fullgraph=True), and the numbers stay eager's."""
    runs = []
    for compiled in (False, True):
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = _mlp()
        x = torch.randn(8, 6)
        opt = EndToEndSGD(model.parameters(), lr=0.01, depth=2, momentum=0.9)
        step = (
            torch.compile(opt.step, backend="aot_eager", fullgraph=True) if compiled else opt.step
        )
        for t, lr in enumerate((0.01, 0.02, 0.03, 0.015)):
            if t == 3:
                opt.param_groups[0] = dict(opt.param_groups[0], lr=lr)
            else:
                opt.param_groups[0]["lr"] = lr
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            step()
        runs.append([p.detach().clone() for p in model.parameters()])
    _assert_round_off(runs[1], runs[0])
