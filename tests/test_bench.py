"""`ovdoc bench` end to end on a tiny real bundle (seed IR + magnetic tiles) and a real video.

Real OpenVINO, FAISS, sklearn LOF and OpenCV decoding; few frames so the file stays well under a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from _runtime_helpers import build_seed_ir, cifar_images, error_line, ovdoc_cli, tile_files, write_pngs

FRAMES = 16
SCORERS = ("knn:flat", "knn:hnsw", "lof")


def present_devices() -> set[str]:
    """Plain device kinds OpenVINO sees here (GPU.0 and GPU.1 are both "GPU"): the boards ovdoc is for
    have a GPU and sometimes an NPU, a CI box has neither, so expectations follow this, not a guess."""
    import openvino as ov

    return {d.split(".")[0] for d in ov.Core().available_devices}


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory, seed_dir, magnetic_tile_dir, cifar10_npz):
    from ovdoc.runtime.bundle import fit_bundle

    root = tmp_path_factory.mktemp("bench")
    ir = build_seed_ir(seed_dir, root / "ir")
    files = tile_files(magnetic_tile_dir)
    normal = root / "normal"
    normal.mkdir()
    for f in files[:24]:
        (normal / f.name).symlink_to(f)
    eval_n = root / "eval_normal"
    eval_n.mkdir()
    for f in files[24:36]:
        (eval_n / f.name).symlink_to(f)
    # anomalies any working detector separates from tiles: the seed model is a faces network, which
    # scores tile defects no better than chance (Blowhole: AUC 0.31 measured), so a bound on them could
    # not tell a broken pipeline from a working one; CIFAR photos score 1.0 with kNN and LOF
    eval_a = write_pngs(cifar_images(cifar10_npz, 12), root / "eval_anomalous")
    bundle = root / "bundle"
    fit_bundle(ir, normal, bundle, progress=False)
    return {"root": root, "ir": ir, "bundle": bundle, "normal": normal, "eval_n": eval_n, "eval_a": eval_a}


@pytest.fixture(scope="module")
def bench_run(bench_data, video_dir):
    """One real run: FP32/FP16 on CPU (and GPU/NPU where present), two batch sizes, three scorers (bench's
    old names flat/hnsw as aliases), absent devices listed, AUC, baselines, files."""
    out = bench_data["root"] / "out"
    proc = ovdoc_cli(
        "bench", str(bench_data["bundle"]), "--source", str(video_dir / "vtest.avi"), "--res", "320x240",
        "--frames", str(FRAMES), "--devices", "CPU,GPU,NPU", "--precisions", "FP32,FP16", "--batch", "1,4",
        "--hints", "throughput", "--repeats", "2", "--scorers", "flat,hnsw,lof",  # aliases of SCORERS
        "--calib", str(bench_data["normal"]),
        "--eval-normal", str(bench_data["eval_n"]), "--eval-anomalous", str(bench_data["eval_a"]),
        "--baselines", "--out", str(out), "--json", timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), out, proc.stderr


@pytest.mark.slow
def test_every_combination_measured(bench_run):
    result, _, _ = bench_run
    rows = result["results"]
    combos = {(r["device"], r["precision"], r["batch"], r["hint"], r["scorer"]) for r in rows}
    devices = {"CPU", "GPU", "NPU"} & present_devices()
    expected = {(d, p, b, "throughput", s) for d in devices for p in ("FP32", "FP16") for b in (1, 4)
                for s in SCORERS}
    assert combos == expected
    assert result["config"]["scorers"] == list(SCORERS)
    assert {(r["scorer"], r["scorer_kind"], r["index"]) for r in rows} == {
        ("knn:flat", "knn", "flat"), ("knn:hnsw", "knn", "hnsw"), ("lof", "lof", None)}
    for r in rows:
        assert "error" not in r, r
        assert r["model_ips"] > 0 and r["pipeline_fps"] > 0
        assert r["pipeline_frames"] == FRAMES  # every configuration ran on the same frames
        assert len(r["pipeline_fps_runs"]) == 2 and min(r["pipeline_fps_runs"]) > 0
        # the pipeline runs the model plus decoding: it cannot outrun the model alone (20 % for noise)
        assert r["pipeline_fps"] <= 1.2 * r["model_ips"], r
        # async throughput at least matches one synchronous request's (units and batch size agree)
        assert r["model_ips"] >= 0.8 * r["batch"] * 1000.0 / r["latency_ms_p50"], r
        assert r["scorer_us_per_query"] > 0
        assert r["auc"] >= 0.9, r  # measured 1.0; random, constant or inverted scores give <= ~0.7
        assert r["first_result_s_cold"] > 0 and r["first_result_s_warm"] > 0
        assert r["index_vectors"] == 24  # re-indexed from --calib by this precision's own model
        if r["device"] == "CPU":
            assert r["inference_precision"] == "f32"  # pinned: AVX512-BF16/AMX CPUs would run bf16
        # measured on the same frames at the same --res: within two orders of magnitude of the pipeline (a
        # units slip is 1000x; 0.028 was seen with the 2 CPUs shared ~30 ways, so not one order)
        assert 0.01 < r["fraction_of_ceiling"] < 2.0, (r["pipeline_fps"], result["ceiling"])
    # exact and HNSW kNN agree on AUC at this size; FP16 weights stay close to FP32
    by = {(r["precision"], r["batch"], r["scorer"]): r["auc"] for r in rows if r["device"] == "CPU"}
    assert by[("FP32", 1, "knn:flat")] == pytest.approx(by[("FP32", 1, "knn:hnsw")], abs=1e-3)
    assert by[("FP16", 1, "knn:flat")] == pytest.approx(by[("FP32", 1, "knn:flat")], abs=0.05)


@pytest.mark.slow
def test_absent_devices_are_listed_with_reasons(bench_run):
    result, _, stderr = bench_run
    skipped = {s["device"]: s["reason"] for s in result["skipped"] if "device" in s}
    absent = {"GPU", "NPU"} - present_devices()
    assert set(skipped) == absent
    for device in absent:
        assert "not available" in skipped[device] and "CPU" in skipped[device]  # says what is present
        assert f"skipped {device}" in stderr  # the terminal table says so too


@pytest.mark.slow
def test_json_schema_ceiling_and_baselines(bench_run):
    result, _, _ = bench_run
    m = result["machine"]
    for key in ("cpu_model", "logical_cores", "isa", "openvino", "os", "devices"):
        assert key in m
    assert result["ceiling"]["decode_fps"] > 0
    b = result["baselines"]
    assert set(b) >= {"original_app_fps", "openvino_2019_fps", "speedup_vs_original_app",
                      "speedup_vs_openvino_2019", "best_speedup_vs_openvino_2019"}
    assert b["openvino_2019_fps"] > 0
    # like with like: the speed-up is taken from the CPU FP32 LOF row (the 2019 loop's own precision and
    # scorer), the fastest of those; the best configuration of the run is a separate figure
    like_rows = [r for r in result["results"]
                 if (r["device"], r["precision"], r["scorer"]) == ("CPU", "FP32", "lof")]
    like = max(like_rows, key=lambda r: r["pipeline_fps"])
    assert b["ovdoc_like"] == {k: like[k] for k in b["ovdoc_like"]}
    assert b["ovdoc_best"]["pipeline_fps"] == max(r["pipeline_fps"] for r in result["results"])
    assert b["best_speedup_vs_openvino_2019"] >= b["speedup_vs_openvino_2019"]
    assert b["speedup_vs_openvino_2019"] > 1.0, b  # batched async beats sync batch-1 with the same LOF
    # the seed IR here comes from ONNX: no Keras source recorded, so the Keras loop is skipped with why
    assert b["original_app_fps"] is None and "Keras" in b["original_app_skipped"]


@pytest.mark.slow
def test_output_files(bench_run):
    result, out, _ = bench_run
    saved = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    assert saved["results"] == result["results"]
    md = (out / "bench.md").read_text(encoding="utf-8")
    assert md.count("\n| CPU ") == len(result["results"])
    for png in ("bench-fps.png", "bench-accuracy.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_without_normal_images_fp32_uses_bundle_index_and_no_tensorflow(bench_data, video_dir, tmp_path):
    """A bundle fitted from images in memory: FP16/INT8 cannot be re-indexed, so they are skipped with
    the reason; FP32 scores with the stored index. TensorFlow is never imported by bench."""
    from ovdoc.runtime.bundle import fit_bundle_images
    from ovdoc.runtime.datasets import load_unlabelled

    bundle = tmp_path / "mem.bundle"
    fit_bundle_images(bench_data["ir"], load_unlabelled(bench_data["normal"]).images, bundle, progress=False)
    code = (
        "import json, sys\n"
        "from ovdoc.cli import cli\n"
        f"cli.main(['bench', {str(bundle)!r}, '--source', {str(video_dir / 'bikes.mp4')!r}, '--frames', '8',"
        " '--batch', '2', '--hints', 'latency', '--scorers', 'flat', '--json'], standalone_mode=False)\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'bench imported TF'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
            encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    reasons = {s["precision"]: s["reason"] for s in result["skipped"] if "precision" in s}
    assert set(reasons) == {"FP16", "INT8"} and "--calib" in reasons["INT8"]
    [row] = result["results"]
    assert row["precision"] == "FP32" and row["pipeline_fps"] > 0 and "bundle" in row["index_note"]
    assert row["auc"] is None


@pytest.mark.slow
def test_an_ascii_only_terminal_gets_the_report_not_a_crash(bench_data, video_dir):
    """CI and many boards run with `LC_ALL=C` and no UTF-8 mode: the table's `µs` must not crash the
    run after the measurement (the characters the stream cannot encode become `?`)."""
    env = dict(os.environ, LC_ALL="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0", PYTHONWARNINGS="ignore")
    env.pop("PYTHONIOENCODING", None)
    cmd = [sys.executable, "-m", "ovdoc", "bench", str(bench_data["bundle"]), "--source",
           str(video_dir / "bikes.mp4"), "--frames", "4", "--batch", "1", "--hints", "latency",
           "--scorers", "flat", "--precisions", "FP32", "--out", str(bench_data["bundle"].parent / "ascii")]
    proc = subprocess.run(cmd, capture_output=True, timeout=300, env=env)
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr[-3000:]
    # the whole table was printed: click writes UTF-8 to a stream it finds misconfigured as ASCII; had
    # anything gone to the ASCII stream itself, `?` would stand in for what it cannot encode
    assert b"score \xc2\xb5s" in proc.stdout or b"score ?s" in proc.stdout, proc.stdout[-2000:]
    assert b"pipeline FPS" in proc.stdout and (bench_data["bundle"].parent / "ascii" / "bench.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, needle",
    [
        (["--precisions", "FP64"], "unknown precision"),
        (["--batch", "1,x"], "--batch"),
        (["--eval-normal", "."], "--eval-anomalous"),
        (["--source", "/nonexistent.avi"], "not found"),
    ],
)
def test_bad_options_are_one_line(bench_data, video_dir, args, needle):
    base = ["bench", str(bench_data["bundle"]), "--source", str(video_dir / "vtest.avi")]
    proc = ovdoc_cli(*base, *args)
    assert proc.returncode != 0
    assert needle in error_line(proc)


def test_read_cpuinfo_parses_flags(tmp_path):
    from ovdoc.runtime.bench.machine import CPU_FLAGS, read_cpuinfo

    text = ("processor\t: 0\nmodel name\t: Test CPU\nphysical id\t: 0\ncore id\t: 0\nflags\t\t: sse avx2 "
            "avx512f avx512_vnni amx_tile\n\nprocessor\t: 1\nmodel name\t: Test CPU\nphysical id\t: 0\n"
            "core id\t: 0\nflags\t\t: sse avx2 avx512f avx512_vnni amx_tile\n\n")
    (tmp_path / "cpuinfo").write_text(text)
    info = read_cpuinfo(tmp_path / "cpuinfo")
    assert info["cpu_model"] == "Test CPU"
    assert info["logical_cores"] == 2 and info["physical_cores"] == 1  # hyper-threads of one core
    assert {CPU_FLAGS[f] for f in ("avx2", "avx512_vnni", "amx_tile")} <= {
        CPU_FLAGS[f] for f in info["flags"] if f in CPU_FLAGS}
    assert read_cpuinfo(tmp_path / "missing") == {}


@pytest.mark.slow
def test_int8_on_a_runtime_only_install_is_one_skip_line(bench_data, video_dir):
    """Without NNCF (a board's runtime-only install) INT8 is skipped with what to install, not a traceback."""
    code = (
        "import json, sys\n"
        "for m in ('nncf', 'tensorflow', 'keras', 'tf_keras'): sys.modules[m] = None\n"
        "from ovdoc.cli import cli\n"
        f"cli.main(['bench', {str(bench_data['bundle'])!r}, '--source', {str(video_dir / 'bikes.mp4')!r},"
        f" '--frames', '4', '--precisions', 'INT8', '--calib', {str(bench_data['normal'])!r}, '--json'],"
        " standalone_mode=False)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
            encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    reasons = {s["precision"]: s["reason"] for s in json.loads(proc.stdout)["skipped"] if "precision" in s}
    assert "NNCF" in reasons["INT8"] and "pip install 'ovdoc[train]'" in reasons["INT8"]
    assert "skipped INT8" in proc.stderr


def test_split_for_int8_never_reports_on_the_images_that_accepted_int8():
    from ovdoc.errors import OvdocError
    from ovdoc.runtime.bench.suite import split_for_int8

    normal, anomalous = [f"n{i}" for i in range(7)], [f"a{i}" for i in range(4)]
    (sel_n, sel_a), (rep_n, rep_a) = split_for_int8(normal, anomalous)
    assert sorted(sel_n + rep_n) == normal and sorted(sel_a + rep_a) == anomalous
    assert not set(sel_n) & set(rep_n) and not set(sel_a) & set(rep_a)
    assert (len(sel_n), len(rep_n), len(sel_a), len(rep_a)) == (4, 3, 2, 2)
    assert split_for_int8(normal, anomalous) == ((sel_n, sel_a), (rep_n, rep_a))  # seeded
    with pytest.raises(OvdocError, match="at least 2 images of each"):
        split_for_int8(normal, ["a0"])


@pytest.mark.slow
def test_int8_is_accepted_on_other_eval_images_than_the_reported_aucs(bench_data, video_dir):
    """INT8 chosen and reported on the same images would flatter it (#10): bench accepts it on one half
    of --eval-* and reports every row's AUC on the other half."""
    proc = ovdoc_cli(
        "bench", str(bench_data["bundle"]), "--source", str(video_dir / "bikes.mp4"), "--frames", "4",
        "--precisions", "FP32,INT8", "--batch", "1", "--hints", "latency", "--scorers", "flat",
        "--calib", str(bench_data["normal"]), "--eval-normal", str(bench_data["eval_n"]),
        "--eval-anomalous", str(bench_data["eval_a"]), "--max-auc-drop", "1.0",
        "--out", str(bench_data["root"] / "int8"), "--json", timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    cfg = result["config"]
    assert cfg["int8_selection_images"] == [6, 6] and (cfg["eval_normal"], cfg["eval_anomalous"]) == (6, 6)
    assert result["int8"]["accuracy_verified"] and "INT8" in {r["precision"] for r in result["results"]}
    assert all(0.0 <= r["auc"] <= 1.0 for r in result["results"])
    assert "accepted on 6+6 eval images" in proc.stderr and "on the other 6+6" in proc.stderr


@pytest.mark.slow
def test_stream_density(video_dir, tmp_path):
    """`ovdoc bench --density`: copies of a real clip as 30 FPS cameras on one shared model, each count
    judged by frame rate kept up, no schedule slips and p99 latency; files written."""
    from ovdoc.irmodels import demo_bundle

    out = tmp_path / "density"
    proc = ovdoc_cli("bench", str(demo_bundle()), "--source", str(video_dir / "vtest.avi"),
                     "--density", "1,2", "--density-seconds", "3", "--out", str(out), "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    rows = result["rows"]
    assert [r["cameras"] for r in rows][:1] == [1] and result["mode"] == "global"
    for r in rows:
        # a real replay at 30 FPS: each camera delivers about 30 frames a second, never much more
        assert 20 < r["min_fps"] <= 31 and r["total_fps"] <= 31 * r["cameras"]
        assert 0 < r["median_latency_ms_p50"] <= r["max_latency_ms_p99"]
        assert r["steal_pct"] is None or 0.0 <= r["steal_pct"] <= 100.0  # None off Linux
        if r["passed"]:  # the contract a pass stands for
            assert r["min_fps"] > 28 and r["late_resets"] == 0 and r["max_latency_ms_p99"] < 100
    assert result["density"] == max([r["cameras"] for r in rows if r["passed"]], default=0)
    assert sorted(p.name for p in out.iterdir()) == ["density.json", "density.md"]
    assert "| cameras | passed |" in (out / "density.md").read_text(encoding="utf-8")


def test_steal_share_from_cpu_counters():
    """VM steal share between two /proc/stat readings (user nice system idle iowait irq softirq steal)."""
    from ovdoc.runtime.bench.density import cpu_times, steal_pct

    assert steal_pct([0] * 8, [10, 0, 10, 70, 0, 0, 0, 10]) == 10.0
    assert steal_pct(None, [1] * 8) is None and steal_pct([0] * 8, [0] * 8) is None
    now = cpu_times()
    assert now is None or (len(now) == 8 and all(v >= 0 for v in now))
