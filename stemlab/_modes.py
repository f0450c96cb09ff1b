"""One save/restore of every module's train/eval flag.

``model.train(was_training)`` puts every submodule in the model's own mode, so a frozen (eval)
BatchNorm inside a training model comes back in train mode. :func:`preserved_modes` records
``module.training`` for each module and puts each flag back in ``finally``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

__all__ = ["preserved_modes"]


@contextlib.contextmanager
def preserved_modes(*models: nn.Module) -> Iterator[None]:
    """Record each module's ``training`` flag on entry; restore every flag on exit.

    Args:
        models: the modules whose own flag and whose submodules' flags are kept.

    Yields:
        Nothing; the caller may switch modes freely inside.
    """
    modes = [(module, module.training) for model in models for module in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
