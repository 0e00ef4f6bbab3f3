"""Teacher features beside the latents: exactness vs a live teacher, dtypes, fingerprint, add-teacher, dry run."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from latentstore import open_store
from latentstore.commands.add_teacher import add_teacher, replay_crop, teacher_error
from latentstore.store.sample import SampleMeta
from latentstore.build.run import BuildConfig, build
from latentstore.commands.cli import main
from latentstore.errors import ConfigError, InputError, StoreError, WeightsError
from latentstore.store.format import MANIFEST, field_for_member, read_manifest
from latentstore.teacher.decode import TeacherDecoder
from latentstore.teacher.dtypes import dequantize, quantize, relative_error
from latentstore.teacher.fingerprint import check_teacher
from latentstore.teacher.load import load_teacher
from latentstore.weights import recipe_sha256

from conftest import count_digest_passes, demo_photos, recorded_files

# Relative L2 error of each storage dtype vs float32 (float16: 2^-11 per element; bfloat16: 2^-8;
# int8: half a step of max|x|/127 per channel). Bounds with margin over what was measured.
BOUNDS = {"float16": 1e-3, "bfloat16": 5e-3, "int8": 2e-2}
TEACHER = dict(teacher="resnet18", teacher_weights="untrained")


def config(root, out, **kw) -> BuildConfig:
    # bmshj2018-factorized: the fastest coder; the teacher is what is under test here.
    base = dict(coder="bmshj2018-factorized", quality=1, weights="untrained", dataset="imagefolder",
                root=str(root), split="train", out=str(out), variants=1, crop=64, shard_size=4)
    return BuildConfig(**{**base, **kw})


def files_of(store: Path) -> dict:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def raw_members(store: Path) -> dict:
    """{(key, member suffix): bytes} of every tar shard."""
    import tarfile
    out = {}
    for shard in sorted(store.glob("*/*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, _, ext = m.name.partition(".")
                out[key, ext] = tar.extractfile(m).read()
    return out


@pytest.fixture(scope="module")
def int8_store(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "s"
    build(config(tiny_folder, out, teacher_dtype="int8", variants=2, **TEACHER), progress=False)
    return out


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int8"])
def test_stored_features_equal_a_live_teacher_on_the_replayed_crop(tiny_folder, tmp_path, int8_store, dtype):
    store = int8_store if dtype == "int8" else tmp_path / "s"
    if dtype != "int8":
        build(config(tiny_folder, store, teacher_dtype=dtype, **TEACHER), progress=False)
    teacher = load_teacher("resnet18", "untrained", dtype=dtype)
    fields = [t.field for t in teacher.taps]
    assert fields == ["teacher_s8", "teacher_s16", "teacher_s32"]
    ds = open_store(store, fields=("meta", *fields))
    checked = 0
    for sample in ds:
        crop = replay_crop(tiny_folder, SampleMeta.from_dict(sample["meta"], sample["__key__"]), sample["__key__"])
        live = teacher.features(crop)
        for name in fields:
            got = sample[name]
            assert got.dtype == torch.float32 and list(got.shape) == list(live[name].shape)
            # Same machine: bit-identical to quantizing the live float32 output ...
            q = quantize(live[name], dtype)
            np.testing.assert_array_equal(got.numpy(), dequantize(q[""], dtype, q.get(".scale")))
            # ... and within the dtype's tolerance of the float32 teacher itself.
            err = np.linalg.norm(got.numpy() - live[name]) / np.linalg.norm(live[name])
            assert 0 < err < BOUNDS[dtype], (name, err)
            if dtype == "int8":  # every element within half a quantization step of its channel
                step = np.abs(live[name]).reshape(len(live[name]), -1).max(1) / 127
                assert (np.abs(got.numpy() - live[name]) <= step[:, None, None] / 2 + 1e-6).all()
        checked += 1
    assert checked == read_manifest(store)["splits"]["train"]["samples"] // (2 if dtype == "int8" else 1) == 6
    fp = read_manifest(store)["splits"]["train"]["teacher"]
    assert fp["dtype"] == dtype and fp["feature_shapes"]["teacher_s8"] == [128, 8, 8]
    assert fp["weights"]["trained"] is False and "RANDOM" in fp["weights"]["note"]


def test_reader_gives_requested_dtype_and_refuses_unknown_fields(int8_store):
    sample = next(iter(open_store(int8_store, fields=("teacher_s16",), teacher_dtype=torch.float16)))
    assert sample["teacher_s16"].dtype == torch.float16 and "teacher_s16.scale" not in sample
    with pytest.raises(ConfigError, match="teacher_s4"):
        open_store(int8_store, fields=("teacher_s4",))
    assert field_for_member("teacher_s8.scale.npy").name == "teacher_s8.scale"
    assert field_for_member("teacher_s8.pickle") is None


def test_int8_relative_error_is_reported_and_bounded(int8_store, capsys):
    errors = teacher_error(int8_store, samples=4)["train"]
    assert errors["samples"] == 4 and errors["dtype"] == "int8"
    rel = errors["relative_error"]
    for name in ("teacher_s8", "teacher_s16", "teacher_s32"):
        assert rel["float16"][name] < rel["bfloat16"][name] < rel["int8"][name] < BOUNDS["int8"]
        assert errors["stored_vs_live"][name] == 0.0
    try:
        main(["info", str(int8_store), "--teacher-error", "2"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    assert "teacher   resnet18" in out and "int8" in out and "stored vs live teacher" in out
    assert "teacher_s8.scale.npy" in out  # bytes per sample of every teacher member


def test_bfloat16_round_trip():
    x = np.random.default_rng(0).standard_normal((4, 3, 5)).astype(np.float32) * 100
    q = quantize(x, "bfloat16")[""]
    assert q.dtype == np.uint16
    back = dequantize(q, "bfloat16")
    assert np.array_equal(back, torch.from_numpy(x).to(torch.bfloat16).float().numpy())  # round to nearest even
    assert np.all(np.abs(back - x) <= np.abs(x) * 2.0 ** -8)
    assert np.array_equal(dequantize(quantize(back, "bfloat16")[""], "bfloat16"), back)  # idempotent
    zeros = np.zeros((2, 3, 3), np.float32)
    assert relative_error(zeros, "int8") == 0.0 and not dequantize(**_int8(zeros)).any()


def test_teacher_maps_travel_in_their_stored_dtype_on_request():
    """out_dtype=None (the trainers' loader): float16 and bfloat16 maps keep their bits, int8 is dequantized."""
    x = np.random.default_rng(1).standard_normal((4, 3, 5)).astype(np.float32)
    for dtype, expect in (("float16", torch.float16), ("bfloat16", torch.bfloat16), ("int8", torch.float32)):
        stored = quantize(x, dtype)
        decoder = TeacherDecoder({"teacher": {"dtype": dtype, "taps": [{"field": "teacher_s8"}]}},
                                 ("teacher_s8",), out_dtype=None)
        sample = {"teacher_s8": stored[""], **({"teacher_s8.scale": stored[".scale"]} if ".scale" in stored else {})}
        t = decoder.decode(sample)["teacher_s8"]
        assert t.dtype == expect
        assert np.array_equal(t.float().numpy(), dequantize(stored[""], dtype, stored.get(".scale")))


def _int8(x):
    q = quantize(x, "int8")
    return {"stored": q[""], "dtype": "int8", "scale": q[".scale"]}


def test_fingerprint_mismatch_is_refused_for_each_component(int8_store):
    manifest = read_manifest(int8_store)
    check_teacher(manifest, load_teacher("resnet18", "untrained", dtype="int8"))  # the same teacher passes
    good = manifest["splits"]["train"]["teacher"]
    cases = {
        "model": {**good, "name": "resnet34"},
        "weights": {**good, "weights_sha256": "0" * 64},
        "normalization": {**good, "mean": [0.5, 0.5, 0.5]},
        "taps": {**good, "taps": good["taps"][:2]},
    }
    for component, expected in cases.items():
        with pytest.raises(ConfigError, match=component):
            check_teacher(manifest, expected)
    with pytest.raises(ConfigError, match=r"weights \(weights_sha256\)"):
        check_teacher(manifest, load_teacher("resnet18", "untrained", seed=1))
    with pytest.raises(ConfigError, match="std"):
        check_teacher(manifest, {**good, "std": [1.0, 1.0, 1.0]})


def test_add_teacher_gives_the_bytes_of_a_build_with_teacher(tiny_folder, tmp_path, int8_store):
    plain = tmp_path / "plain"
    build(config(tiny_folder, plain, variants=2), progress=False)
    before = raw_members(plain)
    add_teacher(plain, "resnet18", "untrained", dtype="int8", progress=False)
    after = raw_members(plain)
    assert {k: v for k, v in after.items() if not k[1].startswith("teacher_")} == before  # latents untouched
    assert files_of(plain) == files_of(int8_store)  # shards, records, parts, build args and manifest
    # A rerun is a no-op; another teacher on top is refused.
    add_teacher(plain, "resnet18", "untrained", dtype="int8", progress=False)
    assert files_of(plain) == files_of(int8_store)
    with pytest.raises(ConfigError, match="already holds features of teacher resnet18"):
        add_teacher(plain, "resnet18", "untrained", dtype="float16", progress=False)


def test_add_teacher_on_a_zarr_store_gives_the_samples_of_a_build_with_teacher(tiny_folder, tmp_path, monkeypatch):
    from latentstore.store.zarr.reader import verify as verify_zarr
    from latentstore.store.readers import Sample, read_samples

    def samples(store):
        manifest = read_manifest(store)
        return [s for unit in manifest["splits"]["train"]["shards"] for s in map(Sample.as_item, read_samples(store, "zarr", unit))]

    plain, built = tmp_path / "plain", tmp_path / "built"
    build(config(tiny_folder, plain, variants=2, format="zarr"), progress=False)
    build(config(tiny_folder, built, variants=2, format="zarr", teacher_dtype="int8", **TEACHER), progress=False)
    passes, old_files = count_digest_passes(monkeypatch, plain), recorded_files(plain)
    add_teacher(plain, "resnet18", "untrained", dtype="int8", progress=False)
    assert passes == old_files  # checked once, then read without the reader's check
    assert verify_zarr(plain) == []
    got, want = samples(plain), samples(built)
    assert len(got) == len(want) == 12 and "teacher_s32" in got[0]
    for a, b in zip(got, want):
        assert a.keys() == b.keys() and a["__key__"] == b["__key__"]
        for name in a:
            if isinstance(a[name], np.ndarray):
                assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), (a["__key__"], name)
            else:
                assert a[name] == b[name], (a["__key__"], name)
    assert read_manifest(plain)["splits"]["train"]["teacher"] == read_manifest(built)["splits"]["train"]["teacher"]
    assert max(teacher_error(plain, samples=2)["train"]["stored_vs_live"].values()) == 0
    before = files_of(plain)
    add_teacher(plain, "resnet18", "untrained", dtype="int8", progress=False)  # a rerun is a no-op
    assert files_of(plain) == before


def test_add_teacher_refuses_a_changed_source_image(tiny_folder, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_folder, root)
    build(config(root, tmp_path / "s"), progress=False)
    target = root / "train" / "class1" / "img1.png"
    other = Image.open(root / "train" / "class0" / "img1.png")  # another photo of the same size
    other.transpose(Image.Transpose.ROTATE_90).save(target)
    with pytest.raises(InputError, match="class1_img1.*source image changed"):
        add_teacher(tmp_path / "s", "resnet18", "untrained", progress=False)
    manifest = read_manifest(tmp_path / "s")
    assert "teacher" not in manifest["splits"]["train"]  # the manifest still describes the old store


def test_dry_run_projects_the_built_size(tiny_folder, tmp_path, capsys):
    out = tmp_path / "s"
    args = ["build", "--coder", "bmshj2018-factorized", "--quality", "1", "--weights", "untrained",
            "--dataset", "imagefolder", "--root", str(tiny_folder), "--variants", "2", "--crop", "64",
            "--shard-size", "4", "--out", str(out), "--teacher", "resnet18", "--teacher-weights", "untrained",
            "--teacher-dtype", "float16"]
    main(args + ["--dry-run"])
    printed = capsys.readouterr()
    text, steps = printed.out, [line for line in printed.err.splitlines() if line.startswith("[")]
    assert [line.split("] ")[1].split(" ")[0] for line in steps] == ["listing", "loading", "encoding", "timing",
                                                                      "loading", "timing"], printed.err
    assert steps[0].startswith("[1/6 ") and "resnet18" in steps[4]
    assert not out.exists() and "nothing written" in text and "teacher_s32.npy" in text
    seconds = float(text.split("projected encoding time: ")[1].split(" s per sample")[0])
    assert seconds > 0 and "of CPU;" in text and "with --encoders 1" in text
    projected = int(text.split("projected store size:")[1].split("(")[1].split(" bytes")[0].replace(",", ""))
    main(args + ["--quiet"])
    actual = sum(p.stat().st_size for p in out.glob("train/*.tar"))
    assert abs(projected - actual) / actual < 0.03, (projected, actual)


def test_teacher_weights_from_a_file_and_offline_errors(tmp_path, monkeypatch):
    torch.manual_seed(3)
    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), path)
    from_file = load_teacher("resnet18", str(path), strides="8,32")
    seeded = load_teacher("resnet18", "untrained", strides="8,32", seed=3)
    assert from_file.weights["source"] == "file" and len(from_file.weights["file_sha256"]) == 64
    # The same tensors (the features below are equal), but seeded weights are identified by their recipe
    # (weights.recipe_sha256): their tensors' last bits come from ATen's CPU-dispatched init kernels.
    assert seeded.weights["sha256"] == recipe_sha256({"untrained": "resnet18", "seed": 3})
    assert from_file.weights["sha256"] != seeded.weights["sha256"]
    crop = np.full((64, 64, 3), 128, np.uint8)
    assert all(np.array_equal(a, b) for a, b in zip(from_file.features(crop).values(), seeded.features(crop).values()))
    with pytest.raises(WeightsError, match="not a state_dict of resnet34"):
        load_teacher("resnet34", str(path))
    with pytest.raises(WeightsError, match="neither 'pretrained', 'untrained' nor an existing file"):
        load_teacher("resnet18", str(tmp_path / "missing.pth"))
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError, match="--teacher-weights /path/to/resnet18.pth"):
        load_teacher("resnet18", "pretrained")


@pytest.mark.slow  # builds ResNet-50 and PSPNet-50: ~12 s on 2 busy cores
def test_taps_by_stride_and_by_layer_name():
    t = load_teacher("resnet50", "untrained")
    assert [(x.layer, x.stride, x.channels) for x in t.taps] == [("layer2", 8, 512), ("layer3", 16, 1024),
                                                                 ("layer4", 32, 2048)]
    shapes = t.fingerprint(224, 224)["feature_shapes"]  # docs/method.md §5
    assert shapes == {"teacher_s8": [512, 28, 28], "teacher_s16": [1024, 14, 14], "teacher_s32": [2048, 7, 7]}
    by_name = load_teacher("resnet18", "untrained", layers="layer1,layer3")
    assert [x.field for x in by_name.taps] == ["teacher_layer1", "teacher_layer3"]
    with pytest.raises(ConfigError, match="has feature layers act1, layer1"):
        load_teacher("resnet18", "untrained", layers="layer9")
    with pytest.raises(ConfigError, match="has feature strides 2, 4, 8, 16, 32"):
        load_teacher("resnet18", "untrained", strides="8,64")
    seg = load_teacher("pspnet50", "untrained", layers="layer3,layer4")  # dilated: both at stride 8
    feats = seg.features(np.zeros((64, 64, 3), np.uint8))
    assert {k: v.shape for k, v in feats.items()} == {"teacher_layer3": (1024, 8, 8), "teacher_layer4": (2048, 8, 8)}
    with pytest.raises(WeightsError, match="no released pixel weights"):
        load_teacher("pspnet50", "pretrained")


def test_teacher_bytes_do_not_depend_on_batch_size(tiny_folder, tmp_path):
    build(config(tiny_folder, tmp_path / "a", batch_size=1, teacher_dtype="float16", **TEACHER), progress=False)
    build(config(tiny_folder, tmp_path / "b", batch_size=5, teacher_dtype="float16", **TEACHER), progress=False)
    a, b = files_of(tmp_path / "a"), files_of(tmp_path / "b")
    assert {k: v for k, v in a.items() if k.endswith(".tar")} == {k: v for k, v in b.items() if k.endswith(".tar")}
    assert a[MANIFEST] == b[MANIFEST]


@pytest.mark.parametrize("fmt", ["webdataset", "zarr"])
def test_add_teacher_refuses_a_damaged_store_before_reading_it(tiny_folder, tmp_path, fmt):
    store = tmp_path / "s"
    build(config(tiny_folder, store, format=fmt), progress=False)
    files = sorted(store.glob("train/*.tar")) if fmt == "webdataset" else \
        sorted(p for p in (store / "train" / "y_hat" / "c").rglob("*") if p.is_file())
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0x01  # tar: inside a payload; zarr: inside a compressed chunk
    files[0].write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"shard train/v000-000000"):  # even when the sources are trusted
        add_teacher(store, "resnet18", "untrained", verify_sources=False, progress=False)
    assert "teacher" not in read_manifest(store)["splits"]["train"]


def test_features_equal_timm_on_a_fresh_contiguous_tensor():
    """The reference shares no code with Teacher.features: the timm model on an NCHW tensor made
    here, at one thread. A permuted HWC crop is channels_last, where convs pick other kernels."""
    teacher = load_teacher("resnet18", "untrained", dtype="float16")
    crop = np.asarray(Image.open(demo_photos()[0]).convert("RGB").resize((224, 224)))
    crop = crop[:, ::-1]  # a strided view, as a mirrored crop can be
    x = torch.tensor(np.array(crop, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0).contiguous()
    mean = torch.tensor(teacher.mean).view(1, 3, 1, 1)
    std = torch.tensor(teacher.std).view(1, 3, 1, 1)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            expected = teacher.model((x - mean) / std)
    finally:
        torch.set_num_threads(before)
    got = teacher.features(crop)
    for tap, ref in zip(teacher.taps, expected):
        assert got[tap.field].tobytes() == ref[0].numpy().tobytes(), tap.field
