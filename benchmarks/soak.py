"""Soak run: `ovdoc run` for a long time on a clip standing in for a camera, watched from outside.

`ovdoc run BUNDLE --source vtest.avi --res 640x480 --loop --realtime --duration MINUTES*60 --headless
--events EVENTS --save-video VIDEO --json --batch 1` runs as a subprocess (the real console script,
paced at the clip's own 10 FPS and restarting at its end), while this script samples, every
`--interval` seconds from /proc/PID: resident memory (VmRSS), threads (Threads) and open file
descriptors (entries of fd/), plus the process's CPU time and the machine's load average. At the end
it checks:

  memory   flat after warm-up: growth < 5 %. Warm-up = the first max(2 min, 10 % of the run) — model
           compilation, the first allocations of OpenVINO's and FAISS's pools, the video writer's buffers.
           baseline = median RSS of the samples in the minute after warm-up; end = median RSS of the last
           minute; growth = end / baseline - 1. The maximum after warm-up is reported too.
  threads  no growth: end (median of the last minute) <= baseline (same windows as memory)
  fds      no growth: the same rule for open file descriptors (sockets, files, pipes)
  events   the events file parses line by line, one line per scored frame, frames numbered 0..N-1 with
           no gap, N = the run's own summary `frames`; incident lines (`source_looped`) counted apart
  video    the saved video opens and holds exactly N frames (counted by reading, not from the header)
  pace     keeping up: every camera delivered >= 99 % of its schedule (run seconds x the clip's FPS) and
           re-anchored its --realtime schedule at most once (the first frames wait for the model's first
           inference); a run that passed the checks above while falling behind is no pass
  mqtt     (--mqtt) nothing dropped, and a subscriber on the same broker got `online` and every camera's
           score stream (`--mqtt auto` starts Debian's mosquitto on a free loopback port)

`--modes global,patch` soaks each bundle kind in turn (global: the shipped backbone; patch: `ovdoc fit
--mode patch`), each with its own verdict; the record names the commit it ran (git describe, dirty marked).

Results: benchmarks/results/soak.json (every sample), soak.md (a short table), soak.png (RSS, threads
and fds over time). The events file and the video (about 1 GB for 30 minutes) go to a temporary folder
and are deleted after the checks unless --keep.

    nice -n 10 python benchmarks/soak.py                  # 30 minutes (the recorded run)
    nice -n 10 python benchmarks/soak.py --minutes 30 --cameras 4 --serve --modes global,patch --mqtt auto
    nice -n 10 python benchmarks/soak.py --minutes 3 --out /tmp/soak   # a smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OVDOC_SHARED", REPO.parent / "shared")).resolve()
VIDEO = SHARED / "data" / "video" / "vtest.avi"
MAX_GROWTH = 0.05
MIN_WARMUP_S = 120.0
WARMUP_FRACTION = 0.10
WINDOW_S = 60.0
SHUTDOWN_S = 15.0  # --serve: the web server stops while videos are finished and the summary written
MIN_DELIVERED = 0.99  # of the schedule: run seconds x the clip's FPS, per camera
MAX_LATE_RESETS = 1  # --realtime re-anchors per camera: the first frames may wait for the first inference
MOSQUITTO = Path("/usr/sbin/mosquitto")  # Debian installs it outside a user's PATH


# --- sampling --------------------------------------------------------------------------------------


def sample_proc(pid: int) -> dict | None:
    """RSS (bytes), threads, open fds and CPU seconds of `pid` from /proc; None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:  # a zombie: gone for our purposes
        return None
    rss = int(fields["VmRSS"].split()[0]) * 1024
    threads = int(fields["Threads"])
    ticks = os.sysconf("SC_CLK_TCK")
    after_comm = stat.rsplit(")", 1)[1].split()
    cpu_s = (int(after_comm[11]) + int(after_comm[12])) / ticks  # utime + stime
    return {"rss": rss, "threads": threads, "fds": fds, "cpu_s": round(cpu_s, 2)}


# --- analysis (unit-tested in tests/test_soak.py) ----------------------------------------------------


def warmup_seconds(duration_s: float) -> float:
    """Warm-up: the first max(2 min, 10 % of the run), capped at half the run for short smoke runs."""
    return min(max(MIN_WARMUP_S, WARMUP_FRACTION * duration_s), 0.5 * duration_s)


def _window(samples: list[dict], start: float, end: float, key: str) -> list[float]:
    return [s[key] for s in samples if start <= s["t"] <= end]


def analyse_samples(samples: list[dict], max_growth: float = MAX_GROWTH) -> dict:
    """Verdict on memory, threads and fds from samples [{t, rss, threads, fds}, ...] (t in seconds).

    Baseline = medians over the minute after warm-up, end = medians over the last minute; memory
    passes when end/baseline - 1 < max_growth, threads and fds when end <= baseline.
    """
    if len(samples) < 3:
        return {"ok": False, "reason": f"only {len(samples)} samples"}
    t_end = samples[-1]["t"]
    warm = warmup_seconds(t_end)
    window = min(WINDOW_S, max((t_end - warm) / 3, 1e-9))
    out: dict = {"warmup_s": round(warm, 1), "window_s": round(window, 1), "ok": True, "failures": []}
    for key in ("rss", "threads", "fds"):
        base = _window(samples, warm, warm + window, key)
        last = _window(samples, t_end - window, t_end, key)
        after = _window(samples, warm, t_end, key)
        if not base or not last:
            return {"ok": False, "reason": f"no {key} samples in the baseline or end window"}
        b, e = statistics.median(base), statistics.median(last)
        entry = {
            "start": samples[0][key],
            "baseline": b,
            "end": e,
            "max": max(s[key] for s in samples),
            "max_after_warmup": max(after),
            "growth": round(e / b - 1, 5) if b else 0.0,
        }
        ok = entry["growth"] < max_growth if key == "rss" else e <= b
        entry["ok"] = ok
        out[key] = entry
        if not ok:
            out["ok"] = False
            rule = f"< {max_growth:.0%}" if key == "rss" else "no growth"
            out["failures"].append(f"{key} {b:g} -> {e:g} ({entry['growth']:+.1%}, wanted {rule})")
    return out


def check_events(path: Path, expected_frames: int | list[int]) -> dict:
    """Every line parses; each camera's scored lines are frames 0..N-1 in order with no gap, N its own
    summary count (several cameras: `expected_frames` is a list, lines carry `camera`)."""
    expected = expected_frames if isinstance(expected_frames, list) else [expected_frames]
    per_camera: dict[int, list[int]] = {i: [] for i in range(len(expected))}
    incidents: dict[str, int] = {}
    bad = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if "event" in record:  # source incidents and anomaly episodes
                incidents[record["event"]] = incidents.get(record["event"], 0) + 1
            elif "frame" in record and int(record.get("camera", 0)) in per_camera:
                per_camera[int(record.get("camera", 0))].append(int(record["frame"]))
            else:
                bad += 1
    counts = [len(per_camera[i]) for i in range(len(expected))]
    contiguous = all(f == list(range(len(f))) for f in per_camera.values())
    ok = bad == 0 and contiguous and counts == expected
    return {
        "ok": ok,
        "lines_unparseable": bad,
        "frames": sum(counts) if len(counts) > 1 else counts[0],
        "frames_per_camera": counts,
        "expected_frames": expected_frames,
        "contiguous": contiguous,
        "incidents": incidents,
    }


def check_video(path: Path, expected_frames: int) -> dict:
    """The saved video opens and holds exactly expected_frames frames, counted by reading them."""
    import cv2

    if not path.is_file():
        return {"ok": False, "reason": f"{path} was not written"}
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        return {"ok": False, "reason": f"{path} does not open"}
    header = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    counted = 0
    while cap.grab():
        counted += 1
    cap.release()
    return {
        "ok": counted == expected_frames,
        "frames_counted": counted,
        "frames_header": header,
        "expected_frames": expected_frames,
        "size": list(size),
        "bytes": path.stat().st_size,
    }


def check_pace(summary: dict, cameras: int, duration_s: float, fps: float) -> dict:
    """Did every camera keep up? delivered / scheduled >= MIN_DELIVERED (scheduled = duration x the clip's
    FPS) and late re-anchors <= MAX_LATE_RESETS (each one means the run fell behind its schedule)."""
    per = summary.get("sources") or [summary]
    scheduled = duration_s * fps
    cams = []
    for i in range(cameras):
        lane = per[i] if i < len(per) else {}
        frames, late = int(lane.get("frames", 0)), lane.get("late_resets")
        delivered = frames / scheduled if scheduled > 0 else 0.0
        cams.append({"frames": frames, "scheduled": round(scheduled), "delivered": round(delivered, 4),
                     "late_resets": late,
                     "ok": delivered >= MIN_DELIVERED and late is not None and late <= MAX_LATE_RESETS})
    failures = [f"camera {i}: {c['delivered']:.1%} of its schedule, {c['late_resets']} late re-anchors "
                f"(wanted >= {MIN_DELIVERED:.0%}, <= {MAX_LATE_RESETS})" for i, c in enumerate(cams)
                if not c["ok"]]
    return {"ok": not failures and bool(cams), "cameras": cams, "failures": failures,
            "min_delivered": min((c["delivered"] for c in cams), default=0.0),
            "late_resets": sum(c["late_resets"] or 0 for c in cams)}


def commit() -> str:
    """The commit the soak ran, `-dirty` when the checkout had uncommitted changes."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=REPO,
                              capture_output=True, text=True, timeout=30).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def clip_fps(video: Path) -> float:
    import cv2

    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    cap.release()
    return float(fps) if fps and fps > 0 else 10.0


# --- the run --------------------------------------------------------------------------------------


def fit_bundle(video: Path, out: Path, mode: str = "global") -> Path:
    """A bundle from the shipped ImageNet backbone on the clip's first frames (what a user would fit)."""
    frames = out / "normal"
    frames.mkdir(parents=True, exist_ok=True)
    import cv2

    cap = cv2.VideoCapture(str(video))
    for i in range(200):
        ok, image = cap.read()
        if not ok:
            break
        if i % 2 == 0:
            cv2.imwrite(str(frames / f"{i:04d}.png"), cv2.resize(image, (640, 480)))
    cap.release()
    bundle = out / f"vtest-{mode}.bundle"
    subprocess.run(
        [sys.executable, "-m", "ovdoc", "fit", "--normal", str(frames), "--out", str(bundle), "--mode", mode],
        check=True,
    )
    return bundle


class Broker:
    """`--mqtt auto`: Debian's mosquitto on a free loopback port for the run, and a subscriber on it that
    counts what arrives per topic (the far side of ovdoc's MQTT output)."""

    def __init__(self, work: Path, url: str) -> None:
        import threading

        from paho.mqtt import client as mqtt

        self.proc = None
        if url == "auto":
            if not MOSQUITTO.exists():
                raise SystemExit("--mqtt auto needs Debian's mosquitto (apt-get install mosquitto)")
            port = free_port()
            conf = work / "mosquitto.conf"
            conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                            + ("user root\n" if os.geteuid() == 0 else ""))
            self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(conf)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            url = f"mqtt://127.0.0.1:{port}/soak"
        self.url = url
        host_port, _, self.prefix = url.removeprefix("mqtt://").partition("/")
        host, _, port_text = host_port.partition(":")
        self.counts: dict[str, int] = {}
        self.status: list[str] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"soak-{os.getpid()}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{self.prefix}/#", qos=0)
        self.client.on_message = self._on_message
        deadline = time.monotonic() + 30
        while True:  # the broker takes a moment to listen: retry until it does (bounded)
            try:
                self.client.connect(host, int(port_text or 1883))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"cannot reach the MQTT broker at {url}") from None
                time.sleep(0.1)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.counts[msg.topic] = self.counts.get(msg.topic, 0) + 1
            if msg.topic.endswith("/status"):
                self.status.append(msg.payload.decode(errors="replace"))

    def report(self, cameras: int, summary: dict) -> dict:
        self.client.loop_stop()
        self.client.disconnect()
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
        stats = (summary.get("outputs") or {}).get("mqtt", {})
        scores = [self.counts.get(f"{self.prefix}/cam{i}/score", 0) for i in range(cameras)]
        ok = (stats.get("dropped") == 0 and stats.get("connects", 0) >= 1 and "online" in self.status
              and all(n > 0 for n in scores))
        return {"ok": ok, "url": self.url, "published": stats.get("published"),
                "dropped": stats.get("dropped"), "connects": stats.get("connects"),
                "status_seen": self.status,
                "score_messages_per_camera": scores, "topics": len(self.counts)}


class Viewer:
    """The web view kept open the way a browser keeps it: camera 0's MJPEG stream and the event stream
    read continuously, /api/status and /metrics polled; every failed request counted."""

    def __init__(self, port: int, cameras: int) -> None:
        import threading

        self.base = f"http://127.0.0.1:{port}"
        self.cameras = cameras
        self.stop = threading.Event()
        self.errors: list[float] = []  # when each request failed (monotonic)
        self.polls = 0
        self.bytes = {"stream": 0, "events": 0}
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self._stream, self._events, self._poll)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _read(self, path: str, key: str) -> None:
        import urllib.request

        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(self.base + path, timeout=30) as r:
                    while not self.stop.is_set():
                        chunk = r.read(65536)
                        if not chunk:
                            break
                        self.bytes[key] += len(chunk)
            except (OSError, http.client.HTTPException):
                self.errors.append(time.monotonic())
                self.stop.wait(2.0)

    def _stream(self) -> None:
        self._read("/stream/0", "stream")

    def _events(self) -> None:
        self._read("/api/events", "events")

    def _poll(self) -> None:
        import urllib.request

        while not self.stop.wait(10.0):
            for path in ("/api/status", "/metrics"):
                try:
                    with urllib.request.urlopen(self.base + path, timeout=10) as r:
                        r.read()
                    self.polls += 1
                except (OSError, http.client.HTTPException):
                    self.errors.append(time.monotonic())

    def report(self, run_ended: float) -> dict:
        """Failures before the run's last SHUTDOWN_S count (its own end closes every stream)."""
        self.stop.set()
        errors = [t for t in self.errors if t < run_ended - SHUTDOWN_S]
        return {"http_errors": len(errors), "errors_at_shutdown": len(self.errors) - len(errors),
                "polls": self.polls, "bytes": self.bytes}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout_s: float = 120.0) -> bool:
    """Until the web view accepts connections (model loaded, server up), or the run ended; bounded."""
    import socket

    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def run_soak(args: argparse.Namespace, work: Path, mode: str = "global") -> dict:
    bundle = Path(args.bundle) if args.bundle else fit_bundle(Path(args.source), work / mode, mode)
    events, video = work / "events.jsonl", work / "soak.avi"
    duration = args.minutes * 60.0
    cmd = [
        sys.executable, "-m", "ovdoc", "run", str(bundle),
        *[a for _ in range(args.cameras) for a in ("--source", str(args.source))],
        "--res", args.res, "--loop", "--realtime", "--duration", f"{duration:g}", "--headless",
        "--events", str(events), "--save-video", str(video), "--json", "--batch", str(args.batch),
    ]  # fmt: skip
    port = free_port() if args.serve else None
    if port is not None:
        cmd += ["--serve", f"127.0.0.1:{port}"]
    broker = Broker(work / mode, args.mqtt) if args.mqtt else None
    if broker is not None:
        cmd += ["--mqtt", broker.url]
    print(" ".join(cmd), flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            encoding="utf-8", errors="replace")
    viewer = None
    if port is not None and wait_listening(port, proc):
        viewer = Viewer(port, args.cameras)
        viewer.start()
    samples: list[dict] = []
    next_t = started + args.interval  # the first sample once the process is up, not its exec
    while proc.poll() is None:
        now = time.monotonic()
        if now >= next_t:
            s = sample_proc(proc.pid)
            if s is not None:
                s["t"] = round(now - started, 2)
                s["load1"] = round(os.getloadavg()[0], 2)
                samples.append(s)
                if len(samples) % 30 == 1:
                    print(f"t={s['t']:.0f}s rss={s['rss'] / 2**20:.1f} MiB threads={s['threads']} "
                          f"fds={s['fds']} load={s['load1']}", flush=True)
            next_t += args.interval
        time.sleep(min(1.0, max(0.05, next_t - time.monotonic())))
    out, err = proc.communicate()
    wall = time.monotonic() - started
    try:
        summary = json.loads(out)
    except json.JSONDecodeError:
        summary = {"error": f"no JSON summary (exit {proc.returncode}): {err.strip()[-500:]}"}
    per = summary.get("sources")
    frames = [int(p["frames"]) for p in per] if per else int(summary.get("frames", -1))
    videos = [video.with_name(f"{video.stem}-{i}{video.suffix}") for i in range(args.cameras)] \
        if args.cameras > 1 else [video]
    checked = [check_video(v, n) for v, n in zip(videos, frames if per else [frames], strict=True)]
    result = {
        "command": cmd,
        "returncode": proc.returncode,
        "stderr_tail": err.strip()[-2000:],
        "wall_s": round(wall, 1),
        "summary": summary,
        "samples": samples,
        "memory": analyse_samples(samples),
        "events": check_events(events, frames) if events.exists() else {"ok": False, "reason": "missing"},
        "video": checked[0] | {"per_camera": checked, "ok": all(c["ok"] for c in checked)},
        "cameras": args.cameras,
        "mode": mode,
        "bundle": str(bundle),
        "web_view": viewer.report(started + wall) if viewer is not None else None,
        "pace": check_pace(summary, args.cameras, duration, clip_fps(Path(args.source))),
        "mqtt": broker.report(args.cameras, summary) if broker is not None else None,
    }
    web_ok = not args.serve or (viewer is not None and result["web_view"]["http_errors"] == 0
                                and result["web_view"]["polls"] > 0)
    result["ok"] = bool(
        proc.returncode == 0
        and summary.get("stopped") == "duration"
        and result["memory"].get("ok")
        and result["events"].get("ok")
        and result["video"].get("ok")
        and web_ok
        and result["pace"]["ok"]
        and (broker is None or result["mqtt"]["ok"])
    )
    return result


def verdict_line(result: dict) -> str:
    if result["ok"]:
        return "PASS"
    why = list(result["memory"].get("failures", [])) + list(result["pace"].get("failures", []))
    for key in ("events", "video", "mqtt"):
        if result.get(key) is not None and not result[key].get("ok"):
            why.append(f"{key} check failed")
    if result["returncode"] != 0 or result["summary"].get("stopped") != "duration":
        why.append(f"run ended {result['summary'].get('stopped', 'without a summary')} "
                   f"(exit {result['returncode']})")
    if result.get("web_view") is not None and result["web_view"]["http_errors"]:
        why.append(f"{result['web_view']['http_errors']} web view errors")
    return "FAIL " + "; ".join(why)


def mode_rows(result: dict, args: argparse.Namespace) -> list[tuple[str, str]]:
    m, s, ev, vid = result["memory"], result["summary"], result["events"], result["video"]
    pace = result["pace"]
    loads = [x["load1"] for x in result["samples"]] or [0.0]
    mib = 2**20
    mq = result.get("mqtt")

    def trio(key: str, scale: float = 1.0, fmt: str = "{:.0f}") -> str:
        e = m.get(key, {})
        if not e:
            return "n/a"
        return " / ".join(fmt.format(e[k] / scale) for k in ("start", "baseline", "end", "max"))

    return [
        ("bundle", f"{result['mode']} mode ({Path(result['bundle']).name})"),
        ("minutes", f"{result['wall_s'] / 60:.1f} (asked {args.minutes:g})"),
        ("frames scored", f"{s.get('frames', 'n/a')} ({s.get('loops', 'n/a')} loop restarts, "
                          f"{s.get('dropped', 'n/a')} dropped)"),
        ("FPS", f"{s.get('fps', 'n/a')} (clip: 10 FPS per camera, --realtime)"),
        ("kept up: delivered of schedule, min over cameras",
         f"{pace['min_delivered']:.1%} (wanted >= {MIN_DELIVERED:.0%}); per camera "
         + ", ".join(f"{c['delivered']:.1%}" for c in pace["cameras"])),
        ("late re-anchors of the --realtime schedule", f"{pace['late_resets']} in all; per camera "
         + ", ".join(str(c["late_resets"]) for c in pace["cameras"])
         + f" (wanted <= {MAX_LATE_RESETS} each)"),
        ("RSS MiB start / baseline / end / max", trio("rss", mib, "{:.1f}")),
        ("RSS growth after warm-up", f"{m.get('rss', {}).get('growth', float('nan')):+.2%} "
                                     f"(warm-up {m.get('warmup_s', 'n/a')} s; limit < {MAX_GROWTH:.0%})"),
        ("threads start / baseline / end / max", trio("threads")),
        ("open fds start / baseline / end / max", trio("fds")),
        ("events file", f"{ev.get('frames', 'n/a')} frame lines, contiguous {ev.get('contiguous')}, "
                        f"{ev.get('lines_unparseable', 'n/a')} unparseable, incidents {ev.get('incidents')}"),
        ("saved video", f"{vid.get('frames_counted', 'n/a')} frames read back "
                        f"(expected {vid.get('expected_frames', 'n/a')}), {vid.get('size')}"),
        ("cameras", f"{result.get('cameras', 1)} (the same clip, one process, one model)"),
        ("web view", "off" if not result.get("web_view") else
         f"open all along: MJPEG {result['web_view']['bytes']['stream'] / mib:.0f} MiB and "
         f"{result['web_view']['bytes']['events'] / 1024:.0f} KiB of events read, "
         f"{result['web_view']['polls']} status/metrics polls, {result['web_view']['http_errors']} errors"),
        ("MQTT", "off" if not mq else
         f"{mq['url']}: {mq['published']} published, {mq['dropped']} dropped, {mq['connects']} connects; "
         f"subscriber saw status {mq['status_seen'][:2]} and score messages per camera "
         f"{mq['score_messages_per_camera']}"),
        ("load average (1 min) min / median / max",
         f"{min(loads):.2f} / {statistics.median(loads):.2f} / {max(loads):.2f} (2 cores, shared)"),
        ("process CPU s", f"{result['samples'][-1]['cpu_s'] if result['samples'] else 'n/a'}"),
        ("verdict", verdict_line(result)),
    ]


def write_report(record: dict, out: Path, args: argparse.Namespace) -> None:
    """soak.json (every sample of every mode), soak.md (a table per mode), soak.png / soak-<mode>.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(record, indent=1) + "\n")
    runs = record["runs"]
    options = (f"--minutes {args.minutes:g} --cameras {args.cameras}{' --serve' if args.serve else ''}"
               f" --modes {args.modes}{' --mqtt ' + args.mqtt if args.mqtt else ''}")
    lines = [
        "# Soak run",
        "",
        f"`python benchmarks/soak.py {options}` on {record['date']}, commit `{record['commit']}`, "
        f"{record['machine']}. `ovdoc run` on vtest.avi at {args.res}, "
        f"`--loop --realtime --batch {args.batch}`, events and saved video on, sampled every "
        f"{args.interval:g} s from /proc. Warm-up = first max(2 min, 10 % of the run); baseline = "
        "median of the minute after it, end = median of the last minute. Keeping up = every camera "
        f"delivered >= {MIN_DELIVERED:.0%} of its schedule with <= {MAX_LATE_RESETS} late re-anchor.",
        "",
        f"Overall: **{'PASS' if record['ok'] else 'FAIL'}**",
    ]
    for result in runs:
        png = "soak.png" if len(runs) == 1 else f"soak-{result['mode']}.png"
        lines += ["", f"## {result['mode']} mode", "", "| measure | value |", "|---|---|",
                  *[f"| {k} | {v} |" for k, v in mode_rows(result, args)], "",
                  f"![RSS, threads and fds over time]({png})"]
        plot(result, out / png)
    (out / "soak.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    if not samples:
        return
    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    for ax, key, label, scale in (
        (axes[0], "rss", "RSS (MiB)", 2**20),
        (axes[1], "threads", "threads", 1),
        (axes[2], "fds", "open fds", 1),
    ):
        ax.plot(t, [s[key] / scale for s in samples], lw=1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        warm = result["memory"].get("warmup_s")
        if warm is not None:
            ax.axvline(warm / 60, color="grey", ls="--", lw=0.8)
    axes[0].set_ylim(bottom=0)
    axes[-1].set_xlabel("minutes (dashed: end of warm-up)")
    fig.suptitle("ovdoc run --loop --realtime soak: vtest.avi 640x480, events + saved video")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between /proc samples")
    ap.add_argument("--source", default=str(VIDEO))
    ap.add_argument("--res", default="640x480")
    ap.add_argument(
        "--batch",
        type=int,
        default=1,
        help="a camera-paced source sends one frame at a time, and a static batch-8 model computes all "
        "8 slots for it (measured: ~1 core at 10 FPS for the 224 px backbone vs ~0.15 with batch 1)",
    )
    ap.add_argument("--bundle", default=None, help="default: fit one from the clip's first frames")
    ap.add_argument("--cameras", type=int, default=1, help="the clip as this many cameras in one process")
    ap.add_argument("--serve", action="store_true", help="web view on, kept open by a reader all along")
    ap.add_argument("--modes", default="global", help="bundle kinds soaked in turn: global, patch or both")
    ap.add_argument("--mqtt", default=None,
                    help="MQTT output to a real broker: mqtt://host:port/prefix, or `auto` for a mosquitto "
                    "started on loopback for the run")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--keep", action="store_true", help="keep the events file and the video")
    args = ap.parse_args(argv)
    if not Path(args.source).is_file():
        print(f"source not found: {args.source}", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - {"global", "patch"} or (args.bundle and len(modes) > 1):
        print("--modes must be global, patch or global,patch (one mode with --bundle)", file=sys.stderr)
        return 2
    if args.mqtt and args.mqtt != "auto" and not args.mqtt.startswith("mqtt://"):
        print("--mqtt must be mqtt://host:port/prefix or auto", file=sys.stderr)
        return 2
    import platform

    record = {"commit": commit()}  # before the run: what was checked out when it started
    work = Path(tempfile.mkdtemp(prefix="ovdoc-soak-"))
    try:
        runs = [run_soak(args, work, mode) for mode in modes]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")
    record |= {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()})",
        "ok": all(r["ok"] for r in runs),
        "runs": runs,
    }
    write_report(record, Path(args.out), args)
    print((Path(args.out) / "soak.md").read_text(encoding="utf-8"))
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    from ovdoc.log import tolerant_streams

    tolerant_streams()
    sys.exit(main())
