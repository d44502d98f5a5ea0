"""Networks: plain ``nn.Module``s, one file each. Add one here plus a YAML in ``conf/model/``."""

from mnist_lit.models.cnn import CNN
from mnist_lit.models.mlp import MLP

__all__ = ["CNN", "MLP"]
