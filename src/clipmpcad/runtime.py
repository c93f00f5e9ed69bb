"""Device choice, autocast policy, seeding and random generators: the run's execution context."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from .config import PRECISIONS
from .errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a device name from the configuration into a torch.device, checking it exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} was asked for but no CUDA GPU is visible; use --device cpu")
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"unknown device {name!r}; write cuda or cuda:N") from None
        count = torch.cuda.device_count()
        if device.type != "cuda" or (device.index or 0) >= count:
            raise ConfigError(
                f"device {name!r} does not exist: {count} CUDA GPU(s) are visible (cuda:0 to cuda:{count - 1})"
            )
        return device
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)} (or cuda:N)")


def default_workers(device: torch.device) -> int:
    """Image-decoding processes that keep the model fed: several beside a GPU; on a CPU the model
    needs the cores itself, so workers only where there are cores to spare."""
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return min(8, max(1, cores - 1))
    return 0 if cores <= 4 else min(4, cores // 4)


def metric_threads(device: torch.device) -> int:
    """Threads that prepare the test metrics of several batches at once: on a GPU machine the model
    leaves the cores free and a fast model outruns one thread; on a CPU the model needs them."""
    if device.type != "cuda":
        return 1
    return min(4, max(1, (os.cpu_count() or 1) // 4))


def compute_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast type of the backbone and adapters (None: plain fp32). "auto" is bf16 on a GPU
    and fp32 on a CPU; "bf16" on a CPU is about 1.4–1.5 × faster where the CPU computes bf16
    natively (AVX512-BF16 or AMX: native_bf16), slower where it does not."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def precision_name(device: torch.device, precision: str = "auto") -> str:
    """What `precision` computes in on `device`, for records: "bf16" or "fp32"."""
    return "bf16" if compute_dtype(device, precision) == torch.bfloat16 else "fp32"


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """Autocast of the backbone and adapters at `precision` (compute_dtype); scores stay fp32."""
    dtype = compute_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def native_bf16() -> bool:
    """This CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX), so --precision bf16 pays."""
    cpu = torch.cpu
    return any(getattr(cpu, f"_is_{name}_supported", lambda: False)() for name in ("avx512_bf16", "amx_tile"))


def configure_cpu() -> None:
    """Flush denormal floats to zero: tiny adapter activations otherwise slow CPU kernels a lot."""
    torch.set_flush_denormal(True)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a CPU generator for the run's own sampling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def fixed_torch_seed(seed: int) -> Iterator[None]:
    """Run a block under a fixed torch seed without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
