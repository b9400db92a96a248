"""`ovdoc run --config line.yaml --ray ADDRESS`: a line's cameras spread over a Ray cluster.

Cameras with the same bundle and the same `node:` label share one `CameraActor` (camera.py), which
compiles the bundle once and scores them in shared batches (`plan_groups` says how many share one).
Ray places an actor on a node with the CPUs it asks for (`--ray-cpus` per camera) and, when the line
config names one (`node: hall-2`), the custom resource of that name, which only the nodes that can reach
the camera advertise (`ray start --resources '{"hall-2": 1000}'`). The driver polls every actor for its
small records and hands them to the driver's own outputs (events file, MQTT, webhook, web view), so one
set of outputs serves the whole line, as in a one-box run; the web view's live picture is drawn on the
node only while someone watches it (`ClusterLine.picture`).

A node that dies, and the exactly-once promise for episodes:
- records are numbered per actor and leave the actor's buffer only when the driver acknowledges them in
  its next poll; the driver also keeps the last frame index it delivered per camera and drops anything at
  or before it, so a record is never delivered twice;
- a poll that fails (actor or node dead) or does not answer in POLL_TIMEOUT_S starts a move: the driver
  kills the old actor and starts a new one for the same cameras on any node with capacity (and their
  label), telling it to resume each camera after its last delivered frame (a file or folder replays
  from there: no frame is skipped; a live camera starts at its current frame), and writes a
  `camera_moved` event per camera;
- episode numbers are the driver's, per camera: an episode open when the node died is ended by the driver
  (`anomaly_end` with `"interrupted": "camera_moved"` at the last delivered frame), so every start has
  exactly one end; the new actor's episodes get the next numbers, never a number already reported.
A camera that cannot be placed again within MOVE_DEADLINE_S ends the run with one line.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from types import ModuleType

from ovdoc.errors import OvdocError
from ovdoc.runtime.stream.line_config import CameraSpec, LineConfig
from ovdoc.runtime.stream.messages import Command, Control, Result
from ovdoc.runtime.stream.sinks import Sink, SinkContext
from ovdoc.runtime.stream.sources import Frame

POLL_S = 0.1  # how often the driver asks each camera for its records
POLL_TIMEOUT_S = 10.0  # a camera that does not answer in this long is treated as lost
START_TIMEOUT_S = 60.0  # placing an actor and compiling its bundle
MOVE_DEADLINE_S = 90.0  # a lost camera runs again elsewhere within this, or the run fails
LABEL_SHARE = 0.001  # of a node label's resource per camera: labels place, CPUs limit
PICTURE_TIMEOUT_S = 2.0  # the web view's picture from a node


def _placeholder():
    """What the web view's picture shows under --ray: frames stay on the nodes (scores and chart are live)."""
    import cv2
    import numpy as np

    image = np.full((240, 320, 3), 48, np.uint8)
    cv2.putText(image, "frames stay on the node", (40, 200), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                (200, 200, 200), 1)
    image.flags.writeable = False  # shared by every result: outputs draw on copies
    return image


PLACEHOLDER = _placeholder()


@dataclass(eq=False)
class CameraState:
    """The driver's view of one camera: its group (actor), and what has been delivered."""

    index: int
    spec: CameraSpec
    name: str
    sinks: list[Sink]
    group: Group | None = None
    position: int = 0  # its place in the group's actor
    last_frame: int = -1  # last frame index delivered (across actors)
    episodes: int = 0  # driver-side episode numbers handed out
    local: dict = field(default_factory=dict)  # this actor's episode number -> the driver's
    open_episode: dict | None = None  # the anomaly_start delivered whose end has not come yet
    frames: int = 0
    anomalies: int = 0

    @property
    def node(self) -> dict:
        return self.group.node if self.group is not None else {}


@dataclass(eq=False)
class Group:
    """Cameras of one bundle and one label that share an actor (one compile, one batched scorer)."""

    index: int
    cameras: list[CameraState]
    actor: object = None
    node: dict = field(default_factory=dict)
    ack: int = 0  # last record number (of the current actor) delivered
    moves: int = 0
    compiles: int = 0  # the bundle's compiles in the current actor (1, plus reloads)
    cpu_s: float = 0.0  # CPU seconds of the group's actor processes (all of them, moves included)
    actor_cpu_s: float = 0.0  # of the current actor
    done: bool = False
    stopped: str | None = None

    @property
    def bundle(self) -> str:
        return self.cameras[0].spec.bundle

    @property
    def label(self) -> str | None:
        return getattr(self.cameras[0].spec, "node", None)


def plan_groups(specs: list[CameraSpec], cpus: float, nodes: list[dict]) -> list[list[int]]:
    """Which cameras share an actor: cameras with the same bundle and the same `node:` label (none is a
    label too), in config order, as many per actor as fit the biggest node that may run them at `cpus`
    each. Packed, not spread: a node that dies loses its cameras either way, and whole nodes left free
    are where a dead node's actor can move (it needs all its CPUs on one node).
    `nodes`: the alive nodes' resources (`ray.nodes()[i]["Resources"]`)."""
    keyed: dict[tuple[str, str | None], list[int]] = {}
    for i, spec in enumerate(specs):
        keyed.setdefault((spec.bundle, getattr(spec, "node", None)), []).append(i)
    groups = []
    for (_bundle, label), members in keyed.items():
        able = [n.get("CPU", 0.0) for n in nodes if label is None or n.get(label, 0) > 0]
        size = max(1, int(max(able, default=0.0) / cpus + 1e-9))  # none fits: one camera per actor
        groups += [members[at:at + size] for at in range(0, len(members), size)]
    return sorted(groups)


class ClusterLine:
    """Runs a line's cameras as Ray actors (grouped: `plan_groups`) and feeds their records to the
    driver's sinks."""

    def __init__(self, ray: ModuleType, line: LineConfig, options: dict, sinks: list[list[Sink]], *,
                 cpus: float = 1.0) -> None:
        self.ray = ray
        self.options = options
        self.cpus = cpus
        self.cameras = [CameraState(i, spec, spec.name or spec.source, sinks[i])
                        for i, spec in enumerate(line.cameras)]
        self.groups: list[Group] = []
        self.moved = 0
        self.stopping = False
        self.scoring = True
        self.web = None  # the driver's web view, when --serve

    # --- placement --------------------------------------------------------------------------------------
    def _alive_nodes(self) -> list[dict]:
        return [dict(n.get("Resources", {})) for n in self.ray.nodes() if n.get("Alive")]

    def _group(self) -> None:
        plan = plan_groups([cam.spec for cam in self.cameras], self.cpus, self._alive_nodes())
        for g, members in enumerate(plan):
            group = Group(g, [self.cameras[i] for i in members])
            for position, cam in enumerate(group.cameras):
                cam.group, cam.position = group, position
            self.groups.append(group)

    def _new_actor(self, group: Group):
        from ovdoc.cluster.camera import CameraActor

        n = len(group.cameras)
        resources = {group.label: LABEL_SHARE * n} if group.label else {}
        cameras = [{"source": cam.spec.source, "bundle": cam.spec.bundle, "name": cam.name,
                    "res": list(cam.spec.res) if cam.spec.res else None, "threshold": cam.spec.threshold,
                    "smooth": cam.spec.smooth} for cam in group.cameras]
        remote = self.ray.remote(CameraActor).options(num_cpus=self.cpus * n, resources=resources,
                                                      max_restarts=0, max_concurrency=4)
        return remote.remote(cameras, dict(self.options, cpus=self.cpus * n))

    def _check_labels(self) -> None:
        """A label no node advertises would leave its camera pending forever: say so before starting."""
        have = set(self.ray.cluster_resources())
        for cam in self.cameras:
            label = getattr(cam.spec, "node", None)
            if label and label not in have:
                raise OvdocError(f"camera {cam.name}: no node of the cluster has the label {label!r} (start "
                                 f"that node with ray start --resources '{{\"{label}\": 1000}}')")

    def _placed(self, group: Group, where: dict) -> None:
        group.node = where
        group.compiles = int(where.get("compiles", 1))

    def start(self) -> None:
        self._check_labels()
        self._group()
        refs = []
        for group in self.groups:
            group.actor = self._new_actor(group)
            refs.append(group.actor.start.remote(None))
        for group, ref in zip(self.groups, refs, strict=True):
            names = ", ".join(cam.name for cam in group.cameras)
            try:
                self._placed(group, self.ray.get(ref, timeout=START_TIMEOUT_S))
            except self.ray.exceptions.GetTimeoutError:
                cpus = self.cpus * len(group.cameras)
                raise OvdocError(f"camera {names}: no node could take it within {START_TIMEOUT_S:.0f} s "
                                 f"({cpus:g} CPU{'s' if cpus != 1 else ''}"
                                 f"{', label ' + group.label if group.label else ''})") from None
            except self.ray.exceptions.RayError as exc:
                from ovdoc.cluster.connect import cluster_error

                raise cluster_error(exc, f"camera {names}") from None

    def _move(self, group: Group, reason: str) -> None:
        """The group's actor is gone: close its cameras' open episodes, start them again elsewhere (each
        after its last delivered frame), say so per camera."""
        lost_at = time.time()
        old = dict(group.node)
        self._kill(group)  # already dead with its node, or hung: it must not come back
        for cam in group.cameras:
            if cam.open_episode is not None:
                start = cam.open_episode
                self._episode(cam, {"event": "anomaly_end", "source": cam.name, "episode": start["episode"],
                                    "frame": cam.last_frame, "start_frame": start["frame"],
                                    "time": time.time(), "interrupted": "camera_moved"}, renumbered=True)
        deadline = lost_at + MOVE_DEADLINE_S
        names = ", ".join(cam.name for cam in group.cameras)
        while True:
            group.actor = self._new_actor(group)
            try:
                where = self.ray.get(group.actor.start.remote([cam.last_frame for cam in group.cameras]),
                                     timeout=max(1.0, deadline - time.time()))
                break
            except self.ray.exceptions.RayError as exc:
                self._kill(group)
                if time.time() >= deadline:
                    raise OvdocError(f"camera {names} was lost ({reason}); no node could take it within "
                                     f"{MOVE_DEADLINE_S:.0f} s: {_cause(exc)}") from None
        self._placed(group, where)
        group.ack, group.actor_cpu_s = 0, 0.0
        if self.stopping:  # the run was ending (--duration, Ctrl-C): the new actor ends as the old would have
            group.actor.stop.remote()
        group.moves += 1
        self.moved += 1
        for cam in group.cameras:
            cam.local = {}
            self._event(cam, {"event": "camera_moved", "source": cam.name, "reason": reason,
                              "from_node": old.get("node_id"), "from_host": old.get("host"),
                              "to_node": group.node.get("node_id"), "to_host": group.node.get("host"),
                              "resumed_after_frame": cam.last_frame,
                              "down_s": round(time.time() - lost_at, 2), "time": time.time()})

    # --- records --------------------------------------------------------------------------------------
    def _event(self, cam: CameraState, record: dict) -> None:
        for sink in cam.sinks:
            sink.event(record)

    def _episode(self, cam: CameraState, record: dict, *, renumbered: bool = False) -> None:
        if not renumbered:
            local = record["episode"]
            if record["event"] == "anomaly_start":
                cam.episodes += 1
                cam.local[local] = cam.episodes
            record = record | {"episode": cam.local.pop(local, None) if record["event"] == "anomaly_end"
                               else cam.local[local]}
            if record["episode"] is None:  # the end of an episode the driver already ended
                return
        cam.open_episode = record if record["event"] == "anomaly_start" else None
        for sink in cam.sinks:
            sink.episode(dict(record))

    def _deliver(self, group: Group, records: list) -> None:
        for seq, record in records:
            if seq <= group.ack:
                continue
            cam = group.cameras[record["camera"]]
            kind = record["kind"]
            if kind == "frame":
                if record["frame"] > cam.last_frame:  # idempotent: a frame is delivered once
                    frame = Frame(record["frame"], record["timestamp"], PLACEHOLDER, cam.index)
                    result = Result(frame, record["score"], record["smoothed"], record["anomalous"],
                                    record["threshold"])
                    for sink in cam.sinks:
                        sink.handle(result)
                    cam.last_frame = record["frame"]
                    cam.frames += 1
                    cam.anomalies += bool(record["anomalous"])
            elif kind == "episode":
                self._episode(cam, record["record"])
            else:
                self._event(cam, record["record"])
            group.ack = seq

    def post(self, command: Command | Control, source_id: int | None = None) -> None:
        """A driver-side output (web view slider, MQTT, ...) asked for a change: the node running the
        camera applies it (every camera when the command names none)."""
        command = command if isinstance(command, Command) else Command(Control(command))
        target = command.source_id if command.source_id is not None else source_id
        if command.control in (Control.PAUSE, Control.RESUME, Control.TOGGLE_SCORING):
            self.scoring = {Control.PAUSE: False, Control.RESUME: True}.get(command.control, not self.scoring)
            command = Command(Control.RESUME if self.scoring else Control.PAUSE, by=command.by)
            target = None
        if command.control is Control.QUIT:
            self.stop()
            return
        if target is None:
            wanted = [(group, None) for group in self.groups]
        else:
            cam = self.cameras[target]
            wanted = [(cam.group, cam.position)] if cam.group is not None else []
        for group, position in wanted:
            if group.actor is not None and not group.done:
                group.actor.command.remote(command.control.value, command.value, command.by, command.save,
                                           position)

    def picture(self, camera: int, after: int) -> tuple[int, bytes] | None:
        """The web view's live picture of `camera`: one JPEG drawn on the node that runs it, asked for only
        while someone watches (the web view's stream, at most its frame rate); None: nothing newer."""
        cam = self.cameras[camera]
        group = cam.group
        if group is None or group.actor is None or group.done:
            return None
        try:
            return self.ray.get(group.actor.picture.remote(cam.position, after), timeout=PICTURE_TIMEOUT_S)
        except Exception:  # a node moving or gone: the page keeps the last picture it had
            return None

    def stop(self) -> None:
        self.stopping = True
        for group in self.groups:
            if group.actor is not None and not group.done:
                group.actor.stop.remote()

    def status(self) -> list[dict]:
        """Which node runs which camera, and its counters (the summary's and /api/status's `cameras`)."""
        out = []
        for cam in self.cameras:
            group = cam.group or Group(-1, [cam])
            out.append({"camera": cam.index, "name": cam.name, "node_id": group.node.get("node_id"),
                        "host": group.node.get("host"), "label": getattr(cam.spec, "node", None),
                        "actor": group.index, "actor_cameras": len(group.cameras),
                        "pid": group.node.get("pid"), "threads": group.node.get("threads"),
                        "pinned": group.node.get("pinned"), "compiles": group.compiles,
                        "frames": cam.frames, "anomalies": cam.anomalies, "episodes": cam.episodes,
                        "moves": group.moves, "actor_cpu_s": round(group.cpu_s, 3),
                        "state": "ended" if group.done else "running", "stopped": group.stopped})
        return out

    def run(self, duration_s: float | None = None) -> None:
        """Poll every group until all have ended (or --duration / stop()); move the ones that are lost."""
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while not all(group.done for group in self.groups):
            if deadline is not None and time.monotonic() >= deadline and not self.stopping:
                self.stop()
            live = [group for group in self.groups if not group.done]
            refs = {group.actor.poll.remote(group.ack): group for group in live}
            ready, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=POLL_TIMEOUT_S)
            for ref, group in refs.items():
                if ref not in ready:
                    self._move(group, f"no answer in {POLL_TIMEOUT_S:.0f} s")
                    continue
                try:
                    reply = self.ray.get(ref)
                except self.ray.exceptions.RayError as exc:
                    self._move(group, f"its actor or node died: {_cause(exc)}")
                    continue
                self._deliver(group, reply["records"])
                group.compiles = reply.get("compiles", group.compiles)
                group.cpu_s += max(0.0, reply["cpu_s"] - group.actor_cpu_s)
                group.actor_cpu_s = reply["cpu_s"]
                if reply["done"] and len(reply["records"]) == 0:
                    group.done, group.stopped = True, reply["stopped"]
                    if reply["error"]:
                        names = ", ".join(cam.name for cam in group.cameras)
                        raise OvdocError(f"camera {names} on {group.node.get('host')}: {reply['error']}")
            time.sleep(POLL_S)
        for group in self.groups:
            self._kill(group)

    def _kill(self, group: Group) -> None:
        with contextlib.suppress(Exception):
            self.ray.kill(group.actor, no_restart=True)

    @property
    def actor_cpu_s(self) -> float:
        """CPU seconds of every camera actor of the run (moves included)."""
        return sum(group.cpu_s for group in self.groups)


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _bundle_threshold(bundle: str) -> float:
    """The bundle's calibrated threshold for the web view's first draw (replaced by the first score)."""
    from ovdoc.runtime.bundle import load_manifest

    try:
        return float(load_manifest(bundle)[0]["threshold"]["value"])
    except OvdocError:  # the bundle is on the nodes' storage, not here: the first score says it
        return 0.0


def open_outputs(line: LineConfig, cluster: ClusterLine, options: dict, outputs=None
                 ) -> tuple[list[list[Sink]], list]:
    """The driver's outputs for the whole line, from the one-box output registry (events file, MQTT,
    webhook, web view, OPC UA): a sink per camera and output, and each output's run (servers) to start and
    stop (both before any sink opens: see `open_sinks`). No window or saved video: no frames come back
    here. /api/status adds the node of each camera."""
    from ovdoc.runtime.stream import output_registry
    from ovdoc.runtime.stream.output_spec import LaneContext, RunContext
    from ovdoc.runtime.stream.pipeline import RunOptions
    from ovdoc.runtime.stream.sinks import Renderer

    values = output_registry.resolve(outputs, {"events": options.get("events")})
    values.update(show=False, save_video=None)
    where = {"node_id", "host", "label", "moves", "state", "actor", "actor_cameras", "compiles", "threads",
             "pinned"}
    thresholds = [cam.spec.threshold if cam.spec.threshold is not None else _bundle_threshold(cam.spec.bundle)
                  for cam in cluster.cameras]
    run = RunContext(
        names=[cam.name for cam in cluster.cameras],
        options=RunOptions(events=options.get("events")),
        threshold=lambda i: thresholds[i],
        post=cluster.post,
        counters=lambda i: {k: v for k, v in cluster.status()[i].items() if k in where},
        scoring=lambda: cluster.scoring,
    )
    built = output_registry.build(values, run)
    sinks: list[list[Sink]] = []
    for i, _camera in enumerate(line.cameras):
        lane = LaneContext(i, Renderer())
        own = [sink for sink in (out_run.sink(lane) for _, out_run in built) if sink is not None]
        sinks.append(own)
    runs = [out_run for _, out_run in built]
    cluster.web = next((getattr(r, "server", None) for r in runs if hasattr(r, "server")), None)
    if cluster.web is not None:  # the live picture comes from the node that runs the camera, on demand
        cluster.web.state.pictures = cluster.picture
    return sinks, runs


def open_sinks(line: LineConfig, cluster: ClusterLine, sinks: list[list[Sink]]) -> None:
    """Open each camera's sinks once the outputs' servers and connections have started."""
    several = len(line.cameras) > 1
    for i, (camera, own) in enumerate(zip(line.cameras, sinks, strict=True)):
        ctx = SinkContext(source_name=camera.name or camera.source, source_id=i, tag_source=several,
                          post=lambda command, i=i: cluster.post(command, i))
        for sink in own:
            sink.open(ctx)


def run_line(address: str, line: LineConfig, options: dict, outputs=None, *, cpus: float = 1.0,
             on_start=None) -> dict:
    """Join the cluster, run the line's cameras on it to their end, return the run's summary.

    `on_start(cluster_line)` is called once every camera runs (its `status()` says where)."""
    from ovdoc.cluster.connect import connect

    ray = connect(address)
    t0 = time.perf_counter()
    cluster = ClusterLine(ray, line, options, [[] for _ in line.cameras], cpus=cpus)
    sinks, runs = open_outputs(line, cluster, options, outputs)
    for cam, own in zip(cluster.cameras, sinks, strict=True):
        cam.sinks = own
    ok = False
    started_runs = []
    try:
        for out_run in runs:
            out_run.start()
            started_runs.append(out_run)
        open_sinks(line, cluster, sinks)
        cluster.start()
        started_s = time.perf_counter() - t0
        if on_start is not None:
            on_start(cluster)
        try:
            cluster.run(options.get("duration_s"))
        except KeyboardInterrupt:
            cluster.stop()
            cluster.run(None)
        ok = True
    finally:
        for own in sinks:
            for sink in own:
                sink.close(ok)
        for out_run in reversed(started_runs):
            out_run.stop()
    cams = cluster.status()
    return {"cameras": cams, "frames": sum(c["frames"] for c in cams),
            "anomalies": sum(c["anomalies"] for c in cams), "episodes": sum(c["episodes"] for c in cams),
            "moved": cluster.moved, "actors": len(cluster.groups),
            "actor_cpu_s": round(cluster.actor_cpu_s, 3),
            "startup_s": round(started_s, 2),
            "wall_s": round(time.perf_counter() - t0, 2),
            "nodes": sorted({c["node_id"] for c in cams if c["node_id"]})}

