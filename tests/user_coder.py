"""A user's own CompressionModel, as another paper's repo would write it (tests/test_custom_coder.py).

Its own g_a and g_s, a scale-mean hyperprior, and y coded as two channel halves: compress() returns
three streams ([[y_low], [y_high], [z]]) and a dict shape, which no table in latentstore knows.
"""
import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models import CompressionModel
from compressai.models.utils import conv, deconv
from torch import nn


class TwoHalvesHyperprior(CompressionModel):
    def __init__(self, N: int = 16, M: int = 24):
        super().__init__()
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)
        self.g_a = nn.Sequential(conv(3, N), nn.ReLU(), conv(N, N), nn.ReLU(), conv(N, N), nn.ReLU(), conv(N, M))
        self.g_s = nn.Sequential(deconv(M, N), nn.ReLU(), deconv(N, N), nn.ReLU(), deconv(N, N), nn.ReLU(),
                                 deconv(N, 3))
        self.h_a = nn.Sequential(conv(M, N, stride=1, kernel_size=3), nn.ReLU(), conv(N, N), nn.ReLU(), conv(N, N))
        self.h_s = nn.Sequential(deconv(N, N), nn.ReLU(), deconv(N, N), nn.ReLU(),
                                 conv(N, 2 * M, stride=1, kernel_size=3))
        with torch.no_grad():  # spread y over many integers, so an untrained model has non-trivial symbols
            self.g_a[-1].weight.mul_(16.0)

    def forward(self, x):
        y = self.g_a(x)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales, means = self.h_s(z_hat).chunk(2, 1)
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        return {"x_hat": self.g_s(y_hat), "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def compress(self, x):
        y = self.g_a(x)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        scales, means = self.h_s(z_hat).chunk(2, 1)
        half = y.shape[1] // 2
        streams = []
        for part in (slice(0, half), slice(half, None)):
            indexes = self.gaussian_conditional.build_indexes(scales[:, part])
            streams.append(self.gaussian_conditional.compress(y[:, part], indexes, means=means[:, part]))
        return {"strings": [*streams, z_strings], "shape": {"z": list(z.size()[-2:]), "half": half}}

    def decompress(self, strings, shape):
        z_hat = self.entropy_bottleneck.decompress(strings[2], shape["z"])
        scales, means = self.h_s(z_hat).chunk(2, 1)
        half = shape["half"]
        parts = []
        for string, part in zip(strings[:2], (slice(0, half), slice(half, None))):
            indexes = self.gaussian_conditional.build_indexes(scales[:, part])
            parts.append(self.gaussian_conditional.decompress(string, indexes, means=means[:, part]))
        y_hat = torch.cat(parts, dim=1)
        return {"x_hat": self.g_s(y_hat).clamp_(0, 1)}


def factory():
    """A factory works as well as a class: --coder user_coder:factory."""
    return TwoHalvesHyperprior(N=16, M=24)


class NotACoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.g_a = nn.Conv2d(3, 8, 1)
