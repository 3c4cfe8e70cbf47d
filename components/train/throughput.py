"""Throughput figures of a training worker: the peak FLOP/s of its device, model FLOPs utilisation (MFU)
and peak memory."""

from __future__ import annotations

import resource
import sys

import torch

# Dense (no 2:4 sparsity) bf16 tensor-core peaks from the vendors' datasheets, FLOP/s. Matched against
# torch.cuda.get_device_name() in order, so the more specific names come first. A device that is not
# listed (and every CPU) has no MFU: a made-up peak would make the figure meaningless.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H800", 989e12),
    ("A100", 312e12),  # SXM and PCIe have the same tensor peak
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),  # AWS's variant of the A10, with less tensor throughput
    ("A10", 125e12),
    ("A6000", 155e12),  # RTX A6000
)


def peak_flops(device: torch.device | str) -> float | None:
    """Peak bf16 FLOP/s of one `device`, or None for a CPU or an unlisted GPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_FLOPS:
        if key.lower() in name.lower():
            return flops
    return None


def mfu(tokens_per_s: float, flops_per_token: float, n_devices: int, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved training FLOP/s over the devices' peak (None without a peak)."""
    if not peak:
        return None
    return tokens_per_s * flops_per_token / (n_devices * peak)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this worker: allocated tensors on a GPU, the process's peak RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
