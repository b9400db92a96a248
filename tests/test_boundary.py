"""The edge/host boundary: nothing a board runs may import TensorFlow, Keras, NNCF or `ovdoc.host`.

Two checks, because each misses what the other sees:
- statically, every import statement in the runtime side (also the lazy ones inside functions, which an
  import-time check never executes) is read from the source;
- dynamically, every runtime verb runs for real in a fresh interpreter where those packages cannot be
  imported at all, as on a board that installed only the runtime.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ovdoc"
FORBIDDEN = ("tensorflow", "keras", "tf_keras", "nncf", "onnx", "tf2onnx", "ovdoc.host")
# The runtime side: the package root's shared modules, the runtime, the shipped models and the CLI verbs a
# board runs. ovdoc.host and the host-side verbs (convert, train, export) are the other side.
HOST_VERBS = ("convert.py", "train.py", "export.py")
RUNTIME_VERBS = ("devices", "run", "fit", "eval", "bench", "serve")


def runtime_files() -> list[Path]:
    files = [p for p in PACKAGE.glob("*.py")]
    for sub in ("runtime", "irmodels"):
        files += sorted((PACKAGE / sub).rglob("*.py"))
    files += [p for p in sorted((PACKAGE / "commands").glob("*.py")) if p.name not in HOST_VERBS]
    return files


def package_of(path: Path) -> list[str]:
    """The dotted package a module file belongs to (its own name for an __init__.py), as parts."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return parts[:-1]


def absolute(path: Path, node: ast.ImportFrom) -> list[str]:
    """What `from ... import ...` names, relative imports resolved (`from ..host import x` in
    ovdoc/runtime/a.py is ovdoc.host, and also ovdoc.host.x when x is a module)."""
    if node.level == 0:
        base = node.module or ""
    else:
        package = package_of(path)
        package = package[: len(package) - (node.level - 1)] if node.level > 1 else package
        base = ".".join(package + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found += [(node.lineno, module) for module in absolute(path, node)]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def is_forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)


def test_runtime_side_has_no_host_imports_even_lazy_ones():
    files = runtime_files()
    assert len(files) > 20, "the runtime side was not found"
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in files
        for line, module in imported_modules(path)
        if is_forbidden(module)
    ]
    assert not bad, "runtime modules import host-side packages:\n" + "\n".join(bad)


def test_relative_imports_are_read_too(tmp_path):
    """`from ..host import train` (or `from .. import host`) in a runtime module is caught like the
    absolute form: the check resolves relative imports against the file's package."""
    cases = {
        "from ..host import train": ["ovdoc.host", "ovdoc.host.train"],
        "from .. import host": ["ovdoc", "ovdoc.host"],
        "from ..host.train.arcface import fit": ["ovdoc.host.train.arcface", "ovdoc.host.train.arcface.fit"],
        "from .scoring import x": ["ovdoc.runtime.scoring", "ovdoc.runtime.scoring.x"],
    }
    for code, expected in cases.items():
        node = ast.parse(code).body[0]
        assert absolute(PACKAGE / "runtime" / "detector.py", node) == expected, code
        assert any(is_forbidden(m) for m in expected) == ("host" in code), code
    # an __init__.py is its own package: `from .stream import x` there is ovdoc.runtime.stream
    node = ast.parse("from .stream import loop").body[0]
    assert absolute(PACKAGE / "runtime" / "__init__.py", node)[0] == "ovdoc.runtime.stream"


def test_the_one_door_to_the_host_side_names_only_host_modules():
    """`host_extras` is the only runtime module that may load host code, and only by its table.

    The CLI's lazy verb loader is the other computed import: it loads the one verb the user typed (the host
    verbs convert and train only when asked for, which the blocked-import tests below exercise).
    """
    from ovdoc.runtime import host_extras

    dynamic = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
        for path in runtime_files()
        if path.name not in ("host_extras.py", "cli.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
        and not (node.args and isinstance(node.args[0], ast.Constant))
    ]
    assert not dynamic, f"computed imports outside host_extras: {dynamic}"
    for module, package, _ in host_extras.EXTRAS.values():
        assert module.startswith("ovdoc.host."), module
        assert is_forbidden(package) or package == "tensorflow"


def test_cli_registry_names_the_host_verbs_only_as_host_verbs():
    from ovdoc.cli import COMMANDS

    for verb in RUNTIME_VERBS:
        module = COMMANDS[verb][0]
        assert not module.startswith("ovdoc.host"), module
        assert (PACKAGE / "commands" / (module.rsplit(".", 1)[1] + ".py")).name not in HOST_VERBS


# A fresh interpreter in which the host-side packages cannot be imported at all (a finder that refuses
# them), then the CLI's own main(): this is what a runtime-only board install does.
BLOCK = """
import sys, importlib.abc
BLOCKED = {blocked!r}
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: runtime-only test)")
        return None
sys.meta_path.insert(0, Refuse())
sys.argv = ["ovdoc", *{args!r}]
from ovdoc.cli import main
try:
    main()
finally:
    leaked = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
    assert not leaked, f"imported: {{leaked}}"
"""


def run_blocked(
    *args: str, cwd: Path | None = None, timeout: int = 600, blocked: tuple[str, ...] = FORBIDDEN
) -> subprocess.CompletedProcess:
    code = BLOCK.format(blocked=blocked, args=list(args))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
                encoding="utf-8", errors="replace", timeout=timeout, cwd=cwd
    )


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def tile_folders(magnetic_tile_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """A few real tiles, as a user would have them: a folder of good parts and some defects."""
    root = tmp_path_factory.mktemp("tiles")
    free = sorted((magnetic_tile_dir / "MT_Free" / "Imgs").glob("*.jpg"))
    folders = {name: root / name for name in ("fit", "held", "defects")}
    for folder in folders.values():
        folder.mkdir()
    for src in free[:40]:
        (folders["fit"] / src.name).symlink_to(src)
    for src in free[40:60]:
        (folders["held"] / src.name).symlink_to(src)
    for kind in ("Blowhole", "Break", "Crack", "Fray", "Uneven"):
        for src in sorted((magnetic_tile_dir / f"MT_{kind}" / "Imgs").glob("*.jpg"))[:4]:
            (folders["defects"] / src.name).symlink_to(src)
    return folders


@pytest.mark.slow
def test_every_runtime_verb_runs_with_host_packages_blocked(tile_folders, video_dir, tmp_path):
    """devices, run (demo), fit, run BUNDLE --source VIDEO, eval, bench — none touches the host side."""
    devices = json.loads(ok(run_blocked("devices", "--json")).stdout)
    assert "CPU" in [d["name"] for d in devices["devices"]]

    demo_run = run_blocked("run", "--headless", "--json", "--max-frames", "40", cwd=tmp_path)
    demo = json.loads(ok(demo_run).stdout)
    assert demo["frames"] == 40

    from ovdoc.irmodels import demo_bundle

    bundle = tmp_path / "tiles.bundle"
    ok(run_blocked("fit", str(demo_bundle() / "model.xml"), "--normal", str(tile_folders["fit"]),
                   "--out", str(bundle), "--json"))
    run = json.loads(ok(run_blocked("run", str(bundle), "--source", str(video_dir / "vtest.avi"),
                                    "--res", "320x240", "--headless", "--json", "--max-frames", "24")).stdout)
    assert run["frames"] == 24
    metrics = json.loads(ok(run_blocked("eval", str(bundle), "--normal", str(tile_folders["held"]),
                                        "--anomalous", str(tile_folders["defects"]), "--json")).stdout)
    assert metrics["n_anomalous"] == 20 and metrics["n_normal"] == 20
    # the demo model (a sneaker DOC network) cannot tell tile defects apart (measured 0.505), so the bound
    # is on what any working detector separates: tiles vs street scenes (measured 1.0); random, constant
    # or inverted scores give 0.5 or less
    other = json.loads(ok(run_blocked("eval", str(bundle), "--normal", str(tile_folders["held"]),
                                      "--anomalous", str(video_dir / "vtest.avi"), "--json")).stdout)
    assert other["auc"] >= 0.95, other["auc"]
    bench = ok(run_blocked("bench", str(bundle), "--precisions", "FP32,INT8", "--batch", "8", "--hints",
                           "throughput", "--scorers", "flat", "--frames", "16", "--repeats", "1",
                           "--source", str(video_dir / "vtest.avi"), "--calib", str(tile_folders["fit"]),
                           "--json"))
    result = json.loads(bench.stdout)
    assert any(r.get("precision") == "FP32" for r in result["results"])
    int8 = [s for s in result.get("skipped", []) if "INT8" in json.dumps(s)]
    assert int8 and "nncf" in json.dumps(int8).lower(), result.get("skipped")
    assert "ModuleNotFoundError" not in bench.stdout + bench.stderr


@pytest.mark.slow
def test_patch_verbs_run_with_host_packages_blocked(tile_folders, video_dir, tmp_path):
    """fit --mode patch (the shipped backbone), run with maps, eval, bench: the patch path a
    board takes, with TensorFlow, Keras, NNCF and ovdoc.host unimportable."""
    bundle = tmp_path / "patch.bundle"
    fit = json.loads(ok(run_blocked("fit", "--mode", "patch", "--normal", str(tile_folders["fit"]),
                                    "--out", str(bundle), "--json")).stdout)
    assert fit["mode"] == "patch"
    run = json.loads(ok(run_blocked("run", str(bundle), "--source", str(video_dir / "vtest.avi"), "--res",
                                    "320x240", "--headless", "--json", "--max-frames", "8")).stdout)
    assert run["frames"] == 8
    metrics = json.loads(ok(run_blocked("eval", str(bundle), "--normal", str(tile_folders["held"]),
                                        "--anomalous", str(tile_folders["defects"]), "--json")).stdout)
    # 20 held-out good tiles vs 4 of each defect type: measured 0.81; random scores reach 0.7 about 1 time
    # in 70, inverted ones never
    assert metrics["auc"] >= 0.7 and metrics["n_anomalous"] == 20, metrics["auc"]
    bench = json.loads(ok(run_blocked("bench", str(bundle), "--precisions", "FP32", "--batch", "1", "--hints",
                                      "throughput", "--frames", "8", "--repeats", "1",
                                      "--source", str(video_dir / "vtest.avi"), "--res", "320x240",
                                      "--json")).stdout)
    assert [r["mode"] for r in bench["results"]] == ["patch"]


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["convert", "train", "export"])
def test_host_verbs_say_what_to_install_in_one_line(verb, tmp_path):
    args = {"convert": ["convert", "model.keras", "--out", str(tmp_path / "ir")],
            "train": ["train", "--target", str(tmp_path), "--reference", str(tmp_path),
                      "--out", str(tmp_path / "t")],
            "export": ["export", str(tmp_path), "--to", "tflite", "--out", str(tmp_path / "e")]}[verb]
    if verb == "convert":
        import zipfile

        with zipfile.ZipFile(tmp_path / "model.keras", "w") as archive:  # a Keras 3 archive's shape
            archive.writestr("config.json", "{}")
            archive.writestr("metadata.json", "{}")
            archive.writestr("model.weights.h5", b"")
        args[1] = str(tmp_path / "model.keras")
    # a runtime-only install has ovdoc.host (same wheel) but none of the packages it needs
    proc = run_blocked(*args, blocked=tuple(b for b in FORBIDDEN if not b.startswith("ovdoc")))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ovdoc[train]" in lines[0], proc.stderr


def check_demo_module():
    import importlib.util

    path = PACKAGE.parent / ".ci" / "check_demo.py"
    spec = importlib.util.spec_from_file_location("check_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_demo_run_flags_every_inserted_stretch_and_no_sneaker_stretch(tmp_path):
    """The README's first command, checked the way CI checks it on the board: not sent to /dev/null."""
    from ovdoc.irmodels import demo_dir

    events = tmp_path / "events.jsonl"
    proc = ok(run_blocked("run", "--headless", "--json", "--events", str(events), cwd=tmp_path))
    summary = json.loads(proc.stdout)
    demo = json.loads((demo_dir() / "demo.json").read_text(encoding="utf-8"))
    records = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()]
    assert check_demo_module().problems(records, summary, demo) == []
    assert summary["smooth"] == demo["stream"]["hold"]


def test_demo_checker_catches_a_missed_stretch_and_a_false_alarm():
    """The checker itself can fail: a run that misses the bag, or flags plain sneakers, is reported."""
    from ovdoc.irmodels import demo_dir

    checker = check_demo_module()
    demo = json.loads((demo_dir() / "demo.json").read_text(encoding="utf-8"))
    spans = checker.stretches(demo)
    total = demo["stream"]["frames"]
    summary = {"frames": total, "stopped": "end", "smooth": 3}
    perfect = [
        {"frame": f, "score": 0.0, "anomalous": any(n != "sneaker" and s <= f < e for n, s, e in spans)}
        for f in range(total)
    ]
    assert checker.problems(perfect, summary, demo) == []
    bag = next((s, e) for n, s, e in spans if n == "bag")
    missed = [dict(r, anomalous=False) if bag[0] <= r["frame"] < bag[1] + 2 else r for r in perfect]
    assert any("bag" in p for p in checker.problems(missed, summary, demo))
    false_alarm = [dict(r, anomalous=True) if r["frame"] == 5 else r for r in perfect]
    assert any("sneaker-only" in p for p in checker.problems(false_alarm, summary, demo))
    assert checker.problems(perfect[:-1], summary | {"frames": total - 1}, demo)


@pytest.mark.slow
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_run_refuses_a_threshold_that_is_not_finite(value, tmp_path):
    proc = run_blocked("run", "--threshold", value, "--headless", "--max-frames", "3", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"Error: --threshold must be a finite number, got {float(value)}"
