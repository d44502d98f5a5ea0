"""Networks: output shapes, and that ``dropout`` / ``batchnorm`` really add or remove layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnist_lit.models.cnn import CNN
from mnist_lit.models.mlp import MLP

NETWORKS = [MLP, CNN]


def count(net: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


@pytest.mark.parametrize("network", NETWORKS)
def test_logits_have_one_column_per_class(network: type[nn.Module]) -> None:
    net = network()
    logits = net(torch.randn(5, 1, 28, 28))
    assert logits.shape == (5, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("network", NETWORKS)
def test_batchnorm_switch(network: type[nn.Module]) -> None:
    with_bn, without_bn = network(batchnorm=True), network(batchnorm=False)
    assert count(with_bn, nn.BatchNorm1d) + count(with_bn, nn.BatchNorm2d) > 0
    assert count(without_bn, nn.BatchNorm1d) + count(without_bn, nn.BatchNorm2d) == 0


@pytest.mark.parametrize("network", NETWORKS)
def test_dropout_switch_and_probability(network: type[nn.Module]) -> None:
    assert count(network(dropout=0.0), nn.Dropout) == 0
    dropouts = [m for m in network(dropout=0.5).modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(m.p == 0.5 for m in dropouts)


@pytest.mark.parametrize("network", NETWORKS)
def test_dropout_is_active_in_train_mode_only(network: type[nn.Module]) -> None:
    torch.manual_seed(0)
    net = network(dropout=0.5, batchnorm=False)
    images = torch.randn(8, 1, 28, 28)
    net.train()
    assert not torch.equal(net(images), net(images))
    net.eval()
    assert torch.equal(net(images), net(images))


def test_mlp_hidden_sizes_set_the_layers() -> None:
    net = MLP(hidden_sizes=[64, 32, 16], batchnorm=False)
    widths = [m.out_features for m in net.modules() if isinstance(m, nn.Linear)]
    assert widths == [64, 32, 16, 10]


def test_cnn_channels_set_the_blocks_and_head_size() -> None:
    net = CNN(channels=[8, 16, 32], hidden=20)
    assert [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)] == [8, 16, 32]
    first_linear = next(m for m in net.modules() if isinstance(m, nn.Linear))
    assert first_linear.in_features == 32 * 3 * 3  # 28 -> 14 -> 7 -> 3
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_networks_learn_a_batch() -> None:
    """A few steps on one batch must lower the loss: gradients reach every layer."""
    torch.manual_seed(0)
    images, labels = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    for net in (MLP(), CNN()):
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        first = nn.functional.cross_entropy(net(images), labels)
        for _ in range(20):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(net(images), labels)
            loss.backward()
            optimizer.step()
        assert loss.item() < 0.5 * first.item()
        assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("network", NETWORKS)
def test_width_scales_every_layer(network: type[nn.Module]) -> None:
    narrow, wide = network(width=0.5), network(width=2.0)
    assert sum(p.numel() for p in wide.parameters()) > 3 * sum(
        p.numel() for p in narrow.parameters()
    )
    assert wide(torch.randn(2, 1, 28, 28)).shape == (2, 10)
