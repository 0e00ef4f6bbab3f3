"""--metric mse|ms-ssim: which zoo weights --weights pretrained loads, part of the build's identity, in info;
coders without zoo weights name the missing release in one line."""
import pytest

from latentstore.build.config import BuildConfig
from latentstore.coders.registry import _pretrained_url, get_spec, load_coder
from latentstore.errors import ConfigError, WeightsError
from latentstore.commands.info import render


def config(**kw):
    return BuildConfig(**{"coder": "cheng2020-anchor", "quality": 3, "dataset": "imagefolder", "root": "/r",
                          "split": "train", "out": "/o", **kw})


def test_metric_picks_the_zoo_release_and_is_part_of_the_identity():
    spec = get_spec("cheng2020-anchor")
    assert _pretrained_url(spec, 3, "mse").endswith("/cheng2020-anchor-3-e49be189.pth.tar")
    assert _pretrained_url(spec, 3, "ms-ssim").endswith("/cheng2020_anchor-ms-ssim-3-c23e22d5.pth.tar")
    assert "metric" not in config().identity()           # mse: the identity stores built before --metric have
    assert config(metric="ms-ssim").identity()["metric"] == "ms-ssim"
    with pytest.raises(ConfigError, match="Invalid --metric 'psnr'"):
        config(metric="psnr").resolved()
    with pytest.raises(ConfigError, match="--weights untrained has no metric to choose: drop --metric"):
        config(metric="ms-ssim", weights="untrained").resolved()


@pytest.mark.parametrize("name", ["elic2022-official", "elic2022-chandelier", "cheng2020-checkerboard",
                                  "bmshj2018-factorized-relu"])
def test_pretrained_names_the_missing_release_in_one_line(name):
    with pytest.raises(WeightsError) as exc:
        load_coder(name, 3, "pretrained")
    message = str(exc.value)
    assert len(message.splitlines()) == 1
    assert f"CompressAI's zoo publishes no mse weights for {name}" in message and "--weights PATH" in message


def test_info_shows_the_metric_and_the_path():
    summary = {"store": "s", "backend": "webdataset", "format_version": 1, "coder": "cheng2020-anchor",
               "quality": 3, "channels": 128, "metric": "ms-ssim", "path": "single-pass",
               "weights": {"trained": True, "source": "pretrained", "metric": "ms-ssim", "sha256": "ab",
                           "url": "https://x/cheng2020_anchor-ms-ssim-3-ab.pth.tar"},
               "created_by": {}, "device": "cpu", "gpu": None, "splits": {}}
    text = render(summary)
    assert "pretrained (CompressAI zoo, ms-ssim, cheng2020_anchor-ms-ssim-3-ab.pth.tar)" in text
    summary.update(coder="elic2022-official", path="generic", weights={**summary["weights"], "source": "file",
                                                                          "path": "/w.pt"})
    assert "generic path" in render(summary)
