"""The linear probe scores how much of a segmentation an encoder's frozen features hold: features that
carry the labels score high, features that do not score low."""

import torch
from torch import nn

from medseg.benchmark.ssl_probe import encoder_features, probe_encoder, probe_table


class _StageEncoder(nn.Module):
    """Two stages like Swin UNETR's (half and quarter resolution); ``informative`` ones pool the image,
    whose brightness marks the classes, the others are noise of the same shape."""

    def __init__(self, informative: bool):
        super().__init__()
        self.informative = informative

    def forward(self, x, normalize=True):
        half, quarter = nn.functional.avg_pool3d(x, 2), nn.functional.avg_pool3d(x, 4)
        if not self.informative:
            generator = torch.Generator().manual_seed(int(x.abs().sum() * 1000) % 10_000)
            half = torch.randn(half.shape, generator=generator)
            quarter = torch.randn(quarter.shape, generator=generator)
        return [torch.cat([half, half**2], 1), quarter]


def _cases(count, seed):
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for _ in range(count):
        label = torch.zeros(1, 16, 16, 16, dtype=torch.long)
        x0, y0 = (2 * torch.randint(0, 2, (2,), generator=generator)).tolist()
        label[0, x0:x0 + 6, y0:y0 + 6, 4:12] = 1
        label[0, x0 + 8:x0 + 12, y0:y0 + 8, 4:12] = 2
        image = label.float() * 2.0 + 0.1 * torch.randn(label.shape, generator=generator)
        cases.append((image, label))
    return cases


def test_stage_outputs_are_brought_to_the_first_stage_grid():
    features = encoder_features(_StageEncoder(True), torch.randn(1, 16, 16, 16))
    assert features.shape == (3, 8, 8, 8)


def test_features_that_carry_the_labels_score_far_above_noise():
    train, held_out = _cases(6, seed=0), _cases(4, seed=1)
    informative = probe_encoder(_StageEncoder(True), train, held_out, classes=3)
    noise = probe_encoder(_StageEncoder(False), train, held_out, classes=3)
    assert informative.mean_dice > 0.8 and noise.mean_dice < 0.4
    assert len(informative.class_dice) == 2
    table = probe_table({"pretrained": informative, "random": noise}, ["background", "a", "b"])
    assert table.splitlines()[0] == "| encoder | a | b | mean Dice |"
    assert f"**{informative.mean_dice:.3f}**" in table.splitlines()[2]
