"""What a run shows on the terminal: the config tree, and less noise from the libraries."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def quiet_known_noise() -> None:
    """Hide library messages that say nothing about this run (each one named and explained)."""
    # Lightning advertises a cloud logger at every start
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage()
    )
    # Lightning 2.6 calls a pytree API that torch >= 2.10 deprecates; nothing for us to change
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # our batches come from memory, not DataLoader workers, so the worker advice does not apply
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # bf16 autocast keeps the weights in float32, so the summary's 32-bit size is the right one
    warnings.filterwarnings("ignore", message=r".*is not supported by the model summary.*")


def first_line(err: BaseException, skip: str = "", empty: str | None = None) -> str:
    """An error's first line of text, for one-line messages; skips a heading that starts with
    ``skip``; ``empty`` (default: the exception's type name) when it has no text."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if skip and len(lines) > 1 and lines[0].startswith(skip):
        lines = lines[1:]
    return lines[0] if lines else (empty or type(err).__name__)


def print_config_tree(
    cfg: DictConfig, save_to: Path | None = None, order: Sequence[str] = ()
) -> None:
    """Print the resolved config as a tree (groups in ``order`` first) and save it as text."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", style="bold")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        value = cfg[key]
        branch = tree.add(str(key), style="bold cyan")
        is_group = isinstance(value, DictConfig)
        text = OmegaConf.to_yaml(value, resolve=True) if is_group else str(value)
        branch.add(Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default"))
    console = Console(record=True)
    console.print(tree)
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        save_to.write_text(console.export_text())
