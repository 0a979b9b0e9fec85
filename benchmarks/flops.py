"""FLOP counting shared by the benchmarks: torch's FlopCounterMode, which also runs on the meta
device (nothing allocated), so official-size models can be counted on any machine."""
from __future__ import annotations

from typing import Callable


def count_flops(fn: Callable) -> int:
    """Total FLOPs torch counts while running fn() without autograd."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())
