"""Every command README.md and benchmarks/README.md name must run as written: each one's options exist (its
`--help` with the documented arguments in front of it: an option that was renamed or removed fails to parse),
and the cheap ones (no user files, seconds) run whole and succeed. The expensive benchmark runs are
covered elsewhere: `accuracy.py --gate` runs whole in .ci/run; speed, density and soak are smoke-tested by
tests/test_speed.py, tests/test_soak.py."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

DOCS = [REPO / "README.md", REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# what the READMEs name today: a doc that loses one is noticed too
SCRIPTS = {"speed.py", "density.py", "soak.py", "accuracy.py", "magnetic_tile_patch_sweep.py",
           "bench_this_machine.sh", "cluster.py", "serve_load.py", "calibration.py", "backbones.py",
           "coreset_speed.py", "magnetic_tile_global_levers.py", "precision.py",
           "magnetic_tile_light_levers.py", "magnetic_tile_ensembles.py", "global_defaults.py",
           "magnetic_tile_native_scale.py"}
# For argparse scripts `--help` exits where it is met, before unknown options are reported: run the script
# with its own parse_args made strict and stopping right after parsing, so the documented line is checked.
ARGPARSE_CHECK = """
import argparse, runpy, sys
original = argparse.ArgumentParser.parse_known_args
def parse_only(self, args=None, namespace=None):
    ns, extra = original(self, args, namespace)
    if extra:
        self.error("unrecognized arguments: " + " ".join(extra))
    print("ARGS-OK", sorted(vars(ns)))
    raise SystemExit(0)
argparse.ArgumentParser.parse_args = parse_only
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def code_lines(text: str) -> list[str]:
    """Commands in fenced blocks and inline `code`, continuation lines joined, trailing comments cut."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    lines = []
    for block in blocks:
        lines += block.replace("\\\n", " ").splitlines()
    lines += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S).replace("\n", " "))
    return [re.sub(r"\s+#.*$", "", line).strip() for line in lines]


def benchmark_commands() -> list[tuple[str, list[str]]]:
    """(script, documented arguments) for every `python benchmarks/X.py ...` and the shell script."""
    found = []
    for doc in DOCS:
        for line in code_lines(doc.read_text(encoding="utf-8")):
            m = re.search(r"(?:python\s+)?(benchmarks/[\w]+\.(?:py|sh))((?:\s+[^\s|]+)*)", line)
            if not m or (m.group(1).endswith(".py") and "python" not in line):
                continue
            args = shlex.split(m.group(2))
            if "..." in args:  # a template (`--experiment ...`): the options are named elsewhere
                args = []
            found.append((m.group(1), args))
    return sorted(set((s, tuple(a)) for s, a in found))


def ovdoc_commands(pages: list[Path] | None = None) -> list[list[str]]:
    """Every `ovdoc VERB ...` line in a fenced block of README.md (its examples use placeholder paths), or
    of the given pages."""
    found = []
    text = "\n".join(page.read_text(encoding="utf-8") for page in (pages or [REPO / "README.md"]))
    for line in code_lines(text):
        m = re.match(r"^(?:\S*/)?ovdoc\s+([a-z]+)(.*)$", line)
        if m and "─" not in line and "|" not in line and "[" not in line:
            found.append([m.group(1), *shlex.split(m.group(2))])
    return found


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("DISPLAY", None)
    return subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=timeout, cwd=REPO, env=env)


def test_the_readmes_name_the_benchmark_scripts():
    named = {Path(script).name for script, _ in benchmark_commands()}
    assert named == SCRIPTS, named
    assert len(ovdoc_commands()) >= 3  # the README's tour was found (the reference pages: tests/test_docs.py)


@pytest.mark.parametrize(("script", "args"), benchmark_commands())
def test_each_documented_benchmark_command_parses(script, args):
    path = REPO / script
    assert path.exists(), script
    if script.endswith(".sh"):
        proc = run(["bash", str(path), "--help"])
        assert proc.returncode == 0 and "Usage" in proc.stdout, proc.stdout + proc.stderr
        return
    plain = run([sys.executable, str(path), "--help"])
    assert plain.returncode == 0 and "usage" in plain.stdout.lower(), plain.stderr[-2000:]
    source = path.read_text(encoding="utf-8")
    if "argparse" in source:
        proc = run([sys.executable, "-c", ARGPARSE_CHECK, str(path), *args])
        assert proc.returncode == 0 and "ARGS-OK" in proc.stdout, (args, proc.stderr[-2000:])
    else:  # click: an unknown option fails while parsing, before the eager --help
        proc = run([sys.executable, str(path), *args, "--help"])
        assert proc.returncode == 0 and "usage" in proc.stdout.lower(), (args, proc.stderr[-2000:])


def test_each_documented_ovdoc_command_parses():
    failed = []
    for cmd in ovdoc_commands():
        proc = run([sys.executable, "-m", "ovdoc", *cmd, "--help"], timeout=120)
        if proc.returncode != 0 or "Usage" not in proc.stdout:
            failed.append(f"ovdoc {' '.join(cmd)}: {proc.stderr.strip()[-300:]}")
    assert not failed, "\n".join(failed)


def test_the_cheap_documented_commands_run_whole():
    """`ovdoc devices` and `ovdoc run` (the built-in demo) exactly as the README gives them, no display."""
    shown = ovdoc_commands([REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    assert ["devices"] in shown and ["run"] in shown
    devices = run([sys.executable, "-m", "ovdoc", "devices"])
    assert devices.returncode == 0 and "CPU" in devices.stdout, devices.stderr[-2000:]
    demo = run([sys.executable, "-m", "ovdoc", "run"], timeout=300)
    assert demo.returncode == 0 and "Traceback" not in demo.stderr, demo.stderr[-2000:]
    assert "frames" in demo.stdout + demo.stderr
