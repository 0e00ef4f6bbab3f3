import hashlib
import os
import socket

import pytest
import torch

from latentstore.coders.registry import CODERS, get_spec, load_coder
from latentstore.weights import state_dict_sha256
from latentstore.errors import ConfigError, WeightsError
from compressai.zoo.image import model_urls


@pytest.mark.parametrize("name", sorted(CODERS))
def test_table_builds_exactly_the_expected_class(name):
    spec = get_spec(name)
    q = spec.qualities[-1]
    model = load_coder(name, q, "untrained").model
    assert type(model) is spec.model_class  # not isinstance: a subclass would be a different codec
    y = model.g_a(torch.zeros(1, 3, 64, 64))
    assert y.shape[1] == spec.channels[q]


def test_alias_and_errors_list_the_valid_options():
    assert get_spec("cheng2020").name == "cheng2020-anchor"
    with pytest.raises(ConfigError, match="Invalid quality 7 for cheng2020-anchor: choose 1-6"):
        load_coder("cheng2020", 7, "untrained")
    with pytest.raises(ConfigError, match="Unknown coder 'jpeg'.*bmshj2018-factorized"):
        get_spec("jpeg")
    with pytest.raises(WeightsError, match="neither 'pretrained', 'untrained' nor an existing file"):
        load_coder("cheng2020", 1, "/no/such/file.pth")


def test_untrained_weights_are_seeded_and_labelled():
    a, b = load_coder("mbt2018", 1, "untrained", seed=1), load_coder("mbt2018", 1, "untrained", seed=1)
    assert a.weights["sha256"] == b.weights["sha256"]
    assert a.weights["trained"] is False and "RANDOM" in a.weights["note"]
    assert load_coder("mbt2018", 1, "untrained", seed=2).weights["sha256"] != a.weights["sha256"]


def test_pretrained_cache_holding_other_weights_is_refused_offline(tmp_path, monkeypatch, checkpoint_factory,
                                                                   no_network):
    """A pre-filled $TORCH_HOME is read only when the file is the release (hash prefix in its name)."""
    url = model_urls["cheng2020-anchor"]["mse"][1]
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / os.path.basename(url)).write_bytes(checkpoint_factory("cheng2020-anchor", 1).read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match="is not the published file of the pretrained cheng2020-anchor q1"):
        load_coder("cheng2020", 1, "pretrained")


def test_a_cached_file_matching_its_hash_is_used_offline(tmp_path, monkeypatch, checkpoint_factory, no_network):
    from latentstore.weights import fetch, load_state

    data = checkpoint_factory("cheng2020-anchor", 1).read_bytes()
    name = f"cheng2020-anchor-1-{hashlib.sha256(data).hexdigest()[:8]}.pth.tar"
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / name).write_bytes(data)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = fetch(f"https://models.invalid/v1/{name}", "a test coder", "no advice")
    saved = torch.load(checkpoint_factory("cheng2020-anchor", 1), weights_only=True)
    assert state_dict_sha256(load_state(path, "a test coder")) == state_dict_sha256(saved)


def test_pretrained_offline_without_cache_says_what_to_do(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as err:
        load_coder("bmshj2018-hyperprior", 2, "pretrained")
    message = str(err.value)
    assert "fetch-weights --coder bmshj2018-hyperprior --quality 2" in message
    assert "--weights /path/to/bmshj2018-hyperprior-2-" in message


@pytest.fixture
def no_network(monkeypatch):
    """Refuse every outgoing connection, as on an offline cluster node."""
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (test: offline)")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("name", ["bmshj2018-hyperprior", "cheng2020-anchor"])
def test_entropy_tables_do_not_depend_on_the_thread_count(name):
    """Encoder processes load the coder at one thread while the parent has more: the tables must not
    differ (if they did, each process's weights check against the parent's sha256 would fail)."""
    def weights(threads: int) -> str:
        before = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            torch.manual_seed(0)
            model = get_spec(name).zoo_fn(3, pretrained=False)
            g = torch.Generator().manual_seed(1)
            with torch.no_grad():  # trained-like parameters, not the constant initial ones
                for p in model.entropy_bottleneck.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.3 * (p.abs().mean() + 0.1))
            torch.set_num_threads(threads)
            model.update(force=True)
            return state_dict_sha256(model.state_dict())
        finally:
            torch.set_num_threads(before)

    assert weights(1) == weights(4) == weights(16)
