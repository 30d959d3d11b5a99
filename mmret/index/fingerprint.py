"""Model fingerprints: which weights produced the vectors of an index."""

from __future__ import annotations

import hashlib

import torch


def model_fingerprint(model: torch.nn.Module) -> str:
    """``"sha256:<hex>"`` over the model's ``state_dict`` (names, dtypes, shapes, bytes).

    Two models with bit-identical weights (and buffers) get the same fingerprint whatever
    device they live on; any change to any tensor changes it.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()
