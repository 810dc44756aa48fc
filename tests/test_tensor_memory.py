"""The tensor memory tracker counts each storage once, while it lives, and nothing external."""

from __future__ import annotations

import torch

from model_core.bench.memory import TensorMemoryTracker, peak_tensor_bytes

MIB = 2 ** 20


def test_tracker_counts_storages_while_they_live():
    x = torch.zeros(1024, 256)   # 1 MiB that exists before: never counted

    with TensorMemoryTracker(exclude=[x]) as t:
        a = x + 1                # 1 MiB
        b = a * 2                # 2 MiB live
        assert t.current == 2 * MIB
        del a                    # 1 MiB
        assert t.current == MIB
        v = b.view(-1)           # a view: no new storage
        b.add_(1)                # in place: none either
        x.mul_(1)                # in place on an external tensor: not counted
        assert t.current == MIB
        c = torch.cat([b, b])    # 2 MiB more: 3 MiB live, the peak
        del b
        assert t.current == 3 * MIB   # b's storage lives on through the view
        del v
        assert t.current == 2 * MIB
        del c
        assert t.current == 0
    assert t.peak == 3 * MIB


def test_peak_of_a_function_drops_its_result():
    w = torch.randn(64, 64)
    x = torch.randn(8, 64)

    def mlp():
        h = torch.relu(x @ w)    # 2 KiB, and 2 KiB for x @ w until relu returns
        return h @ w             # 2 KiB more while h lives

    assert peak_tensor_bytes(mlp, exclude=[w, x]) == 2 * 8 * 64 * 4
