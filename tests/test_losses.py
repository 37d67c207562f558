"""The Dice/CE losses against MONAI's as the oracle (TopK against nnU-Net's construction from MONAI's
Dice), their marginal form against a direct construction of it from MONAI's Dice, and what the marginal
form forgives."""

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss

from medseg.errors import MedsegError
from medseg.losses import SoftmaxDiceCE, build_loss


def _topk_oracle(logits, target, fraction=0.1):
    """nnU-Net's DC_and_topk_loss built directly: MONAI's batch Dice plus the mean cross-entropy of the
    hardest ``fraction`` of voxels."""
    voxel_ce = F.cross_entropy(logits, target[:, 0].long(), reduction="none").reshape(-1)
    hardest = voxel_ce.sort(descending=True).values[:int(voxel_ce.numel() * fraction)]
    return DiceLoss(to_onehot_y=True, softmax=True, batch=True)(logits, target) + hardest.mean()


ORACLES = {
    "dice_ce": lambda: DiceCELoss(to_onehot_y=True, softmax=True, batch=True),
    "dice": lambda: DiceLoss(to_onehot_y=True, softmax=True, batch=True),
    "ce": lambda: lambda logits, target: F.cross_entropy(logits, target[:, 0].long()),
    "dice_topk10": lambda: _topk_oracle,
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
def test_each_loss_is_its_oracle_in_value_and_gradient(name, spatial):
    logits, target = _logits_and_target(spatial)
    expected = _value_and_gradient(ORACLES[name](), logits, target)
    torch.testing.assert_close(_value_and_gradient(build_loss(name), logits, target), expected)
    every_class = torch.ones((3, 4), dtype=torch.bool)
    torch.testing.assert_close(_value_and_gradient(build_loss(name, partial_labels=True), logits, target,
                                                   every_class), expected)


WEIGHTS = [0.5, 1.0, 4.0, 9.0]


def _weighted_ce(logits, target, weight=WEIGHTS):
    return F.cross_entropy(logits, target[:, 0].long(), weight=torch.tensor(weight))


def _weighted_topk(logits, target, fraction=0.1):
    """Each voxel's cross-entropy times its label's weight; the hardest ``fraction`` of those averaged
    over their weights, as PyTorch averages a weighted cross-entropy."""
    weights = torch.tensor(WEIGHTS)[target[:, 0].long()].reshape(-1)
    weighted = F.cross_entropy(logits, target[:, 0].long(), reduction="none").reshape(-1) * weights
    hardest = weighted.sort(descending=True).indices[:int(weighted.numel() * fraction)]
    return (DiceLoss(to_onehot_y=True, softmax=True, batch=True)(logits, target)
            + weighted[hardest].sum() / weights[hardest].sum())


WEIGHTED_ORACLES = {
    "dice_ce": lambda logits, target: DiceLoss(to_onehot_y=True, softmax=True, batch=True)(logits, target)
    + _weighted_ce(logits, target),
    "ce": _weighted_ce,
    "dice_topk10": _weighted_topk,
    "dice": ORACLES["dice"](),  # no cross-entropy to weigh
}


@pytest.mark.parametrize("name", sorted(WEIGHTED_ORACLES))
def test_class_weights_weigh_the_cross_entropy_as_torch_does(name):
    logits, target = _logits_and_target(spatial=(8, 7, 6))
    expected = _value_and_gradient(WEIGHTED_ORACLES[name], logits, target)
    weighted = build_loss(name, class_weights=WEIGHTS, num_classes=4)
    torch.testing.assert_close(_value_and_gradient(weighted, logits, target), expected)


def test_class_weights_must_be_one_per_class():
    with pytest.raises(MedsegError, match="train.class_weights.*expected 4 weights"):
        build_loss("dice_ce", class_weights=[1.0, 2.0], num_classes=4)


def _marginal_oracle(logits, target, annotated, weight=None):
    """The marginal loss built directly: merge each unannotated class's probability into background,
    then MONAI's batch Dice on the merged probabilities plus the NLL of their log."""
    p = logits.softmax(1)
    unknown = (~annotated).float()[:, :, None, None, None]
    merged = p * (1 - unknown)
    merged = torch.cat([merged[:, :1] + (p * unknown).sum(1, keepdim=True), merged[:, 1:]], dim=1)
    dice = DiceLoss(to_onehot_y=True, softmax=False, batch=True)(merged, target)
    return dice + F.nll_loss(merged.clamp_min(1e-12).log(), target[:, 0].long(), weight=weight)


def test_the_marginal_form_matches_its_direct_construction():
    logits, target = _logits_and_target()
    target[1][target[1] == 3] = 0
    annotated = torch.tensor([[True, True, False, True], [True, True, True, False], [True] * 4])
    expected = _value_and_gradient(_marginal_oracle, logits, target, annotated)
    torch.testing.assert_close(_value_and_gradient(SoftmaxDiceCE(), logits, target, annotated), expected)


def test_the_weighted_marginal_form_weighs_a_merged_background_as_background():
    logits, target = _logits_and_target()
    target[1][target[1] == 3] = 0
    annotated = torch.tensor([[True, True, False, True], [True, True, True, False], [True] * 4])
    expected = _marginal_oracle(logits, target, annotated, weight=torch.tensor(WEIGHTS))
    weighted = SoftmaxDiceCE(class_weights=WEIGHTS)
    torch.testing.assert_close(weighted(logits, target, annotated), expected)


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
    for name in ("ce", "dice", "dice_ce", "dice_topk10"):
        loss = build_loss(name, partial_labels=True)
        torch.testing.assert_close(loss(swapped, target, annotated), loss(logits, target, annotated))
    plain = build_loss("ce")
    assert plain(swapped, target) > plain(logits, target) + 1.0  # the plain loss punishes it


def test_losses_without_a_marginal_form_are_refused():
    with pytest.raises(MedsegError, match="train.loss"):
        build_loss("dice_focal", partial_labels=True)


def test_the_topk_loss_weighs_a_small_missed_class_far_above_plain_cross_entropy():
    target = torch.zeros((1, 1, 20, 20, 20), dtype=torch.long)
    target[0, 0, :2, :2, :2] = 1  # 8 of 8000 voxels
    logits = torch.zeros((1, 2, 20, 20, 20))
    logits[:, 0] = 4.0  # background everywhere: right on 7992 voxels, wrong on the 8
    plain = _value_and_gradient(SoftmaxDiceCE(dice=False), logits, target)[1]
    topk = _value_and_gradient(SoftmaxDiceCE(dice=False, ce_top_fraction=0.1), logits, target)[1]
    missed = target[:, 0] == 1
    assert (topk[:, 1][missed].abs() / plain[:, 1][missed].abs()).min() > 9.0


def test_a_top_fraction_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="ce_top_fraction"):
        SoftmaxDiceCE(ce_top_fraction=0.0)
