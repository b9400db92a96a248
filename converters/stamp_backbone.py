"""Write a shipped backbone's registry record (name, taps by role) into its IR's rt_info, weights untouched.

Why: patch mode reads its taps from the IR (``ovdoc/backbone``), and the MobileNetV2 IR predates that
record. Rebuilding it would re-run the Keras conversion; this only rewrites model.xml and proves the
weights file is byte for byte the same (sha256 before and after). build_imagenet.py calls it too.

    python converters/stamp_backbone.py mobilenetv2
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def stamp(name: str) -> dict:
    """Add the record to `name`'s model.xml (and its JSON's `taps`); SystemExit if the weights change."""
    import openvino as ov

    from ovdoc.irmodels.backbones import get_backbone
    from ovdoc.runtime.ir import RT_BACKBONE

    entry = get_backbone(name)
    xml = entry.xml
    before = hashlib.sha256(xml.with_suffix(".bin").read_bytes()).hexdigest()
    model = ov.Core().read_model(str(xml))
    model.set_rt_info(json.dumps(entry.rt_info(), sort_keys=True), RT_BACKBONE)
    names = {op.get_friendly_name() for op in model.get_ops()}
    if missing := [t for t in entry.patch_layers if t not in names]:
        raise SystemExit(f"{name}: tap nodes not in the IR: {missing}")
    with tempfile.TemporaryDirectory(dir=xml.parent, prefix=".stamp-") as tmp:
        staged = Path(tmp) / "model.xml"
        ov.save_model(model, str(staged), compress_to_fp16=True)  # FP16 constants stay FP16
        after = hashlib.sha256(staged.with_suffix(".bin").read_bytes()).hexdigest()
        if after != before:
            raise SystemExit(f"{name}: re-saving would change the weights ({before[:12]} -> {after[:12]})")
        staged.replace(xml)
    for record in sorted(entry.directory.glob("*.json")):
        info = json.loads(record.read_text())
        info["taps"] = entry.taps
        info.setdefault("bytes", {})["model.xml"] = xml.stat().st_size
        record.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return {"backbone": name, "bin_sha256": before}


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["mobilenetv2"]:
        print(stamp(arg))
