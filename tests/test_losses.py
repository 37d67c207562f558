"""The marginal (partial-label) loss against MONAI's own losses as the oracle, and what it forgives."""

import pytest
import torch
from monai.losses import DiceCELoss, DiceLoss

from medseg.errors import MedsegError
from medseg.losses import CrossEntropy, MarginalLoss, build_loss


def _logits_and_target(spatial=(6, 5, 4), classes=4, batch=3):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn((batch, classes, *spatial), generator=g)
    target = torch.randint(0, classes, (batch, 1, *spatial), generator=g)
    return logits, target


@pytest.mark.parametrize("spatial", [(6, 5, 4), (7, 6)], ids=["3d", "2d"])
@pytest.mark.parametrize(("name", "oracle"), [
    ("dice_ce", lambda: DiceCELoss(to_onehot_y=True, softmax=True, batch=True)),
    ("dice", lambda: DiceLoss(to_onehot_y=True, softmax=True, batch=True)),
    ("ce", CrossEntropy),
])
def test_with_every_class_annotated_it_is_the_monai_loss(name, oracle, spatial):
    logits, target = _logits_and_target(spatial)
    annotated = torch.ones((3, 4), dtype=torch.bool)
    torch.testing.assert_close(MarginalLoss(name)(logits, target, annotated), oracle()(logits, target))


def test_an_unannotated_class_may_be_predicted_on_background_for_free():
    logits, target = _logits_and_target()
    target[target == 2] = 0  # the case did not contour class 2
    annotated = torch.tensor([[True, True, False, True]] * 3)
    on_background = target[:, 0] == 0
    logits[:, 0][on_background] += 5.0  # a model that says "background" where the label does
    swapped = logits.clone()  # one that says "class 2" there instead
    swapped[:, 0][on_background] = logits[:, 2][on_background]
    swapped[:, 2][on_background] = logits[:, 0][on_background]
    for name in ("ce", "dice", "dice_ce"):
        loss = MarginalLoss(name)
        torch.testing.assert_close(loss(swapped, target, annotated), loss(logits, target, annotated))
    assert CrossEntropy()(swapped, target) > CrossEntropy()(logits, target) + 1.0  # the plain loss punishes it


def test_a_class_each_sample_annotates_differently_is_scored_per_sample():
    logits, target = _logits_and_target(batch=2)
    target[1][target[1] == 3] = 0
    both = MarginalLoss("dice_ce")(logits, target, torch.tensor([[True] * 4, [True, True, True, False]]))
    plain = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)(logits, target)
    assert torch.isfinite(both) and not torch.isclose(both, plain)
    logits.requires_grad_(True)
    MarginalLoss("dice_ce")(logits, target, torch.tensor([[True] * 4, [True, True, True, False]])).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_losses_without_a_marginal_form_are_refused():
    with pytest.raises(MedsegError, match="train.loss"):
        build_loss("dice_focal", partial_labels=True)
    assert isinstance(build_loss("dice_ce", partial_labels=True), MarginalLoss)
    assert isinstance(build_loss("dice_ce"), DiceCELoss)
