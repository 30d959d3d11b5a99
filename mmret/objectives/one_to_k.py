"""1-to-K cross-lingual contrastive learning (docs/methods.md §3).

Source: "Improving the Consistency in Cross-Lingual Cross-Modal Retrieval with 1-to-K
Contrastive Learning" (KDD 2024). Every image comes with its caption in K languages and
all K captions are positives of the image *inside one softmax*, so no language is
preferred over another.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mmret.distributed import gather_features, get_rank, get_world_size
from mmret.objectives.base import Objective, register_objective
from mmret.objectives.temperature import LearnableTemperature

NORMALIZE_MODES = ("reference", "mean")


@register_objective("one_to_k")
class OneToKObjective(Objective):
    """1-to-K contrastive loss over N images and their captions in K languages.

    Inputs:
        ``image_features`` (N, d), ``text_features`` (N·K, d), L2-normalised; optional
        ``text_mask`` (N·K,) bool; ``logit_scale`` (0-d, ``exp``-ed) only with
        ``temperature=None``.

    Layout: ``image_features`` (N, d) and ``text_features`` (N·K, d), image ``i``'s K
    captions at rows ``K·i … K·i+K-1`` (the same layout the batch contract uses). After a
    distributed all-gather every rank's block is contiguous, so the layout survives.
    With ``S = logit_scale · V Tᵀ`` (N × NK):

    Formula:

    - image→text, one softmax per image over all NK texts, all K captions of the image
      positives in the same denominator, un-normalised targets::

          L_i2t = -(1/N) Σ_i Σ_k log softmax_row(S)_{i, K·i+k}

    - text→image, ordinary InfoNCE of each text over the N images::

          L_t2i = -(1/(N·K)) Σ_j log softmax_row(Sᵀ)_{j, ⌊j/K⌋}

    - total, ``normalize="reference"`` (default, the paper's code):
      ``L = (L_i2t + L_t2i) / (2K)`` — quirk: ``L_t2i`` is already a mean over the NK
      text rows and is divided by K once more. ``normalize="mean"``:
      ``L = (L_i2t / K + L_t2i) / 2`` (both directions per-pair means).

    With K = 1 both forms equal CLIP InfoNCE (``clip`` / ``open_clip.loss.ClipLoss``).

    Missing translations: ``text_mask`` (N·K bools, True = the caption exists). An absent
    text is neither a positive nor in any denominator: its column of S is set to ``-inf``
    before the image→text softmax and its row is dropped from text→image; its features
    are replaced by zeros first, so whatever the collate put there (even NaN) has no
    effect and receives zero gradient. With a mask, writing ``P`` for the set of present
    texts and ``P_i`` for image i's present captions::

        L_i2t = -(1/N) Σ_i Σ_{j ∈ P_i} log softmax_{P}(S_i)_j     (sum over present
                                                                    positives, mean over
                                                                    all N images)
        L_t2i = -(1/|P|) Σ_{j ∈ P} log softmax_row(Sᵀ)_{j, ⌊j/K⌋}  (mean over present texts)

    and the total uses the *nominal* K in both ``normalize`` modes. This is exactly the
    loss of the batch with the absent texts physically removed, and an all-True mask
    gives the unmasked loss exactly. Every image needs at least one present caption
    (otherwise ``ValueError``).

    Temperature: by default (``temperature=0.07``) the objective owns a learnable
    ``τ`` (the reference initialisation), clamped to ``[min_temperature,
    max_temperature] = [0.001, 0.5]`` by :meth:`post_step` after every optimiser step,
    and the model's ``logit_scale`` is ignored. With ``temperature=None`` the model's
    ``logit_scale`` input (already ``exp``-ed) is used and is required.

    Distributed (torchrun): image and text features (and the mask) are all-gathered,
    with gradient when ``gather_with_grad``. With ``local_loss`` a rank computes only its
    n image rows against all W·n·K texts and its n·K text rows against all W·n images;
    the text→image term is normalised by the *global* number of present texts (times W),
    so the mean over ranks of the local losses equals the global loss with or without a
    mask, and DDP-averaged gradients equal the single-process gradients.

    Args:
        num_langs: K, captions per image (≥ 1).
        weight: multiplies the returned loss.
        normalize: ``"reference"`` or ``"mean"`` (see above).
        temperature: initial τ of the objective's own learnable temperature, or None
            to use the model's ``logit_scale``.
        min_temperature, max_temperature: clamp range of the owned τ.
        local_loss: see Distributed.
        gather_with_grad: differentiable all-gather (see :mod:`mmret.distributed`).

    Returns:
        ``{"one_to_k_loss": L}`` (times ``weight``).

    Defaults:
        ``temperature`` τ = 0.07 learnable in [0.001, 0.5], ``normalize="reference"``,
        ``local_loss=False``, ``gather_with_grad=True``, ``weight`` = 1; ``num_langs`` has
        no default.

    Paper:
        "Improving the Consistency in Cross-Lingual Cross-Modal Retrieval with 1-to-K
        Contrastive Learning" (KDD 2024).

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from mmret.objectives import create_objective
        >>> images = F.normalize(torch.randn(3, 8), dim=-1)
        >>> texts = images.repeat_interleave(2, dim=0)  # K = 2 captions per image
        >>> loss = create_objective("one_to_k", num_langs=2)
        >>> sorted(loss(image_features=images, text_features=texts))
        ['one_to_k_loss']
    """

    def __init__(
        self,
        num_langs: int,
        weight: float = 1.0,
        normalize: str = "reference",
        temperature: float | None = 0.07,
        min_temperature: float = 0.001,
        max_temperature: float = 0.5,
        local_loss: bool = False,
        gather_with_grad: bool = True,
    ) -> None:
        super().__init__(weight)
        if isinstance(num_langs, bool) or not isinstance(num_langs, int) or num_langs < 1:
            raise ValueError(f"one_to_k: num_langs must be an integer >= 1, got {num_langs!r}")
        if normalize not in NORMALIZE_MODES:
            raise ValueError(
                f"one_to_k: normalize must be one of {NORMALIZE_MODES}, got {normalize!r}"
            )
        self.num_langs = num_langs
        self.normalize = normalize
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.temperature = (
            LearnableTemperature(
                temperature, min_temperature=min_temperature, max_temperature=max_temperature
            )
            if temperature is not None
            else None
        )
        self.requires = ("image_features", "text_features") + (
            ("logit_scale",) if temperature is None else ()
        )

    def check_captions_per_image(self, k: int) -> None:
        if k != self.num_langs:
            raise ValueError(
                f"one_to_k has num_langs={self.num_langs} but the data yields {k} caption(s) "
                f"per image: they must agree (set objective.one_to_k.num_langs={k}, or train "
                "on multilingual data with mode one_to_k and that many languages)"
            )

    def _check_shapes(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        text_mask: torch.Tensor | None,
    ) -> None:
        k = self.num_langs
        if image_features.dim() != 2 or text_features.dim() != 2:
            raise ValueError(
                f"one_to_k: image_features {tuple(image_features.shape)} and text_features "
                f"{tuple(text_features.shape)} must be 2-D (N, d) and (N*K, d)"
            )
        n, d = image_features.shape
        if tuple(text_features.shape) != (n * k, d):
            raise ValueError(
                f"one_to_k: text_features must have shape (N*K, d) = ({n}*{k}, {d}) for "
                f"image_features {tuple(image_features.shape)} and num_langs={k}, "
                f"got {tuple(text_features.shape)}"
            )
        if text_mask is not None:
            if text_mask.dtype != torch.bool or tuple(text_mask.shape) != (n * k,):
                raise ValueError(
                    f"one_to_k: text_mask must be a bool tensor of shape (N*K,) = ({n * k},), "
                    f"got {text_mask.dtype} {tuple(text_mask.shape)}"
                )

    def compute(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        self._check_shapes(image_features, text_features, text_mask)
        k = self.num_langs
        n = image_features.shape[0]
        scale = self.temperature.logit_scale() if self.temperature is not None else logit_scale
        if text_mask is not None:
            # absent texts contribute nothing, whatever their features hold
            text_features = torch.where(
                text_mask[:, None], text_features, torch.zeros_like(text_features)
            )

        world = get_world_size()
        all_images = gather_features(image_features, self.gather_with_grad)
        all_texts = gather_features(text_features, self.gather_with_grad)
        all_mask = None
        if text_mask is not None:
            # gloo has no bool all_gather; uint8 round trip
            all_mask = gather_features(text_mask.to(torch.uint8), with_grad=False).bool()
            missing = ~all_mask.view(-1, k).any(dim=1)
            if bool(missing.any()):
                first = int(missing.nonzero()[0, 0])
                raise ValueError(
                    f"one_to_k: text_mask leaves {int(missing.sum())} image(s) without any "
                    f"present caption (first: global image {first}); every image needs at "
                    "least one of its K captions"
                )
        total_images = all_images.shape[0]

        if world > 1 and self.local_loss:
            image_offset = get_rank() * n
            logits_per_image = scale * image_features @ all_texts.T  # (n, W·n·K)
            logits_per_text = scale * text_features @ all_images.T  # (n·K, W·n)
            row_mask = text_mask
            t2i_factor = world  # rank mean of local losses == global loss
        else:
            image_offset = 0
            logits_per_image = scale * all_images @ all_texts.T  # (N, N·K)
            logits_per_text = logits_per_image.T
            row_mask = all_mask
            t2i_factor = 1
        rows = logits_per_image.shape[0]

        # image→text: K positives per image in one softmax over the present texts
        if all_mask is not None:
            logits_per_image = logits_per_image.masked_fill(~all_mask[None, :], float("-inf"))
        log_probs = F.log_softmax(logits_per_image, dim=-1).view(rows, total_images, k)
        row_index = torch.arange(rows, device=log_probs.device)
        positives = log_probs[row_index, row_index + image_offset]  # (rows, K)
        if row_mask is not None:
            present = row_mask.view(rows, k)
            positives = torch.where(present, positives, torch.zeros_like(positives))
        loss_i2t = -positives.sum(dim=1).mean()

        # text→image: InfoNCE of every (present) text over the images
        text_rows = torch.arange(logits_per_text.shape[0], device=log_probs.device)
        targets = text_rows // k + image_offset  # text j belongs to image ⌊j/K⌋
        if all_mask is None:
            loss_t2i = F.cross_entropy(logits_per_text, targets)
        else:
            nll = F.cross_entropy(logits_per_text, targets, reduction="none")
            nll = torch.where(row_mask, nll, torch.zeros_like(nll))
            loss_t2i = t2i_factor * nll.sum() / all_mask.sum()

        if self.normalize == "reference":
            loss = (loss_i2t + loss_t2i) / (2 * k)
        else:
            loss = (loss_i2t / k + loss_t2i) / 2
        return {"one_to_k_loss": loss}

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, num_langs={self.num_langs}, normalize={self.normalize!r}, "
            f"local_loss={self.local_loss}"
        )
