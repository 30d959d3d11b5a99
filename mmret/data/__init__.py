"""Datasets of mmret: the synthetic shapes benchmark (``mmret.data.synthetic``) and loaders
for the dataset formats of docs/methods.md section 8.

- image-text retrieval: :func:`load_karpathy`, :func:`load_albef` -> :class:`RetrievalSplit`,
  :class:`ImageTextTrainDataset`;
- multilingual: :func:`load_iglue`, :func:`load_multi30k`, :func:`load_xtd` ->
  :class:`MultilingualSplit`, :class:`OneToKDataset`, :class:`RandomLanguageDataset`;
- composed retrieval: :func:`load_cirr`, :func:`load_fashioniq` -> :class:`ComposedSplit`,
  :class:`ComposedTrainDataset`.

Malformed annotation files raise :class:`DatasetFormatError` naming file, record and field.
"""

from mmret.data.composed import (
    FASHIONIQ_CATEGORIES,
    ComposedSplit,
    ComposedTrainDataset,
    ComposedTriplet,
    join_captions,
    load_cirr,
    load_fashioniq,
)
from mmret.data.errors import DatasetFormatError
from mmret.data.images import ImagePathDataset, load_image, to_tensor
from mmret.data.multilingual import (
    MultilingualSplit,
    OneToKDataset,
    RandomLanguageDataset,
    load_iglue,
    load_multi30k,
    load_xtd,
)
from mmret.data.retrieval import (
    ImageTextTrainDataset,
    RetrievalSplit,
    concat_splits,
    load_albef,
    load_karpathy,
)

__all__ = [
    "FASHIONIQ_CATEGORIES",
    "ComposedSplit",
    "ComposedTrainDataset",
    "ComposedTriplet",
    "DatasetFormatError",
    "ImagePathDataset",
    "ImageTextTrainDataset",
    "MultilingualSplit",
    "OneToKDataset",
    "RandomLanguageDataset",
    "RetrievalSplit",
    "concat_splits",
    "join_captions",
    "load_albef",
    "load_cirr",
    "load_fashioniq",
    "load_iglue",
    "load_image",
    "load_karpathy",
    "load_multi30k",
    "load_xtd",
    "to_tensor",
]
