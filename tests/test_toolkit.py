"""The shared toolkit: one input grammar for images, one scorer vocabulary, array helpers, atomic IR writes,
log lines on stderr. Real files, real OpenCV decoding, real OpenVINO and FAISS where a model is involved."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from _runtime_helpers import build_seed_ir, cifar_images, tile_files, write_pngs, write_video

from ovdoc.errors import OvdocError


@pytest.fixture()
def sources(tmp_path, cifar10_npz):
    """A folder, a glob, a .npz and a video with known image counts."""
    images = cifar_images(cifar10_npz, 12)
    folder = write_pngs(images[:4], tmp_path / "folder")
    globbed = write_pngs(images[4:7], tmp_path / "globbed")
    npz = tmp_path / "x.npz"
    np.savez(npz, x=np.stack([im[..., ::-1] for im in images[7:9]]))  # stored RGB, unlabelled
    video = write_video(images[9:12], tmp_path / "clip.avi")
    return {"folder": folder, "glob": str(globbed / "*.png"), "npz": npz, "video": video, "images": images}


@pytest.mark.slow
def test_one_grammar_streams_every_kind_of_source(sources, fashion_mnist_dir):
    from ovdoc.runtime.datasets import load_unlabelled, open_unlabelled

    items = [sources["folder"], sources["glob"], sources["npz"], sources["video"], "fashion-mnist-test:bag"]
    stream = open_unlabelled(items)
    assert stream.total == 4 + 3 + 2 + 3 + 1000  # known before the first image is decoded
    assert stream.names == [str(i) for i in items]
    got = list(stream.images)
    assert len(got) == stream.total
    np.testing.assert_array_equal(got[0], sources["images"][0])  # folder, sorted, BGR as written
    np.testing.assert_array_equal(got[7], sources["images"][7])  # .npz: stored RGB, read back BGR
    assert got[9].shape == (128, 128, 3) and got[-1].shape == (28, 28)  # a video frame, a grey data set
    one = load_unlabelled("fashion-mnist-test:bag")
    assert isinstance(one.images, np.ndarray) and one.images.shape == (1000, 28, 28)


@pytest.mark.slow
@pytest.mark.parametrize(
    "bad, needle",
    [
        ("{tmp}/missing", "not found"),
        ("{tmp}/empty", "no images in folder"),
        ("{tmp}/nothing-*.png", "no images match"),
        ("mnist:3", "unknown data set"),
        ("fashion-mnist:sneakerz", "unknown fashion-mnist class"),
    ],
)
def test_bad_sources_are_one_line_before_any_decoding(tmp_path, bad, needle, fashion_mnist_dir):
    from ovdoc.runtime.datasets import open_unlabelled

    (tmp_path / "empty").mkdir()
    with pytest.raises(OvdocError, match=needle):
        open_unlabelled(["fashion-mnist-test:bag", bad.format(tmp=tmp_path)])


@pytest.mark.slow
def test_fit_takes_the_same_grammar(seed_dir, magnetic_tile_dir, tmp_path):
    """`ovdoc fit --normal` accepts a folder, a glob and a .npz together; the manifest records them."""
    from ovdoc.runtime.bundle import fit_bundle
    from ovdoc.runtime.detector import Detector

    ir = build_seed_ir(seed_dir, tmp_path / "ir")
    tiles = [cv2.imread(str(p)) for p in tile_files(magnetic_tile_dir)[:14]]
    folder = write_pngs(tiles[:6], tmp_path / "a")
    globbed = write_pngs(tiles[6:10], tmp_path / "b")
    npz = tmp_path / "c.npz"
    np.savez(npz, x=np.stack([cv2.resize(t, (96, 96))[..., ::-1] for t in tiles[10:14]]))
    sources = [folder, str(globbed / "*.png"), npz]
    manifest = fit_bundle(ir, sources, tmp_path / "bundle", progress=False)
    assert manifest["n_images"] == 14 and manifest["normal_sources"] == [str(s) for s in sources]
    scores = Detector.load(tmp_path / "bundle").score_samples(tiles[:2])
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_scorer_vocabulary_is_one():
    from ovdoc.runtime.scoring import KNNScorer, LOFScorer, Scorer, ScorerSpec, make_scorer

    assert ScorerSpec.parse("flat") == ScorerSpec.parse("knn:flat") == ScorerSpec("knn", "flat")
    assert ScorerSpec.parse("hnsw", k=3).label == "knn:hnsw" and ScorerSpec.parse("lof").label == "lof"
    for bad in ("knn:ivf", "lof:flat", "svm"):
        with pytest.raises(OvdocError, match="scorer|index"):
            ScorerSpec.parse(bad)
    with pytest.raises(OvdocError, match="knn scorer only"):
        make_scorer("lof", metric="cosine")
    x = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    for scorer in (KNNScorer(k=3, index="flat", metric="cosine").fit(x), LOFScorer(k=3).fit(x)):
        assert isinstance(scorer, Scorer)
        spec = ScorerSpec.from_manifest(scorer.describe())  # the manifest entry reads back as the same spec
        assert spec.kind == scorer.kind and spec.build().fit(x).describe() == scorer.describe()


def test_array_helpers():
    from ovdoc.runtime.arrays import cosine_rows, pad_batch, spread

    batch = np.ones((3, 2, 2, 3), np.uint8)
    padded = pad_batch(batch, 5)
    assert padded.shape == (5, 2, 2, 3) and padded.dtype == np.uint8
    assert padded[:3].all() and not padded[3:].any()
    assert pad_batch(batch, 3).shape == (3, 2, 2, 3)
    a = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    b = np.array([[2.0, 0.0], [0.0, 0.0], [-1.0, -1.0]])
    np.testing.assert_allclose(cosine_rows(a, b), [1.0, 1.0, -1.0])  # two zero rows agree
    assert spread(list(range(10)), 4) == [0, 3, 6, 9] and spread([1, 2], 4) == [1, 2]


@pytest.mark.slow
def test_save_ir_is_atomic_and_leaves_nothing_behind(seed_dir, tmp_path):
    import openvino as ov

    from ovdoc.runtime.ir import read_ir, save_ir

    model, _, _ = read_ir(build_seed_ir(seed_dir, tmp_path / "src"))
    out = tmp_path / "out" / "model.xml"
    out.parent.mkdir()
    (out.parent / "keep.txt").write_text("x")
    save_ir(model, out, compress_to_fp16=True)
    assert sorted(p.name for p in out.parent.iterdir()) == ["keep.txt", "model.bin", "model.xml"]
    again, _, _ = read_ir(out)
    assert any(
        op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.f16
        for op in again.get_ops()
    )
    with pytest.raises((TypeError, RuntimeError)):  # a failing save keeps the previous IR whole
        save_ir("not a model", out, compress_to_fp16=False)  # type: ignore[arg-type]
    read_ir(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["keep.txt", "model.bin", "model.xml"]


def test_log_lines_go_to_the_current_stderr(capsys):
    from ovdoc.log import get_logger, quiet

    log = get_logger("ovdoc.test")
    log.info("shown")
    with quiet():
        log.info("hidden")
        log.warning("warned")
    captured = capsys.readouterr()
    assert captured.err == "shown\nwarned\n" and captured.out == ""  # stdout stays clean for --json
