"""slice2d specifics: fusion rules, 2.5D context, slice sampling, coarse-to-fine bounds."""

import dataclasses

import pytest
import torch

from medseg.config import load_config
from medseg.data.sampling import RandSliced
from medseg.errors import MedsegError
from medseg.strategies import VolumePrediction, build_segmenter
from medseg.strategies.slice2d import AxisFusion, with_context
from tests.helpers import TINY


def _probabilities(seed, classes=4, shape=(6, 7, 8)):
    return torch.softmax(torch.randn((classes, *shape), generator=torch.Generator().manual_seed(seed)) * 3, 0)


@pytest.mark.parametrize("method", ["mean", "majority"])
def test_fusing_three_identical_axes_equals_one_of_them(method):
    probs = _probabilities(0)
    fusion = AxisFusion(method)
    for _ in range(3):
        fusion.add(probs.clone())
    fused = fusion.result()
    torch.testing.assert_close(fused.labels.long(), probs.argmax(0))
    if method == "mean":
        torch.testing.assert_close(fused.probabilities, probs)
    else:
        torch.testing.assert_close(fused.probabilities.sum(0), torch.ones(6, 7, 8))


def test_majority_and_mean_agree_on_clear_cut_inputs():
    truth = torch.randint(0, 4, (6, 7, 8), generator=torch.Generator().manual_seed(1))
    fusions = {m: AxisFusion(m) for m in ("mean", "majority")}
    for axis in range(3):
        noise = torch.rand((4, 6, 7, 8), generator=torch.Generator().manual_seed(10 + axis)) * 0.1
        probs = torch.softmax(torch.nn.functional.one_hot(truth, 4).permute(3, 0, 1, 2) * 5.0 + noise, 0)
        for fusion in fusions.values():
            fusion.add(probs.clone())
    mean, majority = (fusions[m].result().labels for m in ("mean", "majority"))
    torch.testing.assert_close(mean, majority)
    torch.testing.assert_close(mean.long(), truth)


def test_majority_follows_two_axes_against_one():
    a, b = torch.zeros(2, 3, 3, 3), torch.zeros(2, 3, 3, 3)
    a[1], b[0] = 1.0, 1.0
    fusion = AxisFusion("majority")
    for probs in (a.clone(), a.clone(), b):
        fusion.add(probs)
    assert (fusion.result().labels == 1).all()
    with pytest.raises(MedsegError, match="slice2d.fusion"):  # an unknown rule fails when the config loads
        load_config(None, ["slice2d.fusion=median"])


def test_context_channels_are_the_neighbouring_slices():
    volume = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(1, 4, 5, 6)
    stacked = with_context(volume, axis=1, k=1)
    assert stacked.shape == (3, 4, 5, 6)
    torch.testing.assert_close(stacked[1], volume[0])
    torch.testing.assert_close(stacked[0][:, 2], volume[0][:, 1])  # previous slice
    torch.testing.assert_close(stacked[2][:, 2], volume[0][:, 3])  # next slice
    torch.testing.assert_close(stacked[0][:, 0], volume[0][:, 0])  # edge repeats


def test_slice_sampling_oversamples_foreground_and_stacks_context():
    label = torch.zeros((1, 20, 20, 20), dtype=torch.uint8)
    label[0, 5:7, 5:7, 5:7] = 1
    sampler = RandSliced(axes=[0, 1, 2], context=2, pos_fraction=1.0)
    sampler.set_random_state(0)
    seen_axes = set()
    for _ in range(30):
        out = sampler({"image": torch.randn(1, 20, 20, 20), "label": label})
        assert out["image"].shape == (5, 20, 20) and out["label"].shape == (1, 20, 20)
        assert out["label"].any()
        seen_axes.add(out["axis"])
    assert seen_axes == {0, 1, 2}


def _refining_segmenter(rounds=3, margin=2):
    config = load_config(None, [*TINY, "model.strategy=slice2d", "model.network=unet2d",
                                f"slice2d.refine_rounds={rounds}", f"slice2d.refine_margin={margin}"])
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, class_names=["bg", "a"]))
    return build_segmenter(config).eval()


def _fake_fusion(segmenter, predict):
    """Replace the network part by ``predict(crop) -> labels``, recording the crops it is given."""
    crops = []

    def fused(image, axis_labels=None):
        crops.append(tuple(image.shape[1:]))
        labels = predict(image[0]).to(torch.uint8)
        return VolumePrediction(torch.stack([1.0 - labels.float(), labels.float()]), decided_labels=labels)

    segmenter._fused = fused
    return crops


def test_coarse_to_fine_never_grows_beyond_the_volume():
    segmenter = _refining_segmenter(rounds=4, margin=5)
    crops = _fake_fusion(segmenter, lambda crop: torch.ones_like(crop, dtype=torch.bool))  # "everything"
    prediction = segmenter.segment(torch.zeros((1, 20, 22, 24)))
    assert crops[0] == (20, 22, 24) and all(c == (20, 22, 24) for c in crops[1:])
    assert prediction.labels.shape == (20, 22, 24)


def test_coarse_to_fine_crops_to_the_found_region_and_stops_when_stable():
    segmenter = _refining_segmenter(rounds=5, margin=2)
    crops = _fake_fusion(segmenter, lambda crop: crop > 1.0)
    image = torch.zeros((1, 24, 24, 24))
    image[0, 8:14, 9:15, 10:16] = 5.0
    prediction = segmenter.segment(image)
    assert crops == [(24, 24, 24), (10, 10, 10)]  # blob 6^3 plus 2 voxels each side; same answer: stop
    torch.testing.assert_close(prediction.labels.bool(), image[0] > 1.0)
    torch.testing.assert_close(prediction.probabilities.sum(0), torch.ones(24, 24, 24))


def test_slice2d_run_trains_logs_each_axis_and_infers_in_input_geometry(phantom_dir, tmp_path):
    import json

    import nibabel as nib
    import numpy as np

    from medseg.inference import Predictor
    from medseg.io import write_volume
    from medseg.workflows.training import train
    from tests.helpers import oblique_affine

    run = train(None, data_dir=phantom_dir, output=tmp_path / "run", log=lambda _: None,
                overrides=[*TINY, "model.strategy=slice2d", "model.network=unet2d", "slice2d.context_slices=1"])
    logged = json.loads((run / "train_log.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert {"val_mean_dice", "val_mean_dice_axis0", "val_mean_dice_axis1", "val_mean_dice_axis2"} <= set(logged)
    image = np.full((30, 26, 14), -1000, np.int16)
    image[6:24, 5:21, 3:11] = 40
    write_volume(tmp_path / "scan.nii.gz", image, oblique_affine())
    for fusion in ("mean", "majority", "single"):
        out = tmp_path / fusion
        Predictor(run, device="cpu", overrides=[f"slice2d.fusion={fusion}"]).predict_paths(
            tmp_path / "scan.nii.gz", out, progress=False, log=lambda _: None)
        written = nib.load(str(out / "scan.nii.gz"))
        assert written.shape == (30, 26, 14)
        np.testing.assert_array_equal(written.affine, nib.load(str(tmp_path / "scan.nii.gz")).affine)
    with pytest.raises(MedsegError, match="at inference only"):
        Predictor(run, device="cpu", overrides=["model.channels=[8,16,32]"])
