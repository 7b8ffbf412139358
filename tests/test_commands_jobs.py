"""Tests of the --jobs / --ray-address options (depthaccel.commands.jobs) through the
commands: results equal to --jobs 1, the executor named in the outputs, a cluster the
command started shut down on exit and on Ctrl-C with no process left behind."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from depthaccel.cli import main

REPO = Path(__file__).resolve().parents[1]


def table(tmp_path: Path, m: int = 120, d: int = 4) -> Path:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((m, d))
    y = X @ rng.standard_normal(d) + 0.3 * rng.standard_normal(m)
    path = tmp_path / "t.csv"
    np.savetxt(path, np.c_[X, y], delimiter=",", header="a,b,c,d,y", comments="")
    return path


def compare_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "depthaccel.cli", "compare", "--data", str(data), "--out", str(out),
        "--lrs", "0.01,0.1", "--methods", "gd,e2e,adam", "--no-progress", *extra,
    ]  # fmt: skip


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def descendants(pids: list[int]) -> set[int]:
    """``pids`` and every process below them, by the parent PIDs in /proc/*/stat (not by
    name)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    seen: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo += children.get(pid, [])
    return seen


def cluster_pids(stderr: str) -> list[int]:
    m = re.search(r"ray: started a local cluster .*; processes ([\d ]+);", stderr)
    assert m, stderr[-2000:]
    return [int(x) for x in m.group(1).split()]


def wait_gone(pids, timeout=30.0) -> set[int]:
    end = time.monotonic() + timeout
    left = {p for p in pids if alive(p)}
    while left and time.monotonic() < end:
        time.sleep(0.2)
        left = {p for p in left if alive(p)}
    return left


def read_gaps(out: Path) -> np.ndarray:
    with open(out / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    return np.array([float(r["gap"]) for r in rows])


def test_missing_ray_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    data = table(tmp_path)
    rc = main(["compare", "--data", str(data), "--out", str(tmp_path / "o"), "--jobs", "2"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "pip install 'depthaccel[ray]'" in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit) as e:  # argparse's usage error
        main(["reproduce", "claim1", "--quick", "--out", str(tmp_path / "r"), "--jobs", "0"])
    assert e.value.code == 2
    assert "--jobs must be an integer in [1, 4096], got 0" in capsys.readouterr().err


@pytest.mark.slow  # ~15 s quiet, ~40 s on the busy 2-core machine (two commands, a cluster)
def test_compare_jobs_2_equals_jobs_1_names_ray_and_stops_its_cluster(tmp_path):
    pytest.importorskip("ray")
    data = table(tmp_path)
    env = dict(os.environ, RAY_ADDRESS="")
    one = subprocess.run(
        compare_cmd(data, tmp_path / "one", "--iters", "500"),
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        compare_cmd(data, tmp_path / "two", "--iters", "500", "--jobs", "2"),
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    pids = cluster_pids(two.stderr)
    assert "ray: local cluster shut down" in two.stderr
    assert not wait_gone(pids), "processes of the cluster left running"
    # the same shards whatever --jobs says: the same numbers, bit for bit
    g1, g2 = read_gaps(tmp_path / "one"), read_gaps(tmp_path / "two")
    assert g1.size and np.array_equal(g1, g2, equal_nan=True)
    for name in ("curves.csv", "summary.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    report1 = (tmp_path / "one" / "REPORT.md").read_text()
    assert "executor: local (this process)" in report1
    assert "executor: Ray (local cluster started by this command, 2 CPUs" in (
        (tmp_path / "two" / "REPORT.md").read_text()
    )


def interrupt_while_training(cmd: list[str], interrupt) -> tuple[int, str, set[int]]:
    """Run ``cmd`` in a session of its own (as a terminal runs it); once its shards are on
    the Ray cluster it started and its workers train them, call ``interrupt(proc)``.
    Returns (exit status, output, the PIDs of the command, its cluster and workers)."""
    env = dict(os.environ, RAY_ADDRESS="", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if any(re.search(r"on ray \(\d+ shards\)", line) for line in list(lines)):
                break
            time.sleep(0.2)
        pids = cluster_pids("".join(lines))
        time.sleep(3.0)  # the workers are training the shards now
        everything = descendants([proc.pid])
        workers = everything - {proc.pid} - set(pids)
        assert set(pids) < everything and workers  # the cluster and its workers
        assert proc.poll() is None
        interrupt(proc)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=10)
    return proc.returncode, "".join(lines), everything | set(pids)


@pytest.mark.slow  # ~40 s on the busy 2-core machine (starts a cluster)
def test_ctrl_c_shuts_the_cluster_down_and_leaves_no_process(tmp_path):
    pytest.importorskip("ray")
    cmd = compare_cmd(table(tmp_path), tmp_path / "o", "--iters", "3000000", "--jobs", "2")
    # Ctrl-C: SIGINT to the whole process group
    rc, out, seen = interrupt_while_training(cmd, lambda p: os.killpg(p.pid, signal.SIGINT))
    assert rc == 130, out[-3000:]
    assert "interrupted" in out
    left = wait_gone(seen)
    assert not left, f"processes left running after Ctrl-C: {sorted(left)}"


@pytest.mark.slow  # ~40-60 s on the busy 2-core machine (starts a cluster)
def test_sigterm_mid_reproduce_stops_cleanly_and_leaves_no_process(tmp_path, ethanol_data_dir):
    """``kill PID`` (SIGTERM, what batch schedulers send) while experiments run
    concurrently: exit status 143, the interruption message, no abort of a thread still
    inside torch (no C++ stack trace), the cluster and its workers gone."""
    pytest.importorskip("ray")
    cmd = [sys.executable, "-m", "depthaccel", "reproduce", "fig4-right", "sec7", "--jobs", "2"]
    cmd += ["--out", str(tmp_path / "o"), "--data-dir", ethanol_data_dir, "--no-progress"]
    # the command only, as `kill PID` does
    rc, out, seen = interrupt_while_training(cmd, lambda p: os.kill(p.pid, signal.SIGTERM))
    assert rc == 143, out[-3000:]
    assert "interrupted" in out and "Stack trace" not in out, out[-3000:]
    left = wait_gone(seen)
    assert not left, f"processes left running after SIGTERM: {sorted(left)}"


@pytest.mark.slow  # two quick experiments on the shared cluster: ~1-2 min on the busy machine
def test_reproduce_runs_experiments_concurrently_on_ray(
    tmp_path, ethanol_data_dir, ray_cluster, capsys
):
    out = tmp_path / "r"
    rc = main(
        ["reproduce", "fig4-right", "fig5-left", "--quick", "--jobs", "2", "--no-progress"]
        + ["--out", str(out), "--data-dir", ethanol_data_dir]
    )
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "running 2 experiments concurrently on ray" in printed
    for name in ("fig4-right", "fig5-left"):
        settings = json.loads((out / name / "settings.json").read_text())
        assert settings["executor"]["executor"] == "ray"
        assert settings["results_store"]["runs_trained"] > 0
    # the scorecard links each experiment's settings (where it ran) instead of inlining them
    report = (out / "REPORT.md").read_text()
    assert "(fig4-right/settings.json)" in report and "(fig5-left/settings.json)" in report
    assert ray_cluster.is_initialized()  # an existing cluster is left running
