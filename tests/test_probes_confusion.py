"""The confusion probe: counts equal an independent tally, the model is left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stemlab
from stemlab.probes.confusion import confusion_matrix
from stemlab.probes.contract import get_probe, probe_names


@pytest.mark.parametrize(
    ("backbone", "shape"), [("r3d_18", (3, 4, 16, 16)), ("resnet18", (3, 32, 32))]
)
def test_counts_match_an_independent_tally(backbone, shape):
    torch.manual_seed(0)
    model = stemlab.create_model(
        backbone, num_classes=5, widths=(4, 4, 8, 8), layers=(1, 1, 1, 1)
    ).train()
    batches = [(torch.randn(6, *shape), torch.randint(0, 5, (6,))) for _ in range(3)]
    matrix = confusion_matrix(model, batches, num_classes=5)
    assert model.training  # mode restored
    expected = np.zeros((5, 5), dtype=np.int64)
    model.eval()
    with torch.no_grad():
        for x, y in batches:
            for true, pred in zip(y.tolist(), model(x).argmax(1).tolist()):
                expected[true, pred] += 1
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.sum() == 18


def test_bad_labels_and_registration():
    model = stemlab.create_model(
        "resnet18", num_classes=3, widths=(4, 4, 8, 8), layers=(1, 1, 1, 1)
    )
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        confusion_matrix(model, [(torch.randn(2, 3, 32, 32), torch.tensor([0, 3]))], num_classes=3)
    # found by the contract without any list naming it
    assert "confusion" in probe_names("trained") and get_probe("confusion").needs == {"data"}
