#!/usr/bin/env bash
# The board path, as a LattePanda-class board runs it: a runtime-only install (no TensorFlow, Keras or NNCF),
# used from a directory outside the checkout.
#   .ci/board_check.sh VENV SHARED [quick]
# VENV: a virtual environment with ovdoc installed non-editably (a wheel or `pip install .`).
# SHARED: the ../shared data folder. "quick": only the install proof and the checked demo run.
set -euo pipefail
venv="$(cd "$1" && pwd)"
shared="$(cd "$2" && pwd)"
mode="${3:-full}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"                                  # outside the checkout: nothing can come from the source tree
ovdoc="$venv/bin/ovdoc"
py="$venv/bin/python"
step() { printf '\n== board: %s\n' "$*"; }

step "runtime-only install: no TensorFlow, Keras, NNCF; ovdoc imported from site-packages"
"$py" - <<'PY'
import importlib.util, pathlib, sys
import ovdoc
for name in ("tensorflow", "keras", "tf_keras", "nncf"):
    assert importlib.util.find_spec(name) is None, f"{name} is installed in the runtime-only venv"
where = pathlib.Path(ovdoc.__file__).resolve()
assert "site-packages" in where.parts, f"ovdoc comes from {where}, not an installed copy"
print(f"ovdoc {ovdoc.__version__} from {where.parent}; no tensorflow/keras/tf_keras/nncf")
PY

step "ovdoc devices"
"$ovdoc" devices --json > devices.json
"$py" -c "import json; d=json.load(open('devices.json')); assert 'CPU' in [x['name'] for x in d['devices']]; print('devices:', [x['name'] for x in d['devices']])"

step "ovdoc run (the built-in demo, no arguments), summary checked"
"$ovdoc" run --headless --json --events demo-events.jsonl > demo-summary.json
demo_json="$("$py" -c "from ovdoc.irmodels import demo_dir; print(demo_dir() / 'demo.json')")"
"$py" "$here/check_demo.py" demo-events.jsonl demo-summary.json "$demo_json"

if [ "$mode" = quick ]; then exit 0; fi

mt="$shared/data/magnetic-tile"
step "data: 150 normal tiles to fit, 60 held-out normal tiles and 60 defects to evaluate"
mkdir -p fit held defects masks            # images only in the image folders; masks in their own folder
ls "$mt/MT_Free/Imgs/"*.jpg | sort | sed -n 1,150p | xargs -I{} ln -s {} fit/
ls "$mt/MT_Free/Imgs/"*.jpg | sort | sed -n 151,210p | xargs -I{} ln -s {} held/
for t in Blowhole Break Crack Fray Uneven; do
  ls "$mt/MT_$t/Imgs/"*.jpg | sort | sed -n 1,12p | while read -r f; do ln -s "$f" defects/; ln -s "${f%.jpg}.png" masks/; done
done

step "ovdoc fit on a folder (no MODEL: the shipped ImageNet backbone)"
"$ovdoc" fit --normal fit/ --out tiles.bundle --json > fit.json
"$py" -c "import json; r=json.load(open('fit.json')); assert r['n_images'] == 150, r; print('fit:', r['n_images'], 'images, threshold', round(r['threshold'], 4))"

step "ovdoc run BUNDLE --source VIDEO"
"$ovdoc" run tiles.bundle --source "$shared/data/video/vtest.avi" --res 640x480 --headless --json --max-frames 200 > run.json
"$py" -c "import json; r=json.load(open('run.json')); assert r['frames'] == 200 and r['stopped'] == 'max_frames', r; print('run:', r['frames'], 'frames at', r['fps'], 'FPS')"

step "ovdoc run: two sources, one model, episodes, web view (aiohttp) on a free port"
"$ovdoc" run tiles.bundle --source "$shared/data/video/vtest.avi" --source "$shared/data/video/bikes.mp4" \
  --res 640x480 --headless --json --max-frames 40 --episodes-dir episodes --serve 127.0.0.1:0 > run2.json
"$py" -c "import json; r=json.load(open('run2.json')); assert [s['frames'] for s in r['sources']] == [40, 40], r; assert r['outputs']['web']['url'].startswith('http://127.0.0.1:'), r; print('two sources:', r['frames'], 'frames,', r['episodes'], 'episodes at', r['fps'], 'FPS')"

step "ovdoc eval"
"$ovdoc" eval tiles.bundle --normal held/ --anomalous defects/ --json > eval.json 2> eval.err
"$py" -c "import json; r=json.load(open('eval.json')); assert r['n_normal'] == 60 and r['n_anomalous'] == 60 and r['auc'] > 0.6, r; print('eval: AUC', round(r['auc'], 4), 'on', r['n_normal'], '+', r['n_anomalous'])"

step "ovdoc bench (INT8 skipped with one line: NNCF is a host-side extra)"
"$ovdoc" bench tiles.bundle --precisions FP32,INT8 --batch 8 --hints throughput --scorers flat \
  --frames 60 --repeats 1 --source "$shared/data/video/vtest.avi" --calib fit/ --json > bench.json 2> bench.err
"$py" - <<'PY'
import json
result = json.load(open("bench.json"))
text = json.dumps(result)
assert "ModuleNotFoundError" not in text and "Traceback" not in open("bench.err").read(), "raw import error"
assert any(r.get("precision") == "FP32" and r.get("pipeline_fps") for r in result["results"]), "no FP32 row"
skipped = [s for s in result.get("skipped", []) if "INT8" in json.dumps(s)]
assert skipped and "nncf" in json.dumps(skipped).lower(), f"INT8 not skipped with a reason: {skipped}"
print("bench: FP32 rows measured; INT8 skipped:", skipped[0])
PY

if "$ovdoc" fit --help | grep -q -- "--mode"; then
  step "patch mode: fit, run with maps, eval with masks"
  "$ovdoc" fit --normal fit/ --out tiles-patch.bundle --mode patch --json > fit-patch.json
  "$ovdoc" run tiles-patch.bundle --source "$shared/data/video/vtest.avi" --res 640x480 --headless --json \
    --max-frames 100 > run-patch.json
  "$py" -c "import json; r=json.load(open('run-patch.json')); assert r['frames'] == 100, r; print('patch run:', r['fps'], 'FPS')"
  "$ovdoc" eval tiles-patch.bundle --normal held/ --anomalous defects/ --masks masks/ --json > eval-patch.json 2> eval-patch.err
  "$py" -c "import json; r=json.load(open('eval-patch.json')); assert r['auc'] > 0.75 and r['pixel_auroc'] > 0.7, r; print('patch eval: image AUC', round(r['auc'], 4), 'pixel AUROC', round(r['pixel_auroc'], 4))"
fi
printf '\n== board: all checks passed\n'
