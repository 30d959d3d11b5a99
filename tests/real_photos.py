"""A small real-photo data set, made offline from the photographs scikit-image ships
(``skimage.data``), with captions written for them, stored the ways users' files come:
baseline, progressive, CMYK and EXIF-rotated JPEGs, grey JPEGs, 16-bit PNGs (grey and
RGB), an RGBA PNG and a very large JPEG.

:func:`write_real_photos` lays it out as a Karpathy-format data set::

    root/dataset_photos.json
    root/images/train/<name>.<ext>     8 photos
    root/images/test/<name>.<ext>      8 photos

Each photo is stored in exactly one form (no two files hold the same pixels, so retrieval
has no ties), and :data:`PHOTOS` records, per photo, the form and the picture a viewer
shows (:func:`expected_rgb`), for checking the decoding.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ANNOTATION = "dataset_photos.json"
#: the EXIF orientation tag; 6 = "rotate 90° clockwise to display"
EXIF_ORIENTATION = 0x0112
#: the very large photo's stored width (its height keeps the aspect ratio)
LARGE_WIDTH = 4096


@dataclass(frozen=True)
class Photo:
    """One photograph: ``skimage.data`` name, split, storage form, two captions."""

    name: str
    split: str
    form: str
    captions: tuple[str, str]

    @property
    def filename(self) -> str:
        return f"{self.name}.{'png' if self.form.startswith('png') else 'jpg'}"


#: forms: jpeg (baseline RGB), progressive, cmyk, exif_rotated, grey_jpeg, png16_grey,
#: png16_rgb, png_rgba, large
PHOTOS: tuple[Photo, ...] = (
    # ---- train
    Photo("coffee", "train", "progressive", (
        "A red cup of espresso on a matching saucer with a small spoon, on a wooden table.",
        "Overhead view of a coffee cup and saucer on a brown wood surface.")),
    Photo("chelsea", "train", "cmyk", (
        "Close-up of a tabby cat's face with green eyes and a pink nose.",
        "A striped brown cat looks straight at the camera.")),
    Photo("rocket", "train", "exif_rotated", (
        "A white rocket stands on its launch pad between tall towers under a deep blue sky.",
        "A launch pad at dusk with a rocket lit by floodlights.")),
    Photo("moon", "train", "png16_grey", (
        "A grey close-up of the lunar surface with a few small craters.",
        "The cratered surface of the moon in black and white.")),
    Photo("immunohistochemistry", "train", "png_rgba", (
        "A microscope image of stained tissue with brown cell membranes and blue nuclei.",
        "Brown-stained glands surrounded by pale blue tissue under a microscope.")),
    Photo("coins", "train", "grey_jpeg", (
        "Rows of old silver coins laid out on a dark background.",
        "A black and white photo of two dozen ancient coins in four rows.")),
    Photo("brick", "train", "grey_jpeg", (
        "A grey brick wall with long rows of rectangular bricks.",
        "Close-up of a wall of bricks laid in a regular pattern.")),
    Photo("grass", "train", "jpeg", (
        "A close-up of dry grass and small fallen leaves.",
        "A patch of lawn with thin blades of grass seen from above.")),
    # ---- test
    Photo("motorcycle", "test", "progressive", (
        "A red motorcycle parked in a garage with shelves and boxes behind it.",
        "A red and black motorbike standing on a concrete floor indoors.")),
    Photo("astronaut", "test", "cmyk", (
        "A smiling astronaut in an orange spacesuit poses beside an American flag.",
        "Portrait of a woman astronaut with a black helmet and a model space shuttle.")),
    Photo("camera", "test", "exif_rotated", (
        "A man in a dark coat looks through a camera on a tripod in a grassy field.",
        "A black and white photo of a photographer with his tripod outdoors.")),
    Photo("retina", "test", "png16_rgb", (
        "A photograph of the back of a human eye with red blood vessels and a bright disc.",
        "An orange-red retina with branching veins on a black background.")),
    Photo("hubble_deep_field", "test", "large", (
        "Thousands of faint galaxies scattered across a black sky.",
        "A telescope image of distant galaxies as small coloured specks on a dark background.")),
    Photo("page", "test", "grey_jpeg", (
        "A scanned page of printed text with the heading Region-based segmentation.",
        "A page of a book with a title and a paragraph about markers and coins.")),
    Photo("text", "test", "grey_jpeg", (
        "Handwritten mathematical formulas on a sheet photographed at an angle.",
        "Equations and symbols written by hand in dark ink.")),
    Photo("gravel", "test", "jpeg", (
        "A ground covered with small grey pebbles.",
        "Close-up of gravel stones seen from above.")),
)


def source_rgb(name: str) -> np.ndarray:
    """The photograph as scikit-image ships it, as uint8 RGB (H, W, 3)."""
    import skimage.data

    array = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" \
        else getattr(skimage.data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return np.ascontiguousarray(array[..., :3].astype(np.uint8))


def expected_rgb(photo: Photo) -> np.ndarray:
    """The uint8 RGB picture a viewer shows for the stored file (the large photo: its
    stored size)."""
    rgb = source_rgb(photo.name)
    if photo.form == "large":
        return np.asarray(Image.fromarray(rgb).resize(_large_size(rgb), Image.Resampling.BICUBIC))
    if photo.form in ("grey_jpeg", "png16_grey"):
        grey = np.asarray(Image.fromarray(rgb).convert("L"))
        return np.stack([grey] * 3, axis=-1)
    return rgb


def _large_size(rgb: np.ndarray) -> tuple[int, int]:
    h, w = rgb.shape[:2]
    return LARGE_WIDTH, round(h * LARGE_WIDTH / w)


def write_png16(path: Path, array: np.ndarray) -> None:
    """A 16-bit PNG (grey (H, W) or RGB (H, W, 3), uint16), written with zlib directly
    (Pillow cannot write 16-bit RGB)."""
    height, width = array.shape[:2]
    colour_type = 0 if array.ndim == 2 else 2
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def write_photo(photo: Photo, path: Path) -> None:
    """Store ``photo`` at ``path`` in its form."""
    rgb = source_rgb(photo.name)
    image = Image.fromarray(rgb)
    if photo.form == "jpeg":
        image.save(path, quality=92)
    elif photo.form == "progressive":
        image.save(path, quality=92, progressive=True, optimize=True)
    elif photo.form == "cmyk":
        image.convert("CMYK").save(path, quality=95)
    elif photo.form == "exif_rotated":
        # the pixels are stored on their side (as a camera held upright writes them) and
        # the EXIF orientation 6 says: rotate 90° clockwise to display
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6
        image = image.convert("L") if photo.name == "camera" else image
        image.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif.tobytes())
    elif photo.form == "grey_jpeg":
        image.convert("L").save(path, quality=92)
    elif photo.form == "png16_grey":
        grey = np.asarray(image.convert("L")).astype(np.uint16) * 257  # full 16-bit range
        write_png16(path, grey)
    elif photo.form == "png16_rgb":
        write_png16(path, rgb.astype(np.uint16) * 257)
    elif photo.form == "png_rgba":
        alpha = np.full(rgb.shape[:2] + (1,), 255, dtype=np.uint8)
        alpha[: rgb.shape[0] // 4] = 128  # a half-transparent band: colour kept as stored
        Image.fromarray(np.concatenate([rgb, alpha], axis=-1), "RGBA").save(path)
    elif photo.form == "large":
        Image.fromarray(expected_rgb(photo)).save(path, quality=90)
    else:
        raise ValueError(f"photo {photo.name}: unknown form {photo.form!r}")


def write_real_photos(root: str | Path) -> Path:
    """Write every photo of :data:`PHOTOS` and the Karpathy annotation under ``root``;
    returns the annotation path."""
    root = Path(root)
    images, sentid = [], 0
    for imgid, photo in enumerate(PHOTOS):
        folder = root / "images" / photo.split
        folder.mkdir(parents=True, exist_ok=True)
        write_photo(photo, folder / photo.filename)
        sentences = []
        for text in photo.captions:
            tokens = text.lower().rstrip(".").replace(",", "").split()
            sentences.append({"raw": text, "tokens": tokens, "imgid": imgid, "sentid": sentid})
            sentid += 1
        images.append({"filepath": f"images/{photo.split}", "filename": photo.filename,
                       "imgid": imgid, "split": photo.split,
                       "sentids": [s["sentid"] for s in sentences], "sentences": sentences})
    path = root / ANNOTATION
    path.write_text(json.dumps({"dataset": "skimage_photos", "images": images}, indent=1),
                    encoding="utf-8")
    return path
