"""latentstore.models: -aa edits, baselines, PSPNet, taps, pixel weights, counts vs docs/method.md §4.

Full-size counts are exact integers from the models built here; the paper's
rounded figures are checked with `round(...)`. Forwards run at small shapes;
the heavy builds (VGG-11 is 133M parameters) are marked slow.
"""
import pytest
import timm
import torch
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import ResNet
from torch import nn

from latentstore.coders.registry import get_spec, untrained_coder
from latentstore.models.complexity import count_macs, count_params
from latentstore.errors import ConfigError, WeightsError
from latentstore.models import (PSPNet, TapClassifier, check_tap_shapes, create_model, feature_shapes,
                                model_names, resolve)
from latentstore.models.adapt import SubPixelStem
from latentstore.models.baselines import CResNet, Decode, ReshapeInput, TwoInputCResNet

C = 192  # the latent channel count that reproduces docs/method.md §4's parameter deltas (docs/models.md)


def forward_backward(model, *inputs):
    """One training step's worth: the loss must reach every trainable parameter."""
    model.train()
    out = model(*inputs)
    logits = out[0] if isinstance(out, tuple) else out
    logits.float().mean().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for _, p in trainable), \
        [n for n, p in trainable if p.grad is None][:5]
    return out


@pytest.fixture(scope="module")
def resnet50_aa():
    return create_model("resnet50-aa", C, 1000)


# ----------------------------------------------------------------- structure

def test_resnet50_aa_edits(resnet50_aa):
    m = resnet50_aa
    assert type(m) is TapClassifier and type(m.net) is ResNet
    assert type(m.net.conv1) is SubPixelStem
    assert m.net.conv1.conv.in_channels == C and m.net.conv1.conv.out_channels == 64 * 16
    assert type(m.net.maxpool) is nn.Identity
    assert m.net.aa_edits == {"stem": "conv1", "destrided": [], "removed": ["maxpool"]}


def test_resnet50_aa_feature_taps_match_teacher(resnet50_aa):
    y_hat = torch.randn(2, C, 14, 14)
    shapes = feature_shapes(resnet50_aa, y_hat)
    assert shapes == [(512, 28, 28), (1024, 14, 14), (2048, 7, 7)]
    teacher = create_model("resnet50", None, 1000)
    check_tap_shapes(shapes, feature_shapes(teacher, torch.randn(1, 3, 224, 224)))


def test_efficientnet_b0_aa_edits_and_taps():
    m = create_model("efficientnet_b0-aa", C, 10)
    assert type(m.net) is EfficientNet and type(m.net.conv_stem) is SubPixelStem
    assert m.net.aa_edits["destrided"] == ["blocks.1.0.conv_dw"]
    assert m.net.blocks[1][0].conv_dw.stride == (1, 1)
    assert feature_shapes(m, torch.randn(1, C, 14, 14)) == [(40, 28, 28), (112, 14, 14), (320, 7, 7)]
    forward_backward(m, torch.randn(2, C, 4, 4))


def test_cresnet51_taps_lack_stride_8_and_say_so():
    m = create_model("cresnet51", 128, 10)
    assert type(m.net) is CResNet and [len(m.net.layer2), len(m.net.layer3), len(m.net.layer4)] == [4, 10, 3]
    shapes = feature_shapes(m, torch.randn(1, 128, 14, 14))
    assert shapes == [(1024, 14, 14), (2048, 7, 7)]
    with pytest.raises(ConfigError, match=r"2 feature taps .*teacher stores 3"):
        check_tap_shapes(shapes, [(512, 28, 28), (1024, 14, 14), (2048, 7, 7)])
    forward_backward(m, torch.randn(2, 128, 4, 4))


def test_cresnet39_takes_y_hat_and_sigma():
    m = create_model("cresnet39", 128, 10)
    assert type(m) is TwoInputCResNet and m.input_names == ("y_hat", "sigma_hat")
    y, s = torch.randn(2, 128, 4, 4), torch.rand(2, 128, 4, 4)
    logits, feats = m(y, s, return_features=True)
    assert logits.shape == (2, 10) and [f.shape[1:] for f in feats] == [(1024, 4, 4), (2048, 2, 2)]
    forward_backward(m, y, s)
    with pytest.raises(ConfigError, match="two inputs"):
        m(y)


def test_reshape_resnet50_pads_and_shuffles():
    r = ReshapeInput(128)
    assert (r.r, r.pad) == (8, 64)
    x = torch.randn(1, 128, 14, 14)
    out = r(x)
    assert out.shape == (1, 3, 112, 112)
    assert torch.equal(nn.PixelUnshuffle(8)(out)[:, :128], x)  # nothing lost, padding at the end
    m = create_model("reshape+resnet50", 128, 10)
    assert [t.reduction for t in m.taps] == [16, 32, 64]  # the pixel net sees a stride-2 image
    forward_backward(m, torch.randn(2, 128, 4, 4))


def test_decode_model_runs_g_s_frozen():
    coder = untrained_coder(get_spec("cheng2020"), 1)
    m = create_model("decode+resnet18", 128, 10, coder=coder)
    assert type(m.net.decode) is Decode and m.net.decode.g_s is coder.g_s
    y_hat = torch.randn(2, 128, 2, 2)
    forward_backward(m, y_hat)
    assert all(p.grad is None for p in coder.g_s.parameters())
    assert not m.net.decode.g_s.training  # stays in eval mode under model.train()
    assert feature_shapes(m, y_hat)[-1] == (512, 1, 1)  # g_s: 2×2 latent -> 32×32 image -> stride 32
    with pytest.raises(ConfigError, match="needs coder="):
        create_model("decode+resnet18", 128, 10)


def test_pspnet50_aa_outputs_and_named_taps():
    m = create_model("pspnet50-aa", 128, 19)
    assert type(m) is PSPNet and type(m.backbone.conv1[0]) is SubPixelStem
    assert type(m.backbone.maxpool) is nn.Identity
    y_hat = torch.randn(2, 128, 3, 3)  # a 48×48 crop
    logits, aux, feats = m(y_hat, return_aux=True, return_features=True)
    assert logits.shape == aux.shape == (2, 19, 48, 48)
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == {
        "layer1": (256, 12, 12), "layer2": (512, 6, 6), "layer3": (1024, 6, 6), "layer4": (2048, 6, 6),
        "head": (512, 6, 6)}
    (logits.mean() + 0.4 * aux.mean()).backward()
    assert m.backbone.conv1[0].conv.weight.grad is not None and m.aux_head[0].weight.grad is not None


# ----------------------------------------------------------------- errors

def test_unknown_name_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"Unknown model 'resnet51-aa'.*cresnet51.*\{timm\}-aa"):
        create_model("resnet51-aa", C, 10)
    assert "pspnet50-aa" in model_names()
    assert resolve("vgg11_bn-aa")[1] == "vgg11_bn"


def test_latent_channels_required():
    with pytest.raises(ConfigError, match="latent_channels"):
        create_model("resnet18-aa", None, 10)


def test_family_without_rule_is_an_error():
    with pytest.raises(ConfigError, match="No -aa rule for timm family VisionTransformer.*ResNet"):
        create_model("vit_tiny_patch16_224-aa", C, 10)


def test_tap_shape_mismatch_names_both_shapes():
    with pytest.raises(ConfigError, match=r"tap 1: model \(1024, 16, 16\) vs teacher \(1024, 14, 14\)"):
        check_tap_shapes([(512, 32, 32), (1024, 16, 16), (2048, 8, 8)],
                         [(512, 28, 28), (1024, 14, 14), (2048, 7, 7)])
    check_tap_shapes([(1, 2, 3)], [[1, 2, 3]])  # lists vs tuples are fine
    with pytest.raises(ConfigError, match=r"channels differ .*teacher_s16: student 112 vs teacher resnet50 1024"):
        check_tap_shapes([(40, 28, 28), (112, 14, 14)], [(512, 28, 28), (1024, 14, 14)],
                         names=["teacher_s8", "teacher_s16"], teacher="resnet50")


# ----------------------------------------------------------------- pixel weights

@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_pixel_weights_from_file_load_every_surviving_layer(tmp_path, name):
    torch.manual_seed(1)
    pixel = timm.create_model(name, pretrained=False)
    path = tmp_path / "pixel.pth"
    torch.save({"state_dict": pixel.state_dict()}, path)  # training-checkpoint layout
    m = create_model(f"{name}-aa", 128, 1000, pixel_weights=str(path))

    stem = m.net.aa_edits["stem"]
    assert m.load_report.missing == [f"{stem}.conv.weight", f"{stem}.conv.bias"]
    assert m.load_report.unexpected == [f"{stem}.weight"]
    assert m.load_report.mismatched == []
    own = m.net.state_dict()
    source = pixel.state_dict()
    survivors = [k for k in source if not k.startswith(stem + ".")]
    assert len(survivors) == len(source) - 1
    for k in survivors:
        assert torch.equal(own[k], source[k]), k


def test_pixel_weights_other_num_classes_skip_only_classifier(tmp_path):
    pixel = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "r18.pth"
    torch.save(pixel.state_dict(), path)
    m = create_model("resnet18-aa", 128, 10, pixel_weights=str(path))
    assert m.load_report.mismatched == ["fc.weight", "fc.bias"]
    assert torch.equal(m.net.layer4[1].conv2.weight, pixel.layer4[1].conv2.weight)


def test_pixel_weights_of_another_model_are_rejected(tmp_path):
    path = tmp_path / "effnet.pth"
    torch.save(timm.create_model("efficientnet_b0").state_dict(), path)
    with pytest.raises(WeightsError, match="do not fit"):
        create_model("resnet18-aa", 128, 1000, pixel_weights=str(path))
    with pytest.raises(WeightsError, match="does not exist"):
        create_model("resnet18-aa", 128, 1000, pixel_weights=str(tmp_path / "nope.pth"))


# ----------------------------------------------------------------- counts vs docs/method.md §4

def counts(model, *shape):
    return count_params(model), count_macs(model, torch.zeros(1, *shape))


def test_resnet50_aa_counts_match_paper(resnet50_aa):
    params, macs = counts(resnet50_aa, C, 14, 14)
    assert params == 27_318_120 and round(params / 1e6, 1) == 27.3
    assert round(macs / 1e9, 1) == 4.3
    # the delta over the pixel model is exactly the stem swap
    assert params - 25_557_032 == (C * 1024 * 9 + 1024) - 3 * 64 * 49


def test_efficientnet_b0_counts():
    pixel_p, pixel_m = counts(create_model("efficientnet_b0", None, 1000), 3, 224, 224)
    aa_p, aa_m = counts(create_model("efficientnet_b0-aa", C, 1000), C, 14, 14)
    assert round(pixel_p / 1e6, 2) == 5.29 and round(aa_p / 1e6, 2) == 6.17
    # Conv/linear MACs come out 3% under the paper's 0.398B / 0.538B; the -aa delta matches (docs/models.md).
    assert round((aa_m - pixel_m) / 1e9, 2) == round(0.538 - 0.398, 2)
    assert abs(pixel_m / 0.398e9 - 1) < 0.04 and abs(aa_m / 0.538e9 - 1) < 0.03


@pytest.mark.slow
def test_resnet50_and_cresnet51_counts_match_paper():
    p, m = counts(create_model("resnet50", None, 1000), 3, 224, 224)
    assert (round(p / 1e6, 1), round(m / 1e9, 1)) == (25.6, 4.1)
    p, m = counts(create_model("cresnet51", C, 1000), C, 14, 14)
    assert (round(p / 1e6, 1), round(m / 1e9, 1)) == (29.8, 3.3)


@pytest.mark.slow
def test_vgg11_counts_match_paper():
    p, m = counts(create_model("vgg11", None, 1000), 3, 224, 224)
    assert (round(p / 1e6, 1), round(m / 1e9, 1)) == (132.9, 7.6)
    aa = create_model("vgg11-aa", C, 1000)
    assert aa.net.aa_edits["removed"] == ["features.2", "features.5"]
    p, m = counts(aa, C, 14, 14)
    assert (round(p / 1e6, 1), round(m / 1e9, 1)) == (134.6, 7.2)
    forward_backward(aa, torch.randn(2, C, 2, 2))


@pytest.mark.slow
def test_pspnet50_counts_match_paper_at_640():
    p, m = counts(create_model("pspnet50", None, 19), 3, 640, 640)
    assert (round(p / 1e6, 1), round(m / 1e9)) == (49.1, 288)
    p, m = counts(create_model("pspnet50-aa", C, 19), C, 40, 40)
    assert round(p / 1e6, 1) == 50.8 and round(m / 1e9) == 282
