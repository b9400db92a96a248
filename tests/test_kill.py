"""SIGKILL at any moment leaves no partial output where the user asked for one.

`ovdoc fit`, `ovdoc convert` and `ovdoc run --save-video` run as real subprocesses on real data
(magnetic tiles, the seed ONNX, vtest.avi) and are killed with SIGKILL at seeded moments: random times
in 0.2-3 s after the start (mostly start-up and work), and moments just after the hidden temporary
appears beside the target (the write itself). After every kill the target is absent (a fresh target)
or byte-identical to the one before (an existing target) — unless the process had already finished,
in which case the new output must be complete. Nothing can clean a SIGKILLed process's temporaries;
the next successful write sweeps them (their PID no longer runs), and one more run proves it.

The leftover rules themselves (dead vs live PIDs, a leftover never shadowing the next write, the
fallback swap's `.old` put back) are tested without subprocesses at the end.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest
from _runtime_helpers import build_seed_ir, tile_files

from ovdoc.atomic import atomic_dir, atomic_path, leftovers, sweep_leftovers

pytestmark = pytest.mark.slow  # kills real fit/convert/run subprocesses

SEED = 12


def _env() -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    return env


def snapshot(path: Path) -> dict[str, str] | None:
    """sha256 of every file under `path` (or of the file), by relative name; None when absent."""
    if not path.exists():
        return None
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


# A clean run wrapped so that, if it hangs, it can be asked for every thread's Python stack (faulthandler on
# SIGUSR1) before it is killed: one CI run saw a clean `ovdoc convert` after the killed ones pass 300 s.
_STACKS_ON_SIGUSR1 = ("import faulthandler, runpy, signal, sys; "
                      "faulthandler.register(signal.SIGUSR1, all_threads=True); "
                      "sys.argv = sys.argv[1:]; "
                      "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")


def run_clean(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`cmd` (`python -m MODULE ...`) to the end; past `timeout`, its stacks go into the failure message."""
    assert cmd[1] == "-m", cmd
    wrapped = [cmd[0], "-c", _STACKS_ON_SIGUSR1, *cmd[2:]]
    proc = subprocess.Popen(wrapped, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8", errors="replace", env=_env())
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd[2:5])} still running after {timeout:g} s; its stacks:\n{err[-6000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def kill_once(cmd: list[str], target: Path, *, delay: float | None, phase_delay: float | None,
              timeout: float = 120) -> dict:  # fmt: skip
    """Start `cmd`; SIGKILL it after `delay` s, or `phase_delay` s after a temporary for `target` appears.

    Returns what happened: killed (it was still running), the temporary seen at the kill, exit code.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    start = time.monotonic()
    kill_at = start + delay if delay is not None else None
    while proc.poll() is None:
        now = time.monotonic()
        if kill_at is None and any(pid == proc.pid for _, pid in leftovers(target, _video_pattern(target))):
            kill_at = now + phase_delay  # this run's own temporary (earlier kills left theirs)
        if kill_at is not None and now >= kill_at:
            break
        if now - start > timeout:
            break
        time.sleep(0.001 if kill_at is None or kill_at - now < 0.01 else 0.005)
    temp_at_kill = bool([p for p, pid in leftovers(target, _video_pattern(target)) if pid == proc.pid])
    running = proc.poll() is None
    if running:
        os.kill(proc.pid, signal.SIGKILL)
    rc = proc.wait()
    # a run that ended between the poll and the signal (the kill then reaches an exited process) finished:
    # it counts as a complete run, not a killed one
    killed = running and rc == -signal.SIGKILL
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    return {"killed": killed, "rc": rc, "temp_at_kill": temp_at_kill and killed, "stderr": err,
            "at_s": round(time.monotonic() - start, 3)}  # fmt: skip


def _video_pattern(target: Path) -> tuple[tuple[str, str], ...]:
    return ((f".{target.stem}.", f".partial{target.suffix}"),) if target.suffix else ()


def kill_series(cmd: list[str], target: Path, complete: Callable[[Path], None], *, n_random: int = 3,
                n_phase: int = 2, phase_max_s: float = 0.05, seed: int = SEED) -> list[dict]:  # fmt: skip
    """Fresh target, then an existing one, each killed at seeded moments; one clean run at the end."""
    rng = random.Random(seed)
    outcomes = []
    # how long a clean run takes here, so the random moments fall inside a run on a fast or a slow machine
    start = time.monotonic()
    done = run_clean(cmd)
    duration = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    complete(target)
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    for existing in (False, True):
        moments = [("random", rng.uniform(0.1, 0.9) * duration, None) for _ in range(n_random)]
        moments += [("write", None, rng.uniform(0.0, phase_max_s)) for _ in range(n_phase)]
        if existing:  # a complete previous output the killed runs must leave as it was
            done = run_clean(cmd)
            assert done.returncode == 0, done.stderr
            complete(target)
        before = snapshot(target)
        for kind, delay, phase in moments:
            out = kill_once(cmd, target, delay=delay, phase_delay=phase)
            out.update(kind=kind, existing=existing)
            outcomes.append(out)
            after = snapshot(target)
            assert "Traceback" not in out["stderr"], out["stderr"]
            if not out["killed"]:  # finished before the kill: a complete new output
                assert out["rc"] == 0, out["stderr"]
                complete(target)
                if not existing:
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
                else:
                    before = after
                continue
            assert out["rc"] == -signal.SIGKILL
            if after != before:  # only allowed: killed after the complete new output was swapped in
                complete(target)
                if not existing:  # a fresh target again for the next moment
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
                    after = snapshot(target)
                before = after
    # a clean run after the kills: complete output, and the dead runs' temporaries swept
    done = run_clean(cmd)
    assert done.returncode == 0, done.stderr
    complete(target)
    assert leftovers(target, _video_pattern(target)) == []
    print(target.name, [(o["kind"], o["existing"], o["at_s"], o["killed"], o["temp_at_kill"])
                        for o in outcomes])  # shown with -s: where the kills landed
    killed = [o for o in outcomes if o["killed"]]
    assert len(killed) >= n_random + n_phase, outcomes  # most moments must land while it runs
    assert any(o["temp_at_kill"] for o in killed), outcomes  # and some in the middle of the write
    return outcomes


# --- the three commands --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_ir(seed_dir, tmp_path_factory) -> Path:
    return build_seed_ir(seed_dir, tmp_path_factory.mktemp("seed-ir"))


def test_sigkill_fit_leaves_no_partial_bundle(seed_ir, magnetic_tile_dir, tmp_path):
    normal = tmp_path / "normal"
    normal.mkdir()
    for f in tile_files(magnetic_tile_dir)[:120]:
        (normal / f.name).symlink_to(f)
    target = tmp_path / "tiles.bundle"
    cmd = [sys.executable, "-m", "ovdoc", "fit", str(seed_ir), "--normal", str(normal), "--out", str(target)]

    def complete(path: Path) -> None:
        from ovdoc.runtime.bundle import load_manifest

        manifest, _ = load_manifest(path)  # version, self-hash and every file's sha256
        assert manifest["n_images"] == 120

    # a 120-image bundle is written in a few tens of milliseconds: kills within 10 ms of its temporary
    # appearing land in the write (at up to 50 ms, all four once missed it on a loaded CI box)
    outcomes = kill_series(cmd, target, complete, n_phase=3, phase_max_s=0.01)
    assert any(o["kind"] == "write" and o["temp_at_kill"] for o in outcomes)


def test_sigkill_convert_leaves_no_partial_ir(seed_dir, tmp_path):
    target = tmp_path / "seed-ir"
    cmd = [sys.executable, "-m", "ovdoc", "convert", str(seed_dir / "onnx" / "weights.onnx"), "--out",
           str(target)]  # fmt: skip

    def complete(path: Path) -> None:
        import json

        import openvino as ov

        report = json.loads((path / "convert.json").read_text(encoding="utf-8"))
        assert set(report["precisions"]) == {"FP32", "FP16"}
        core = ov.Core()
        for precision in ("FP32", "FP16"):
            model = core.read_model(path / precision / "model.xml")
            assert model.outputs[0].get_partial_shape()[-1].get_length() > 0
        assert sorted(p.name for p in path.iterdir()) == ["FP16", "FP32", "convert.json"]

    kill_series(cmd, target, complete)


def test_sigkill_run_leaves_no_partial_video(video_dir, tmp_path):
    target = tmp_path / "out" / "annotated.avi"
    frames = 250
    cmd = [sys.executable, "-m", "ovdoc", "run", "--source", str(video_dir / "vtest.avi"), "--res", "320x240",
           "--headless", "--max-frames", str(frames), "--save-video", str(target)]  # fmt: skip

    def complete(path: Path) -> None:
        cap = cv2.VideoCapture(str(path))
        assert cap.isOpened()
        count = 0
        while cap.grab():
            count += 1
        cap.release()
        assert count == frames

    # the partial video exists for the whole run: kill up to 1 s into it
    kill_series(cmd, target, complete, phase_max_s=1.0)


# --- leftovers: never shadow, swept once their writer is gone ------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_dead_writers_are_swept_and_never_shadow_the_next_write(tmp_path):
    target = tmp_path / "good.bundle"
    gone = dead_pid()
    stale_dir = tmp_path / f".good.bundle.{gone}.abc123.tmp"
    stale_dir.mkdir()
    (stale_dir / "manifest.json").write_text('{"half": true}')
    stale_file = tmp_path / f".good.bundle.{gone}.zz9.tmp"
    stale_file.write_text("half")
    live = tmp_path / f".good.bundle.{os.getppid()}.live01.tmp"  # a writer that still runs
    live.mkdir()
    other = tmp_path / f".good.bundle.v2.{gone}.abc.tmp"  # another target's temporary: not ours
    other.mkdir()
    with atomic_dir(target) as tmp:
        assert not stale_dir.exists() and not stale_file.exists()  # swept before writing
        (tmp / "manifest.json").write_text('{"complete": true}')
    assert (target / "manifest.json").read_text(encoding="utf-8") == '{"complete": true}'
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json"]
    assert live.exists() and other.exists()
    # single files: the same
    events = tmp_path / "events.jsonl"
    leftover = tmp_path / f".events.jsonl.{gone}.k2j4.tmp"
    leftover.write_text("partial line")
    with atomic_path(events) as tmp:
        tmp.write_text("complete\n")
    assert events.read_text(encoding="utf-8") == "complete\n" and not leftover.exists()


def test_a_kill_between_the_fallback_renames_is_repaired_by_the_next_write(tmp_path, monkeypatch):
    import ovdoc.atomic as atomic

    target = tmp_path / "ir"
    target.mkdir()
    (target / "model.xml").write_text("old")
    gone = dead_pid()
    # what a SIGKILL between `replace(target, old)` and `replace(tmp, target)` leaves behind
    os.replace(target, tmp_path / f".ir.{gone}.q1w2e3.old")
    (tmp_path / f".ir.{gone}.r4t5y6.tmp").mkdir()
    (tmp_path / f".ir.{gone}.r4t5y6.tmp" / "model.xml").write_text("new but maybe incomplete")
    assert sweep_leftovers(target)
    assert (target / "model.xml").read_text(encoding="utf-8") == "old"  # the last complete version is back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ir"]  # the unfinished .tmp is never promoted
    # and the fallback path itself still swaps correctly
    monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    with atomic_dir(target) as tmp:
        (tmp / "model.xml").write_text("new")
    assert (target / "model.xml").read_text(encoding="utf-8") == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ir"]


def test_existing_directory_is_exchanged_in_one_step(tmp_path, monkeypatch):
    import ovdoc.atomic as atomic

    target = tmp_path / "bundle"
    target.mkdir()
    (target / "a").write_text("old")
    calls = []
    real = atomic.exchange

    def spy(a, b):
        # at the moment of the swap the target still holds the old tree: never missing
        assert (b / "a").read_text(encoding="utf-8") == "old"
        ok = real(a, b)
        calls.append(ok)
        return ok

    monkeypatch.setattr(atomic, "exchange", spy)
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("new")
    assert (target / "a").read_text(encoding="utf-8") == "new"
    assert calls == [True]  # renameat2(RENAME_EXCHANGE) works on this filesystem
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
