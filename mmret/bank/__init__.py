"""Static negative bank for composed image retrieval, stage 2 (docs/methods.md §6).

>>> bank = build_bank(model, split.gallery_paths, transform)          # doctest: +SKIP
>>> bank.save("runs/x/bank.safetensors")                               # doctest: +SKIP
>>> bank = NegativeBank.load("runs/x/bank.safetensors",                # doctest: +SKIP
...     expect_model_fingerprint=image_tower_fingerprint(model),
...     expect_images_fingerprint=images_fingerprint(split.gallery_paths))

CLI: ``mmret-bank build --checkpoint RUN --data ROOT --format cirr --split train --out F``.
"""

from mmret.bank.bank import (
    BankFileError,
    BankMismatchError,
    NegativeBank,
    build_bank,
    image_tower,
    image_tower_fingerprint,
    images_fingerprint,
    model_fingerprint,
)
from mmret.bank.encode import encode_images

__all__ = [
    "BankFileError",
    "BankMismatchError",
    "NegativeBank",
    "build_bank",
    "encode_images",
    "image_tower",
    "image_tower_fingerprint",
    "images_fingerprint",
    "model_fingerprint",
]
