"""How many operators one eager training step dispatches: the host's share of a small-batch step.

On a GPU each dispatched operator costs the host roughly 5-10 us of Python, dispatcher and
kernel-launch time whatever the batch, so at CheXNet's batch of 16 the count, not the GPU,
bounds an eager step (README, "GPU machine"). The count does not depend on the device or the
image size, so the CPU measures it: the engine's step (``cxrlib.step.train_step``: forward
under autocast, BCE, backward, Adam) on a tiny batch, every ATen call counted by a dispatch
mode, split into the forward (up to the loss), the loss and backward, and the optimizer.

    PYTHONPATH=. python bench/step_ops.py [--model densenet121]
"""
from __future__ import annotations

import argparse
from collections import Counter


def count(model_name: str, size: int = 32, batch: int = 2) -> dict:
    import cxrlib  # noqa: F401  (before timm)
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from cxrlib.models import create_model
    from cxrlib.step import make_optimizer

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[str(func.overloadpacket)] += 1
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    net = create_model(model_name, num_classes=14, in_chans=1).train()
    opt = make_optimizer("adam", net.parameters(), 1e-3, 0.0)
    x, y = torch.randn(batch, 1, size, size), (torch.rand(batch, 14) < 0.2).float()
    for _ in range(2):  # the second step is the one counted: Adam's state exists by then
        with Count() as fwd, torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(x)
        with Count() as back:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        with Count() as step:
            opt.step()
    casts = sum(n for op, n in fwd.ops.items() if "_to_copy" in op or "to" == op.split(".")[-1])
    # the optimizer is counted apart: on CUDA fit uses fused Adam (a few launches for all
    # parameters), on the CPU this is the per-parameter loop
    return {"model": model_name, "forward_ops": sum(fwd.ops.values()), "casts_in_forward": casts,
            "loss_and_backward_ops": sum(back.ops.values()), "cpu_adam_ops": sum(step.ops.values()),
            "parameters": len(list(net.parameters()))}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="densenet121")
    print(count(ap.parse_args().model))
