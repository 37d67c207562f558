"""Deep supervision's loss: each output's loss weighed as nnU-Net weighs them, MONAI's DeepSupervisionLoss
as the oracle."""

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss

from medseg.config import load_config
from medseg.strategies import build_segmenter
from tests.helpers import TINY

DEEP = ["model.network=dynunet", "model.deep_supervision=true", "model.channels=[4,8,16,32]", "model.strides=[2,2,2]"]


def _segmenter(*extra):
    config = load_config(None, [*TINY, *DEEP, "data.class_names=[background,a,b]", *extra])
    torch.manual_seed(0)
    return build_segmenter(config)


def _outputs_and_labels(heads=3):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn((2, heads, 3, 16, 16, 16), generator=g, requires_grad=True)
    label = torch.randint(0, 3, (2, 1, 16, 16, 16), generator=g)
    return logits, label


def test_the_outputs_losses_are_weighed_by_halves_and_normalised():
    logits, label = _outputs_and_labels()
    ours = _segmenter().segmentation_loss(logits, {"label": label})
    weights = [1.0, 0.5, 0.25]
    monai = DeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True, batch=True), weights=weights)
    expected = monai(list(logits.unbind(dim=1)), label) / sum(weights)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


def test_partial_labels_take_the_marginal_form_at_every_output():
    segmenter = _segmenter("data.partial_classes=[b]")
    logits, label = _outputs_and_labels(heads=2)
    annotated = torch.tensor([[True, True, False], [True, True, True]])
    batch = {"label": label, "annotated": annotated}
    ours = segmenter.segmentation_loss(logits, batch)
    by_output = [segmenter.segmentation_loss(logits[:, i], batch) for i in range(2)]
    torch.testing.assert_close(ours, (by_output[0] + 0.5 * by_output[1]) / 1.5)


def test_a_training_step_trains_every_head_and_prediction_uses_the_full_resolution_output():
    segmenter = _segmenter()
    image = torch.randn((2, 1, 32, 32, 32))
    label = torch.randint(0, 3, (2, 1, 32, 32, 32))
    segmenter.train()
    segmenter.training_step({"image": image, "label": label})["loss"].backward()
    heads = segmenter.network.deep_supervision_heads
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads.parameters())
    segmenter.eval()
    assert segmenter.segment(image[0]).probabilities.shape[-4:] == (3, 32, 32, 32)
