"""Check a run of the built-in demo from its events file: every frame scored, every inserted ankle-boot and
bag stretch flagged, no sneaker-only stretch flagged.

    python .ci/check_demo.py EVENTS.jsonl SUMMARY.json DEMO.json

Standard library only, so it runs in the runtime-only venv of the board check. The stretches come from the
demo's own record (demo.json: the plan of classes and how many frames each image is held); the score is
smoothed over `smooth` frames, so a sneaker stretch may stay flagged for up to `smooth - 1` frames after an
anomaly has left: those frames are not held against it.
"""

from __future__ import annotations

import json
import sys


def stretches(demo: dict) -> list[tuple[str, int, int]]:
    """(class, first frame, end frame) for each stretch of the demo clip."""
    hold = int(demo["stream"]["hold"])
    out, start = [], 0
    for name, count in demo["stream"]["plan"]:
        end = start + int(count) * hold
        out.append((name, start, end))
        start = end
    return out


def problems(events: list[dict], summary: dict, demo: dict) -> list[str]:
    frames = [e for e in events if "event" not in e]
    total = int(demo["stream"]["frames"])
    found = []
    if summary.get("frames") != total or len(frames) != total:
        found.append(f"expected {total} scored frames, summary says {summary.get('frames')}, "
                     f"events have {len(frames)}")
    if summary.get("stopped") != "end":
        found.append(f"the run stopped with {summary.get('stopped')!r}, not at the end of the clip")
    smooth = int(summary.get("smooth", 1))
    flagged = {int(e["frame"]) for e in frames if e.get("anomalous")}
    previous_anomalous = False
    for name, start, end in stretches(demo):
        if name == "sneaker":
            first = start + (smooth - 1 if previous_anomalous else 0)
            bad = sorted(f for f in flagged if first <= f < end)
            if bad:
                found.append(f"sneaker-only frames {start}-{end - 1} flagged at {bad[:5]}")
            previous_anomalous = False
        else:
            if not any(start <= f < end + smooth - 1 for f in flagged):
                found.append(f"inserted {name} stretch at frames {start}-{end - 1} was not flagged")
            previous_anomalous = True
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    events_path, summary_path, demo_path = argv
    with open(events_path, encoding="utf-8") as fh:
        events = [json.loads(line) for line in fh if line.strip()]
    with open(summary_path, encoding="utf-8") as fh:
        summary = json.load(fh)
    with open(demo_path, encoding="utf-8") as fh:
        demo = json.load(fh)
    found = problems(events, summary, demo)
    for line in found:
        print(f"demo check: {line}", file=sys.stderr)
    if not found:
        anomalous = sum(1 for _ in stretches(demo) if _[0] != "sneaker")
        print(f"demo check: {summary['frames']} frames scored, all {anomalous} inserted stretches flagged, "
              f"no sneaker-only stretch flagged ({summary['anomalies']} anomalous frames, "
              f"{summary['fps']:.0f} FPS)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
