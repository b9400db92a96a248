"""The bundles of a running loop: per bundle its detector, the scorer over its compiled model, its
reloads (reload.py) and the watcher of its manifest; batches split by bundle; a reload swapped in.

Cameras watched with different bundles (a line config) form one Model each, and a batch never mixes
two bundles' frames. A finished reload is swapped in between batches: what the old detector has in
flight is delivered first, so no frame is lost or reordered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovdoc.runtime.stream.live_detector import LiveDetector
from ovdoc.runtime.stream.messages import Command
from ovdoc.runtime.stream.postprocess import FrameScore
from ovdoc.runtime.stream.reload import BundleWatcher, Reloader
from ovdoc.runtime.stream.scorer import BatchScorer
from ovdoc.runtime.stream.sources import Frame


@dataclass(eq=False)
class Model:
    """One bundle in a running loop."""

    det: LiveDetector
    reloader: Reloader
    scorer: BatchScorer | None = None
    watcher: BundleWatcher | None = None

    @property
    def draws_maps(self) -> bool:
        """Patch bundles give a map in the frame's geometry (the frame must be at --res)."""
        return bool(self.det.has_maps_)


class Models:
    """The loop's bundles, by position (a lane's `model`). `reloader` replaces the first one's."""

    def __init__(self, detectors: Sequence[LiveDetector], reloader: Reloader | None = None) -> None:
        self.models = [Model(det, reloader if reloader is not None and i == 0 else Reloader())
                       for i, det in enumerate(detectors)]
        self.reloads = 0

    def __getitem__(self, index: int) -> Model:
        return self.models[index]

    def __len__(self) -> int:
        return len(self.models)

    def __iter__(self) -> Iterator[Model]:
        return iter(self.models)

    def start(self, watch: Callable[[int], Callable[[Command], None]] | None = None) -> None:
        """A scorer per bundle; with `watch`, a watcher of each bundle folder posting to `watch(index)`."""
        for index, model in enumerate(self.models):
            model.scorer = BatchScorer(model.det)
            bundle = Path(str(model.det.bundle_))
            if watch is not None and bundle.is_dir():
                model.watcher = BundleWatcher(bundle, watch(index))
                model.watcher.start()

    @property
    def batch(self) -> int:
        return max(model.scorer.batch for model in self.models)

    @property
    def pending(self) -> bool:
        return any(model.scorer.pending for model in self.models)

    def submit(self, frames: list[Frame], prepared: list[np.ndarray], model_of: Callable[[int], int]) -> None:
        """One batch per bundle: frames of cameras that share a bundle go to its model together."""
        if len(self.models) == 1:
            self.models[0].scorer.submit(frames, prepared)
            return
        groups: dict[int, tuple[list[Frame], list]] = {}
        for frame, item in zip(frames, prepared, strict=True):
            group = groups.setdefault(model_of(frame.source_id), ([], []))
            group[0].append(frame)
            group[1].append(item)
        for index, (group_frames, group_prepared) in groups.items():
            scorer = self.models[index].scorer
            for at in range(0, len(group_frames), scorer.batch):
                scorer.submit(group_frames[at:at + scorer.batch], group_prepared[at:at + scorer.batch])

    def reload(self, indices: Sequence[int], by: str) -> None:
        for index in sorted(set(indices)):
            self.models[index].reloader.start(self.models[index].det, by)

    def finished_reloads(self) -> list[tuple[int, LiveDetector | None, str | None, str]]:
        """(bundle index, new detector or None, why not, who asked) of each reload that has finished."""
        out = []
        for index, model in enumerate(self.models):
            outcome = model.reloader.take()
            if outcome is not None:
                out.append((index, *outcome))
        return out

    def swap(self, index: int, new: LiveDetector, deliver: Callable[[list[FrameScore]], None]) -> None:
        """Deliver what bundle `index` has in flight, then score with `new` from the next batch on."""
        model = self.models[index]
        deliver(model.scorer.ready(wait=True))
        model.det = new
        model.scorer = BatchScorer(new)
        self.reloads += 1

    def close(self) -> None:
        for model in self.models:
            if model.watcher is not None:
                model.watcher.close()
