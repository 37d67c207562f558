"""The Dice/CE losses against MONAI's as the oracle, their marginal form against a direct construction of
it from MONAI's Dice, and what the marginal form forgives."""

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss

from medseg.errors import MedsegError
from medseg.losses import SoftmaxDiceCE, build_loss

ORACLES = {
    "dice_ce": lambda: DiceCELoss(to_onehot_y=True, softmax=True, batch=True),
    "dice": lambda: DiceLoss(to_onehot_y=True, softmax=True, batch=True),
    "ce": lambda: lambda logits, target: F.cross_entropy(logits, target[:, 0].long()),
}


def _logits_and_target(spatial=(6, 5, 4), classes=4, batch=3):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn((batch, classes, *spatial), generator=g)
    target = torch.randint(0, classes, (batch, 1, *spatial), generator=g)
    target[0][target[0] == 2] = 0  # a class missing from one sample
    return logits, target


def _value_and_gradient(loss, logits, *args):
    logits = logits.clone().requires_grad_(True)
    value = loss(logits, *args)
    value.backward()
    return value.detach(), logits.grad


@pytest.mark.parametrize("spatial", [(6, 5, 4), (7, 6)], ids=["3d", "2d"])
@pytest.mark.parametrize("name", sorted(ORACLES))
def test_each_loss_is_monais_in_value_and_gradient(name, spatial):
    logits, target = _logits_and_target(spatial)
    expected = _value_and_gradient(ORACLES[name](), logits, target)
    torch.testing.assert_close(_value_and_gradient(build_loss(name), logits, target), expected)
    every_class = torch.ones((3, 4), dtype=torch.bool)
    torch.testing.assert_close(_value_and_gradient(build_loss(name, partial_labels=True), logits, target,
                                                   every_class), expected)


def _marginal_oracle(logits, target, annotated):
    """The marginal loss built directly: merge each unannotated class's probability into background,
    then MONAI's batch Dice on the merged probabilities plus the NLL of their log."""
    p = logits.softmax(1)
    unknown = (~annotated).float()[:, :, None, None, None]
    merged = p * (1 - unknown)
    merged = torch.cat([merged[:, :1] + (p * unknown).sum(1, keepdim=True), merged[:, 1:]], dim=1)
    dice = DiceLoss(to_onehot_y=True, softmax=False, batch=True)(merged, target)
    return dice + F.nll_loss(merged.clamp_min(1e-12).log(), target[:, 0].long())


def test_the_marginal_form_matches_its_direct_construction():
    logits, target = _logits_and_target()
    target[1][target[1] == 3] = 0
    annotated = torch.tensor([[True, True, False, True], [True, True, True, False], [True] * 4])
    expected = _value_and_gradient(_marginal_oracle, logits, target, annotated)
    torch.testing.assert_close(_value_and_gradient(SoftmaxDiceCE(), logits, target, annotated), expected)


def test_the_marginal_form_stays_finite_where_background_underflows():
    logits, target = _logits_and_target()
    logits[:, 1] += 500.0  # background's probability is 0 in float32 everywhere
    annotated = torch.tensor([[True, True, False, True]] * 3)
    value, gradient = _value_and_gradient(SoftmaxDiceCE(), logits, target, annotated)
    assert torch.isfinite(value) and torch.isfinite(gradient).all()


def test_an_unannotated_class_may_be_predicted_on_background_for_free():
    logits, target = _logits_and_target()
    target[target == 2] = 0  # no case contoured class 2
    annotated = torch.tensor([[True, True, False, True]] * 3)
    on_background = target[:, 0] == 0
    logits[:, 0][on_background] += 5.0  # a model that says "background" where the label does
    swapped = logits.clone()  # one that says "class 2" there instead
    swapped[:, 0][on_background] = logits[:, 2][on_background]
    swapped[:, 2][on_background] = logits[:, 0][on_background]
    for name in ("ce", "dice", "dice_ce"):
        loss = build_loss(name, partial_labels=True)
        torch.testing.assert_close(loss(swapped, target, annotated), loss(logits, target, annotated))
    plain = build_loss("ce")
    assert plain(swapped, target) > plain(logits, target) + 1.0  # the plain loss punishes it


def test_losses_without_a_marginal_form_are_refused():
    with pytest.raises(MedsegError, match="train.loss"):
        build_loss("dice_focal", partial_labels=True)
