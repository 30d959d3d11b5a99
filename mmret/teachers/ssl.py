"""A fair offline image teacher: a tiny CNN trained self-supervised on training images only.

CUSA's image teacher is a uni-modal image-retrieval model. Offline, mmret trains one from
scratch on the benchmark's *training images* (never captions, never evaluation images)
with SimCLR-style contrastive learning: two augmented views of each image, NT-Xent
(InfoNCE over the 2B views, temperature τ)::

    z = normalize(g(f(x))),   L = -(1/2B) Σ_a log softmax_{b≠a}(z_a · z_b / τ)_{pair(a)}

``f`` (:class:`TinyConvEncoder`, four 3×3 convolutions on 64×64 inputs, pooled to a 3×3
grid so coarse positions survive) gives the teacher features; the projection MLP ``g`` is
dropped after training. Augmentations keep what captions describe: small shifts (up to
``max_shift`` pixels, edge-replicated), brightness and contrast in ``[1-jitter, 1+jitter]``
and pixel noise; no hue change, large crop or (by default) flip, since colours and
positions are described. About 1 s per step of 128 images on two CPU cores.

Saved as ``model.safetensors`` (encoder only) + ``teacher.json`` (architecture,
preprocessing, training settings, image-list digest, weights sha256); load with
:meth:`mmret.teachers.ImageTeacher.from_pretrained_dir`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mmret.data.images import load_image

FORMAT = "mmret-ssl-image-teacher/1"
WEIGHTS_FILE = "model.safetensors"
DESCRIPTION_FILE = "teacher.json"


class TinyConvEncoder(nn.Module):
    """Images (B, 3, S, S) → features (B, dim).

    conv3×3/2 (3→w) → conv3×3/2 (w→2w) → conv3×3/2 (2w→4w) → conv3×3 (4w→4w), each
    followed by GroupNorm(1) and ReLU; adaptive average pooling to ``grid × grid``,
    flatten, Linear(4w·grid², dim).
    """

    def __init__(self, width: int = 32, dim: int = 128, grid: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = [3, width, 2 * width, 4 * width, 4 * width]
        for i in range(4):
            stride = 2 if i < 3 else 1
            layers += [
                nn.Conv2d(channels[i], channels[i + 1], 3, stride=stride, padding=1),
                nn.GroupNorm(1, channels[i + 1]),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(grid), nn.Flatten())
        self.proj = nn.Linear(4 * width * grid * grid, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(images))


def _resize_square(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (bicubic) and center-crop to ``size × size``."""
    w, h = image.size
    scale = size / min(w, h)
    if (w, h) != (size, size):
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))),
                             Image.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def _to_uint8(image: Image.Image, size: int) -> torch.Tensor:
    array = np.asarray(_resize_square(image.convert("RGB"), size), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


class SSLTransform:
    """PIL image → normalised FloatTensor[3, S, S] (the teacher's eval preprocessing)."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size = int(size)
        self.mean = torch.tensor(list(mean)).view(3, 1, 1)
        self.std = torch.tensor(list(std)).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return (_to_uint8(image, self.size).float() / 255.0 - self.mean) / self.std

    def __repr__(self) -> str:
        return (f"SSLTransform(size={self.size}, mean={self.mean.flatten().tolist()}, "
                f"std={self.std.flatten().tolist()})")


def ssl_transform(description: dict[str, Any]) -> SSLTransform:
    return SSLTransform(description["image_size"], description["mean"], description["std"])


def augment(images: torch.Tensor, generator: torch.Generator, max_shift: int = 4,
            jitter: float = 0.2, noise: float = 0.03, hflip: bool = False) -> torch.Tensor:
    """One random view of a uint8 batch (B, 3, S, S) as floats in [0, 1] (see module doc)."""
    b, _, s, _ = images.shape
    x = images.float() / 255.0
    if max_shift > 0:
        padded = F.pad(x, (max_shift,) * 4, mode="replicate")
        offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator).tolist()
        x = torch.stack([padded[i, :, dy:dy + s, dx:dx + s] for i, (dy, dx) in enumerate(offsets)])
    if hflip:
        flip = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if jitter > 0:
        bright = 1 + jitter * (2 * torch.rand(b, 1, 1, 1, generator=generator) - 1)
        contrast = 1 + jitter * (2 * torch.rand(b, 1, 1, 1, generator=generator) - 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean) * bright
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=generator)
    return x.clamp(0.0, 1.0)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent over the 2B L2-normalised views (self-similarities excluded)."""
    z = torch.cat([z1, z2])
    b = z1.shape[0]
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(logits, targets)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def train_image_teacher(
    image_paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    steps: int = 300,
    batch_size: int = 128,
    *,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    temperature: float = 0.2,
    width: int = 32,
    dim: int = 128,
    grid: int = 3,
    image_size: int = 64,
    max_shift: int = 4,
    jitter: float = 0.2,
    noise: float = 0.03,
    hflip: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Path:
    """Train :class:`TinyConvEncoder` with SimCLR on ``image_paths``; returns ``out_dir``.

    Pass *training* images only (e.g. the Karpathy train split): the teacher must never see
    captions or evaluation images. Everything is a function of ``seed`` (and the torch
    build). Writes ``out_dir/model.safetensors`` and ``out_dir/teacher.json`` atomically.
    """
    from safetensors.torch import save
    from tqdm import tqdm

    paths = [str(p) for p in image_paths]
    if len(paths) < 2:
        raise ValueError(f"train_image_teacher: need at least 2 images, got {len(paths)}")
    if steps < 1 or batch_size < 2:
        raise ValueError(f"steps must be >= 1 and batch_size >= 2, got {steps}, {batch_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.stack([
        _to_uint8(load_image(p), image_size)
        for p in tqdm(paths, desc="loading teacher images", disable=not progress)
    ])  # fmt: skip
    mean = (pixels.float() / 255).mean(dim=(0, 2, 3)).tolist()
    std = (pixels.float() / 255).std(dim=(0, 2, 3)).clamp(min=1e-3).tolist()
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    device = torch.device(device)
    encoder = TinyConvEncoder(width, dim, grid).to(device)
    head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, 64)).to(device)
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    batch = min(batch_size, len(paths))
    losses: list[float] = []
    bar = tqdm(range(steps), desc="training image teacher (SimCLR)", disable=not progress)
    for _ in bar:
        index = torch.randperm(len(paths), generator=generator)[:batch]
        views = [
            ((augment(pixels[index], generator, max_shift, jitter, noise, hflip) - mean_t) / std_t)
            for _ in range(2)
        ]
        z1, z2 = (F.normalize(head(encoder(v.to(device))), dim=-1) for v in views)
        loss = nt_xent(z1, z2, temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()

    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    _atomic_write_bytes(out / WEIGHTS_FILE, save(state))
    image_list = hashlib.sha256("\n".join(sorted(Path(p).name for p in paths)).encode())
    description = {
        "format": FORMAT,
        "arch": {"name": "TinyConvEncoder", "width": width, "dim": dim, "grid": grid},
        "image_size": image_size,
        "mean": mean,
        "std": std,
        "train": {
            "method": "SimCLR NT-Xent, two augmented views, training images only",
            "steps": steps, "batch_size": batch, "lr": lr, "weight_decay": weight_decay,
            "temperature": temperature, "seed": seed,
            "augment": {"max_shift": max_shift, "jitter": jitter, "noise": noise,
                        "hflip": hflip},
            "num_images": len(paths), "image_names_sha256": image_list.hexdigest(),
            "first_loss": losses[0], "last_loss": losses[-1],
        },
        "weights_sha256": _file_sha256(out / WEIGHTS_FILE),
    }  # fmt: skip
    text = json.dumps(description, indent=1, sort_keys=True) + "\n"
    _atomic_write_bytes(out / DESCRIPTION_FILE, text.encode())
    return out


def load_ssl_encoder(path: str | os.PathLike) -> tuple[TinyConvEncoder, dict[str, Any]]:
    """(frozen encoder, description) of a folder written by :func:`train_image_teacher`."""
    from safetensors.torch import load_file

    folder = Path(path)
    desc_path, weights_path = folder / DESCRIPTION_FILE, folder / WEIGHTS_FILE
    for file, what in ((desc_path, "teacher description"), (weights_path, "teacher weights")):
        if not file.is_file():
            raise FileNotFoundError(
                f"{file}: {what} not found; expected a folder written by train_image_teacher"
            )
    description = json.loads(desc_path.read_text())
    if description.get("format") != FORMAT:
        raise ValueError(f"{desc_path}: format {description.get('format')!r}, expected {FORMAT!r}")
    actual = _file_sha256(weights_path)
    if actual != description["weights_sha256"]:
        raise ValueError(
            f"{weights_path}: sha256 {actual[:16]}… does not match {desc_path} "
            f"({description['weights_sha256'][:16]}…); the weights are corrupt or were replaced"
        )
    arch = description["arch"]
    encoder = TinyConvEncoder(arch["width"], arch["dim"], arch["grid"])
    encoder.load_state_dict(load_file(str(weights_path)), strict=True)
    return encoder.eval(), description


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mmret.teachers.ssl --annotation dataset.json --image-root R --out DIR``."""
    from mmret.data.retrieval import load_karpathy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotation", required=True, help="Karpathy-format JSON")
    parser.add_argument("--image-root", required=True)
    parser.add_argument("--split", default="train", help="the split to train on (train)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    split = load_karpathy(args.annotation, args.image_root, args.split)
    out = train_image_teacher(split.image_paths, args.out, args.steps, args.batch_size,
                              seed=args.seed, device=args.device)
    print(out)


if __name__ == "__main__":
    main()
