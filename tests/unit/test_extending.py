"""Extending the template as docs/add-a-*.md say: a network and a data set, each one ``.py`` and
one ``.yaml``, here written to a temporary folder (on the import path, its ``conf/`` on Hydra's
search path), trained for one ``fast_dev_run`` with nothing else changed."""

from __future__ import annotations

import hashlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_lit.train import train

from .conftest import QUICK, SYNTHETIC_FILES, VAL_N, compose_config

NETWORK = """
from torch import Tensor, nn


class Tiny(nn.Module):
    def __init__(self, hidden: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(),
                                    nn.Linear(hidden, num_classes))

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)
"""

DATA_SET = """
from typing import ClassVar

from mnist_lit.data import MNISTDataModule
from mnist_lit.data.download import DatasetSpec

BARS = DatasetSpec(name="bars", title="Bars", raw_subdir="Bars/raw", gz_md5={{}}, md5={md5})


class BarsDataModule(MNISTDataModule):
    spec: ClassVar[DatasetSpec] = BARS
    train_total = 300
"""


@pytest.fixture
def throwaway(tmp_path: Path) -> Iterator[Path]:
    """A folder with a network, a data set and their configs, as a contributor would add them."""
    package = tmp_path / "throwaway"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tiny.py").write_text(NETWORK)
    md5 = {name: hashlib.md5(data).hexdigest() for name, data in SYNTHETIC_FILES.items()}
    (package / "bars.py").write_text(DATA_SET.format(md5=md5))
    for group, text in {
        "model/tiny.yaml": "_target_: throwaway.tiny.Tiny\nhidden: 16\n",
        "data/bars.yaml": "defaults:\n  - mnist\n  - _self_\n\n"
        "_target_: throwaway.bars.BarsDataModule\n",
    }.items():
        (tmp_path / "conf" / group).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "conf" / group).write_text(textwrap.dedent(text))
    raw = tmp_path / "data" / "Bars" / "raw"
    raw.mkdir(parents=True)
    for name, data in SYNTHETIC_FILES.items():
        (raw / name).write_bytes(data)
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("throwaway")]:
        del sys.modules[name]


def test_a_new_network_and_data_set_train_with_nothing_else_changed(throwaway: Path) -> None:
    overrides = [
        *QUICK,
        f"hydra.searchpath=[file://{throwaway / 'conf'}]",
        "model=tiny",
        "data=bars",
        f"data.val_size={VAL_N}",
        "debug=fast_dev_run",
        "callbacks.sample_batch=null",
        "callbacks.test_images=null",
    ]
    cfg = compose_config("train", overrides, throwaway / "run", data_dir=throwaway / "data")
    assert cfg.model._target_ == "throwaway.tiny.Tiny"
    assert train(cfg) is not None
    assert (throwaway / "run" / "metrics.json").is_file()
