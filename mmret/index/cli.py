"""``mmret-index``: build an image gallery index from a model, and search it with text.

    mmret-index build --model ViT-B-32 --pretrained openai --images photos/ --out photos.index
    mmret-index build --model runs/exp1 --images photos/ --out photos.index   # checkpoint
    mmret-index search --index photos.index --query "a dog on a beach" -k 5

``--model`` is a tower name for ``mmret.create_towers(name, pretrained)`` or, when it is an
existing path, a run/checkpoint directory for
``mmret.load_checkpoint``. Image ids are paths relative to
``--images`` (recursive; .jpg/.jpeg/.png/.webp). The index stores the model's fingerprint;
``search`` refuses a model whose weights differ unless ``--ignore-fingerprint``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmret.index.errors import RetrievalIndexError
from mmret.index.fingerprint import model_fingerprint
from mmret.index.retrieval_index import RetrievalIndex, build_index

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


class CliError(Exception):
    """A user error reported as ``mmret-index: error: ...`` with exit status 2."""


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load: a tower name (+ pretrained tag) or a checkpoint path."""

    model: str
    pretrained: str | None = None

    @property
    def is_checkpoint(self) -> bool:
        return Path(self.model).exists()


def _load_towers(spec: ModelSpec) -> Any:
    """Load ``Towers(model, train_transform, eval_transform, tokenizer)`` for ``spec``."""
    if spec.is_checkpoint:
        from mmret.towers import load_checkpoint

        return load_checkpoint(spec.model)
    from mmret import create_towers

    return create_towers(spec.model, spec.pretrained)


def list_images(root: Path) -> list[str]:
    """Relative POSIX paths of the images under ``root`` (recursive), sorted."""
    if not root.is_dir():
        raise CliError(f"--images: {root} is not a folder")
    paths = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not paths:
        raise CliError(f"--images: no {'/'.join(IMAGE_SUFFIXES)} files under {root}")
    return paths


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CliError("--device: cuda requested but torch sees no GPU")
    return torch.device(name)


def encode_images(
    model: Any, transform: Any, root: Path, paths: list[str], batch_size: int,
    num_workers: int, device: torch.device,
) -> tuple[np.ndarray, list[str]]:
    """L2-normalised image features float32[M, D] of the M readable paths (in order)
    through the one encoder (:func:`mmret.encoding.encode_image_files`); unreadable images
    are skipped and reported."""
    from mmret.encoding import EncodeOptions, encode_image_files

    options = EncodeOptions(batch_size=batch_size, device=device, num_workers=num_workers,
                            progress=True, desc="encoding images")
    result = encode_image_files(model, [root / p for p in paths], transform, options,
                                on_error="skip")
    if result.skipped:
        print(f"skipped {len(result.skipped)} unreadable image(s), e.g. "
              f"{paths[result.skipped[0]]}", file=sys.stderr)
    if not result.kept:
        raise CliError(f"--images: none of the {len(paths)} images could be read")
    return result.features.numpy(), [paths[i] for i in result.kept]


def encode_texts(towers: Any, texts: list[str], device: torch.device) -> np.ndarray:
    """L2-normalised text features float32[len(texts), D] (the one encoder)."""
    from mmret.encoding import EncodeOptions
    from mmret.encoding import encode_texts as encode

    options = EncodeOptions(batch_size=256, device=device)
    return encode(towers.model, texts, towers.tokenizer, options).numpy()


def _prepare_model(spec: ModelSpec, device: torch.device) -> tuple[Any, str]:
    towers = _load_towers(spec)
    model = towers.model
    fingerprint = model_fingerprint(model)
    model.to(device).eval()
    return towers, fingerprint


def cmd_build(args: argparse.Namespace) -> int:
    root = Path(args.images)
    paths = list_images(root)
    spec = ModelSpec(args.model, args.pretrained)
    device = _device(args.device)
    towers, fingerprint = _prepare_model(spec, device)
    feats, ids = encode_images(
        towers.model, towers.eval_transform, root, paths, args.batch_size, args.num_workers,
        device,
    )
    model_ref = str(Path(spec.model).resolve()) if spec.is_checkpoint else spec.model
    index = build_index(
        feats, ids=ids, factory=args.factory, metric=args.metric, nprobe=args.nprobe,
        ef_search=args.ef_search, train_size=args.train_size, fingerprint=fingerprint,
        device=args.index_device,
        extra={"model": model_ref, "pretrained": spec.pretrained,
               "image_root": str(root.resolve())},
    )
    index.save(args.out)
    print(f"saved {len(index)} images ({index.dim}-d, {index.factory}) to {args.out}")
    return 0


def format_hits(query: str, scores: np.ndarray, ids: Sequence[Any]) -> str:
    """A text table of one query's hits (missing results are left out)."""
    lines = [f"query: {query!r}", f"{'rank':>4}  {'score':>8}  id"]
    for rank, (score, hit) in enumerate(zip(scores.tolist(), ids, strict=True), start=1):
        if hit is None or (not isinstance(hit, str) and int(hit) < 0):
            continue
        lines.append(f"{rank:>4}  {score:>8.4f}  {hit}")
    return "\n".join(lines)


def cmd_search(args: argparse.Namespace) -> int:
    queries = list(args.query or [])
    if args.queries_file:
        text = Path(args.queries_file).read_text(encoding="utf-8")
        queries.extend(line.strip() for line in text.splitlines() if line.strip())
    if not queries:
        raise CliError("give at least one --query or a --queries-file")
    index = RetrievalIndex.load(args.index, device=args.index_device)
    if args.nprobe is not None:
        index.nprobe = args.nprobe
    if args.ef_search is not None:
        index.ef_search = args.ef_search
    model_name = args.model or index.extra.get("model")
    if not model_name:
        raise CliError("--model: not given and the index does not record its model")
    pretrained = args.pretrained if args.model else index.extra.get("pretrained")
    device = _device(args.device)
    towers, fingerprint = _prepare_model(ModelSpec(model_name, pretrained), device)
    if index.fingerprint and fingerprint != index.fingerprint and not args.ignore_fingerprint:
        raise CliError(
            f"model {model_name!r} has fingerprint {fingerprint[:20]}..., the index was built "
            f"with {index.fingerprint[:20]}...; its features are not comparable (pass "
            "--ignore-fingerprint to search anyway)"
        )
    scores, ids = index.search(encode_texts(towers, queries, device), args.k)
    for i, query in enumerate(queries):
        print(format_hits(query, scores[i], ids[i]))
        print()
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmret-index", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def model_args(p: argparse.ArgumentParser, required: bool) -> None:
        p.add_argument("--model", required=required,
                       help="tower name (e.g. ViT-B-32, mmret-tiny) or checkpoint/run folder")
        p.add_argument("--pretrained", default=None, help="pretrained tag for a tower name")
        p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                       help="device of the model")
        p.add_argument("--index-device", default="cpu", choices=("auto", "cpu", "cuda"),
                       help="device of the FAISS index")
        p.add_argument("--nprobe", type=int, default=None, help="IVF lists visited per query")
        p.add_argument("--ef-search", type=int, default=None, help="HNSW search beam width")

    build = sub.add_parser("build", help="encode an image folder and save an index")
    model_args(build, required=True)
    build.add_argument("--images", required=True, help="image folder (searched recursively)")
    build.add_argument("--out", required=True, help="index folder to write")
    build.add_argument("--factory", default="Flat", help="FAISS factory string")
    build.add_argument("--metric", default="ip", choices=("ip", "l2"))
    build.add_argument("--train-size", type=int, default=200_000)
    build.add_argument("--batch-size", type=int, default=64)
    build.add_argument("--num-workers", type=int, default=0)
    build.set_defaults(func=cmd_build)

    search = sub.add_parser("search", help="search a saved index with text queries")
    model_args(search, required=False)
    search.add_argument("--index", required=True, help="index folder written by build")
    search.add_argument("--query", action="append", help="text query (repeatable)")
    search.add_argument("--queries-file", help="text file, one query per line")
    search.add_argument("-k", type=int, default=5, help="hits per query")
    search.add_argument("--ignore-fingerprint", action="store_true",
                        help="search even if the model differs from the index's")
    search.set_defaults(func=cmd_search)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mmret-index``; returns the exit status (0 ok, 2 user error)."""
    args = _build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CliError, RetrievalIndexError) as exc:
        print(f"mmret-index: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
