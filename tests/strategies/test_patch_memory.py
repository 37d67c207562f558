"""A GPU that runs out of memory stitching a sliding-window prediction falls back to stitching on the
CPU. No GPU runs the tests: the first attempt raises a simulated out-of-memory error."""

import pytest
import torch
from monai.inferers import SlidingWindowInferer

from medseg.config import load_config
from medseg.errors import MedsegError
from medseg.strategies import build_segmenter, patch
from tests.helpers import TINY

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def _segmenter(*extra):
    torch.manual_seed(0)
    return build_segmenter(load_config(None, [*TINY, "data.class_names=[a,b,c]", *extra])).eval()


def test_stitching_is_tried_on_the_gpu_then_on_the_cpu():
    assert _segmenter()._stitch_devices(CUDA) == [CUDA, CPU]
    assert _segmenter()._stitch_devices(CPU) == [CPU]
    assert _segmenter("infer.stitch_device=cpu")._stitch_devices(CUDA) == [CPU]


def test_out_of_memory_falls_back_to_cpu_stitching_with_the_same_result(monkeypatch, caplog):
    segmenter = _segmenter()
    image = torch.randn(1, 40, 36, 24)
    expected = segmenter.segment(image).probabilities
    tried = []
    real = patch.sliding_window_probabilities

    def first_attempt_runs_out(image, predict, settings, stitch):
        tried.append(stitch)
        if len(tried) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(image, predict, settings, stitch)

    monkeypatch.setattr(patch, "sliding_window_probabilities", first_attempt_runs_out)
    monkeypatch.setattr(segmenter, "_stitch_devices", lambda device: [CUDA, CPU])
    result = segmenter.segment(image)
    assert tried == [CUDA, CPU]
    torch.testing.assert_close(result.probabilities, expected)
    assert "stitching on cpu instead" in caplog.text


def test_out_of_memory_everywhere_is_one_clear_error(monkeypatch):
    segmenter = _segmenter()

    def always(image, predict, settings, stitch):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(patch, "sliding_window_probabilities", always)
    monkeypatch.setattr(segmenter, "_stitch_devices", lambda device: [CUDA, CPU])
    with pytest.raises(MedsegError, match="out of memory .* lower infer.sw_batch_size"):
        segmenter.segment(torch.randn(1, 40, 36, 24))


@torch.inference_mode()
def test_folds_predict_together_from_their_mean_window_logits():
    """An ensemble of patch folds: one sliding window over the mean of their logits (nnU-Net v2's fold
    averaging), against MONAI's inferer run on that mean as the oracle."""
    first, second = _segmenter(), _segmenter()
    torch.manual_seed(1)
    for parameter in second.network.parameters():
        parameter.data.normal_(0, 0.1)
    image = torch.randn(1, 40, 36, 24, generator=torch.Generator().manual_seed(3))
    together = patch.segment_together([first, second], image)
    settings = first.window_settings()
    inferer = SlidingWindowInferer(roi_size=settings.roi, sw_batch_size=settings.batch_size, overlap=settings.overlap,
                                   mode=settings.blend)
    mean = inferer(image[None], lambda x: (first.network(x) + second.network(x)) / 2)[0]
    torch.testing.assert_close(together.float(), torch.softmax(mean, 0), atol=1e-3, rtol=0)
    assert not torch.allclose(together.float(), first.segment(image).probabilities.float(), atol=1e-2)


def test_validation_while_training_is_unmirrored_and_prediction_is_mirrored(monkeypatch):
    segmenter = _segmenter("infer.mirror_axes=[0,2]")
    calls = []
    forward = segmenter.network.forward
    monkeypatch.setattr(segmenter.network, "forward", lambda x: calls.append(x.shape) or forward(x))
    image, label = torch.randn(1, 1, 40, 36, 24), torch.zeros(1, 1, 40, 36, 24, dtype=torch.long)
    with torch.inference_mode():
        segmenter.validation_step({"image": image, "label": label})
        unmirrored = len(calls)
        segmenter.segment(image[0])
    assert unmirrored > 0 and len(calls) - unmirrored == 3 * unmirrored  # the window, then flipped along 0 and 2
    assert segmenter.mirror_axes == [0, 2]  # restored for prediction after validating
