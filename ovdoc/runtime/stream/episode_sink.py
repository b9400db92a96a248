"""Episodes as an output of the loop: one camera's anomaly_start / anomaly_end records and their JPEGs.

Every camera gets one, after its own sinks (so a frame's verdict reaches them before the episode it
opens or closes). It follows the results with an EpisodeTracker (episodes.py) and hands each record to
the camera's other sinks (`ctx.publish_episode`). An episode's end carries its peak frame as a JPEG
(`_jpeg`, for outputs that send it: MQTT, the webhook, the cluster's records) when any of them asks for
snapshots (`wants_snapshots`) or `--episodes-dir` is given; with `--episodes-dir` the JPEG is also
written there and the record names it (`snapshot`). An episode still open when the run ends is closed
by `finish`, flagged open_at_end.
"""

from __future__ import annotations

from pathlib import Path

from ovdoc.runtime.stream.episodes import EpisodeTracker, snapshot_jpeg
from ovdoc.runtime.stream.messages import Result
from ovdoc.runtime.stream.sinks import Sink


class EpisodeSink(Sink):
    name = "episodes"

    def __init__(self, source_name: str, source_id: int = 0, *, keep_snapshot: bool = False,
                 folder: Path | None = None) -> None:
        self.source_name, self.source_id = source_name, source_id
        self.folder = None if folder is None else Path(folder)
        self.tracker = EpisodeTracker(source_name, keep_snapshot=keep_snapshot or folder is not None)
        self.last: tuple[int, float] | None = None  # (index, timestamp) of the last scored frame

    @property
    def needs_pixels(self) -> bool:  # a snapshot is drawn from the frame at --res
        return self.tracker.keep_snapshot

    @property
    def count(self) -> int:
        return self.tracker.count

    @property
    def open_episode(self):
        return self.tracker.open

    def handle(self, result: Result) -> None:
        if result.score is not None:
            self.last = (result.frame.index, result.frame.timestamp)
        record = self.tracker.update(result)
        if record is not None:
            self._publish(record)

    def finish(self) -> None:
        ep = self.tracker.open
        if ep is None:
            return
        last = self.last or (ep.start_frame, ep.start_timestamp)
        self._publish(self.tracker.close(last[0], last[1], at_end=True))

    def _publish(self, record: dict) -> None:
        """Snapshot of an ended episode's peak frame (if one was kept), then every other output."""
        peak = record.pop("_peak", None)
        if peak is not None and record["event"] == "anomaly_end":
            record["_jpeg"] = jpeg = snapshot_jpeg(peak)
            if self.folder is not None:
                record["snapshot"] = str(self._write(record, jpeg))
        self.ctx.publish_episode(record)

    def _write(self, record: dict, jpeg: bytes) -> Path:
        from ovdoc.atomic import atomic_path

        self.folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(self.source_name).name)[:40]
        name = f"{self.source_id}-{safe}-episode{record['episode']}-frame{record['peak_frame']}.jpg"
        path = self.folder / name
        with atomic_path(path) as tmp:
            tmp.write_bytes(jpeg)
        return path
