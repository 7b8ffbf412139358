"""Smoke-and-sense tests of ``depthaccel demo`` on tiny sizes."""

import pytest

from depthaccel.cli import main
from depthaccel.demo import DemoConfig

TINY = ["--dim", "10", "--samples", "80", "--cond", "100", "--steps", "300", "--lr", "0.05"]


def parse_table(out: str) -> list[list[float]]:
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0].isdigit():
            rows.append([float(v) for v in parts])
    return rows


def test_demo_output_is_sensible(capsys):
    assert main(["demo", *TINY, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "EndToEndSGD N=3" in out and "GD depth-3 net" in out
    rows = parse_table(out)
    assert [r[0] for r in rows][0] == 0 and rows[-1][0] == 300 and len(rows) >= 5
    first, last = rows[0][1:], rows[-1][1:]
    assert first[0] == first[1] == first[2]  # one common starting point
    for row in rows:
        sgd, net, e2e = row[1:]
        assert min(sgd, net, e2e) >= 0  # a distance from the optimum
        assert abs(e2e - net) <= 0.1 * net  # Theorem 1: Eq. 10 tracks the deep net
    assert all(v < first[0] / 10 for v in last)  # every model trains
    assert last[1] < last[0] and last[2] < last[0]  # depth accelerates l4


def test_demo_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    assert e.value.code == 0
    assert "EndToEndSGD" in capsys.readouterr().out
    assert main(["demo", "--lr", "-1", "--quiet"]) == 2
    assert "lr must be" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--samples", "1"], "samples must be >= 2"),
        (["--samples", "2", "--dim", "20"], "samples (2) must be >= dim (20)"),
    ],
)
def test_demo_too_few_samples_is_a_one_line_error(capsys, argv, match):
    assert main(["demo", *argv, "--quiet", "--steps", "3"]) == 2
    cap = capsys.readouterr()
    assert cap.err.startswith("depthaccel demo: error:") and match in cap.err
    assert len(cap.err.strip().splitlines()) == 1 and "Traceback" not in cap.err + cap.out


def test_demo_divergence_is_reported(capsys):
    assert main(["demo", *TINY[:6], "--steps", "50", "--lr", "1e3", "--quiet"]) == 1
    assert "non-finite" in capsys.readouterr().out


def test_config_validation():
    with pytest.raises(ValueError, match="depth"):
        DemoConfig(depth=0)
    with pytest.raises(ValueError, match="p must"):
        DemoConfig(p=1.0)
    with pytest.raises(ValueError, match="cond"):
        DemoConfig(cond=0.5)
