"""CNN4: the small 4-block CNN of the published Keras pneumonia baselines.

Four convolution blocks (32, 64, 128, 256 filters; 3x3 conv, batch norm, ReLU,
2x2 max-pool, dropout), then a 512-unit dense layer with dropout 0.5 and the
classifier, as in the Keras notebooks that accompany the Kermany et al. 2018
pneumonia data. One change: the flatten is preceded by an adaptive average
pool to 4x4, so the weights stay ~2.6 M parameters (10 MB) at any input size
instead of growing with it (a plain flatten at 224 px would need 26 M).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CNN4"]


class CNN4(nn.Module):
    """4-block CNN classifier.

    Parameters
    ----------
    num_classes : int
        Output logits.
    in_chans : int
        Input channels (1 for grayscale).
    drop_rate : float
        Dropout after the dense layer (0.5 in the baselines).
    block_dropout : float
        Dropout after each convolution block.

    Input ``(N, in_chans, H, W)`` float32 with ``H, W >= 16``; output logits ``(N, num_classes)``.
    """

    def __init__(self, num_classes: int = 2, in_chans: int = 1, drop_rate: float = 0.5, block_dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_chans
        for width in (32, 64, 128, 256):
            layers += [
                nn.Conv2d(prev, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
                nn.Dropout(block_dropout),
            ]
            prev = width
        self.features = nn.Sequential(*layers)
        self.num_features = 256
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(256 * 16, 512), nn.ReLU(inplace=True), nn.Dropout(drop_rate))
        self.classifier = nn.Linear(512, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last convolutional feature map ``(N, 256, H/16, W/16)``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits (or the 512-d dense output when ``pre_logits``)."""
        x = self.fc(self.pool(x))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
