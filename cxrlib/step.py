"""The training step: one optimizer step, its precision, and how it is compiled.

``fit`` and the throughput benchmarks (``bench/``, ``cxrlib check``'s speed probe) call the
same :func:`train_step`, so a benchmark times exactly the engine's step.

**Compilation** (:class:`Stepper`). On CUDA a batch of CheXNet's 16 images is bound by the
host: an eager DenseNet-121 step dispatches ~800 forward and ~2,000 backward kernels, about
15-20 ms of Python and dispatcher time whatever the GPU. ``torch.compile`` with
``mode="reduce-overhead"`` captures the compiled forward and backward in CUDA graphs, so a
step is a few graph launches. A graph holds one shape, so the step is compiled for the
training batch only (``dynamic=False``): the epoch's last, smaller batch runs eagerly
through the same module (same weights, same math) instead of triggering a recompilation or
a second graph set for a shape seen once per epoch. On the CPU (``train.compile=true``)
the default mode is used: CUDA graphs do not exist there.

Only a failure *of the compiler* falls back to eager training, and only under
``train.compile=auto``; it says so on stderr as well as in a warning. Everything else
raised inside the step is the step's own error and reaches the caller as it was raised: an
out-of-memory error stays ``torch.OutOfMemoryError`` (the batch does not fit, compiled or
not), never "torch.compile failed".
"""
from __future__ import annotations

import gc
import sys
import warnings
from contextlib import nullcontext

import torch
from torch import nn

# (autocast on?, its dtype, gradient scaler needed?)
Amp = tuple[bool, "torch.dtype | None", bool]


def amp_settings(device: torch.device, enabled: bool) -> Amp:
    """(autocast on?, its dtype, gradient scaler needed?): bf16 where the GPU has it, else fp16 + scaler.

    ``is_bf16_supported`` counts emulation by default: a V100 or T4 (no bf16 units) would get
    emulated bf16, slower than fp16 and without the loss scaling fp16 needs; only native
    support counts here.
    """
    if device.type != "cuda" or not enabled:
        return False, None, False
    if bf16_native(device):
        return True, torch.bfloat16, False
    return True, torch.float16, True


def bf16_native(device: torch.device) -> bool:
    """bf16 in hardware (compute capability 8.0, Ampere, or newer), not emulated."""
    return torch.cuda.is_bf16_supported(including_emulation=False) and \
        torch.cuda.get_device_capability(device)[0] >= 8


def train_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, amp: Amp) -> torch.Tensor:
    """One optimizer step (forward under autocast when ``amp[0]``, loss in float32, backward).

    ``amp`` is what :func:`amp_settings` returns.
    """
    with torch.autocast(x.device.type, dtype=amp[1]) if amp[0] else nullcontext():
        logits = net(x)
    loss = loss_fn(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss


def make_optimizer(name: str, params, lr: float, weight_decay: float, fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer ``fit`` uses; ``fused`` (CUDA): one kernel for all parameters instead of several per tensor."""
    fused = bool(fused) or None  # None: torch's default implementation
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay, fused=fused)
    raise ValueError(f"unknown optimizer {name!r}: expected adam, adamw or sgd")


def compile_enabled(setting, device: torch.device) -> bool:
    """``train.compile``: ``auto`` compiles on CUDA only (on the CPU inductor's C++ build takes
    minutes, longer than a CPU run trains), ``true`` and ``false`` decide everywhere."""
    if setting == "auto":
        return device.type == "cuda"
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"train.compile={setting!r}: expected auto, true or false")


def compile_mode(device: torch.device) -> str:
    """CUDA graphs on CUDA (the host-bound small batch), inductor's default elsewhere."""
    return "reduce-overhead" if device.type == "cuda" else "default"


def is_compiler_failure(err: BaseException) -> bool:
    """True when ``err`` comes from torch.compile's compiler (dynamo, a backend, inductor's
    build), False for anything the step itself raised, an out-of-memory error above all
    (also when the compiler wrapped one)."""
    seen, e = set(), err
    while e is not None and id(e) not in seen:  # the compiler wraps the real cause
        if isinstance(e, torch.OutOfMemoryError):
            return False
        seen.add(id(e))
        e = e.__cause__ or getattr(e, "inner_exception", None)
    try:
        from torch._dynamo.exc import TorchDynamoException
    except ImportError:  # a torch without dynamo cannot have failed to compile
        return False
    if isinstance(err, TorchDynamoException):
        return True
    module = type(err).__module__ or ""
    return module.startswith(("torch._dynamo", "torch._inductor"))


class Stepper:
    """:func:`train_step` through ``torch.compile(net)`` for ``batch_size``-image batches, eager otherwise.

    Compiled once, for the training batch's shape (``dynamic=False``); any other batch (the
    epoch's last) runs eagerly through ``net``, so it costs one eager step, not a compilation.
    """

    def __init__(self, net: nn.Module, setting, device: torch.device, batch_size: int):
        self.net, self.setting, self.batch_size = net, setting, int(batch_size)
        self.compiled = None
        if compile_enabled(setting, device):
            self.compiled = torch.compile(net, mode=compile_mode(device), dynamic=False)
        self.compiled_steps = 0  # steps that went through the compiled module
        self.eager_steps = 0

    def __call__(self, x, y, loss_fn, optimizer, scaler, amp) -> torch.Tensor:
        if self.compiled is None or len(x) != self.batch_size:
            self.eager_steps += 1
            return train_step(self.net, x, y, loss_fn, optimizer, scaler, amp)
        failure = None
        if x.is_cuda:  # a new training iteration: the previous step's graph outputs may be reused
            torch.compiler.cudagraph_mark_step_begin()
        try:
            loss = train_step(self.compiled, x, y, loss_fn, optimizer, scaler, amp)
            self.compiled_steps += 1
            return loss
        except Exception as e:  # noqa: BLE001 - sorted below: only the compiler's own failures are caught
            if not is_compiler_failure(e) or self.setting is True:
                if is_compiler_failure(e):
                    raise RuntimeError(f"torch.compile failed ({type(e).__name__}: {e}); set train.compile=false "
                                       f"to train without it") from e
                raise
            failure = f"{type(e).__name__}: {str(e)[:300]}"
        # outside the except block: the traceback (and with it the failed attempt's activations)
        # is gone before the eager step allocates its own
        return self._fall_back(failure, x, y, loss_fn, optimizer, scaler, amp)

    def _fall_back(self, failure: str, x, y, loss_fn, optimizer, scaler, amp) -> torch.Tensor:
        self.compiled = None
        optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if x.device.type == "cuda":
            torch.cuda.empty_cache()
        message = (f"torch.compile FAILED ({failure}); this run goes on WITHOUT compilation, eagerly and slower "
                   f"(set train.compile=false to skip the attempt, or true to stop on such a failure)")
        print(f"WARNING: {message}", file=sys.stderr, flush=True)
        warnings.warn(message, stacklevel=3)
        self.eager_steps += 1
        return train_step(self.net, x, y, loss_fn, optimizer, scaler, amp)
