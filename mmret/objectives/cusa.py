"""Cross-modal and uni-modal soft-label alignment, CUSA (docs/methods.md §5).

Source: "Cross-Modal and Uni-Modal Soft-Label Alignment for Image-Text Retrieval"
(AAAI 2024). A plug-in for any dual encoder: frozen uni-modal teachers (an image model, a
sentence-embedding model) give soft targets for the student's similarity rows.

Notation (one batch of P image-text pairs, see "Layouts" below)::

    v^c = normalize(head^c_I(v)),  t^c = normalize(head^c_T(t))      cross features
    v^u = normalize(head^u_I(v)),  t^u = normalize(head^u_T(t))      uni features
    head(x) = Linear(d, d)(LayerNorm(d)(x))
    A^I = cos(f_I, f_I),  A^T = cos(g_T, g_T)                         teacher similarities
    KLrow(S, A, τ_s, τ_t) = (1/rows) Σ_rows KL(softmax(A/τ_t) ‖ softmax(S/τ_s))

    L_con = ½ (L_i2t + L_t2i),   L_i2t = mean_rows( -red_b P_ab log softmax(V^c T^cᵀ/τ_c)_ab )
        with P the row-normalised image-id targets and red = Σ_b ("sum") or (1/cols) Σ_b
        ("mean", the reference quirk: InfoNCE divided by the number of columns)
    L_CSA (each) = ½ [KLrow(V^c T^cᵀ, A^I, τ_csa, τ_t) + KLrow(T^c V^cᵀ, A^T, τ_csa, τ_t)]
    L_CSA (add)  : both directions follow (A^I + A^T)/2
    L_CSA (dot)  : both directions follow sqrt(relu(A^I) ⊙ relu(A^T))
    L_USA = ½ [KLrow(V^u V^uᵀ, A^I, τ_ui, τ_t) + KLrow(T^u T^uᵀ, A^T, τ_ut, τ_t)]
    L = r·L_con + α·L_CSA + β·L_USA

Returned keys: ``contrastive_loss`` = r·L_con, ``csa_loss`` = α·L_CSA, ``usa_loss`` =
β·L_USA (each then times the objective's ``weight``); a term that is switched off (its
weight 0 or its ``use_*`` flag False) is omitted, and so are the heads it alone needs.

Layouts. ``num_langs = K = 1`` (default): ``image_features`` (P, d) and ``text_features``
(P, d) are P pairs; images may repeat (several captions of one image in a batch) and
``image_ids`` (P,) marks them, as in the reference. ``K > 1`` (the 1-to-K layout of
``one_to_k``, docs/methods.md §3): N images, N·K texts, image i's captions at rows
K·i … K·i+K-1, ``teacher_image_features`` (N, d_I), ``teacher_text_features`` (N·K, d_T),
``image_ids`` (N,) optional, ``text_mask`` (N·K,) optional. The batch is then read as the
P = N·K (image, caption) pairs (absent captions of ``text_mask`` dropped): image i's
feature, teacher feature and id are used for each of its captions, so the cross-modal
terms (contrastive, CSA) are exactly the K = 1 formulas on that flattened batch. Image→text
rows of one image are identical, so their mean equals the mean over the N images (full
mask), over all N·K captions with the image teacher's similarity of each caption's image
as target; text→image rows see image i's column K times, which equals (up to a constant
independent of the student) a softmax over the N images whose target is the sum of the
text teacher's probabilities over image i's captions. Without ``image_ids`` the captions
of one image are each other's positives in the contrastive term (ids = image index).
USA's image side always uses the given image rows (N of them, not repeated).

Temperatures follow the reference: each is stored as τ itself (``parametrization="tau"``,
an ``nn.Parameter`` equal to τ, logits divided by it) or, optionally, as ``log(1/τ)``
(``"log_scale"``); each has an initial value, a learnable flag and a clamp range, and all
are clamped *before every forward* (as the reference does) and again in :meth:`post_step`.
Reference CLIP values: τ_c 0.05 in [0.01, 0.10]; τ_csa 0.45 in [0.10, 0.99] shared by both
directions; τ_ui, τ_ut 0.45 in [0.10, 1.00]; τ_t 1.0 frozen (one teacher τ for CSA and USA).

Heads are owned by the objective (they train with it and are saved with its weights):
``LayerNorm(d) → Linear(d, d)``, weights initialised N(0, 0.02²) as in the reference.
Because the LayerNorm comes first, a head gives (up to its ε) the same output for raw and
for L2-normalised tower features, so it can sit on mmret's normalised ``image_features``.
At evaluation, score with :meth:`encode_cross` (the reference retrieves with the cross
heads). With ``heads=False`` the given features (L2-normalised again, which changes nothing
for normalised inputs) serve as both cross and uni features.

Teacher features are constants (detached, no gradient); they may have any width, also
different for images and texts, and need not be normalised.

Distributed: by default (``gather=False``, the reference CLIP configuration) every rank
computes the loss of its own batch. With ``gather=True`` student features are all-gathered
with gradient and teacher features, ids and masks without; every rank then computes the
global loss and DDP-averaged gradients equal the single-process ones (:mod:`mmret.distributed`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmret.distributed import gather_features, get_world_size
from mmret.objectives.base import Objective, register_objective
from mmret.objectives.contrastive import same_id_targets

CSA_MODES = ("each", "add", "dot")
CONTRASTIVE_MODES = ("mean", "sum")
PARAMETRIZATIONS = ("tau", "log_scale")

Range = Sequence[float] | None


class Temperature(nn.Module):
    """A temperature τ with a clamp range ``[low, high]`` (either end may be None).

    ``parametrization="tau"`` stores τ itself (the CUSA reference); ``"log_scale"`` stores
    ``log(1/τ)`` (as :class:`~mmret.objectives.contrastive.LearnableTemperature`). Frozen
    temperatures are buffers. :meth:`value` returns τ as a differentiable 0-d tensor.
    """

    def __init__(
        self,
        init: float,
        temperature_range: Range = None,
        learnable: bool = True,
        parametrization: str = "tau",
        name: str = "temperature",
    ) -> None:
        super().__init__()
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"cusa: temperature_parametrization must be one of {PARAMETRIZATIONS}, "
                f"got {parametrization!r}"
            )
        if not init > 0:
            raise ValueError(f"cusa: {name} must be positive, got {init}")
        low, high = _check_range(temperature_range, name)
        self.label = name
        self.low, self.high = low, high
        self.parametrization = parametrization
        raw = init if parametrization == "tau" else math.log(1.0 / init)
        value = torch.tensor(float(raw), dtype=torch.float32)
        if learnable:
            self.raw = nn.Parameter(value)
        else:
            self.register_buffer("raw", value)

    @property
    def learnable(self) -> bool:
        return isinstance(self.raw, nn.Parameter)

    def value(self) -> torch.Tensor:
        """τ as a 0-d tensor (differentiable when learnable)."""
        return self.raw if self.parametrization == "tau" else torch.exp(-self.raw)

    @property
    def temperature(self) -> float:
        return float(self.value().detach())

    @torch.no_grad()
    def clamp(self) -> None:
        if self.low is None and self.high is None:
            return
        if self.parametrization == "tau":
            self.raw.clamp_(min=self.low, max=self.high)
        else:  # τ ∈ [lo, hi] ⇔ log(1/τ) ∈ [log(1/hi), log(1/lo)]
            self.raw.clamp_(
                min=math.log(1.0 / self.high) if self.high else None,
                max=math.log(1.0 / self.low) if self.low else None,
            )

    def extra_repr(self) -> str:
        return (
            f"{self.label}={self.temperature:.4g}, range=[{self.low}, {self.high}], "
            f"learnable={self.learnable}, parametrization={self.parametrization!r}"
        )


def _check_range(temperature_range: Range, name: str) -> tuple[float | None, float | None]:
    if temperature_range is None:
        return None, None
    values = list(temperature_range)
    if len(values) != 2:
        raise ValueError(f"cusa: {name}_range must be [low, high], got {temperature_range!r}")
    low, high = (None if v is None else float(v) for v in values)
    if (low is not None and low <= 0) or (high is not None and high <= 0) or (
        low is not None and high is not None and low > high
    ):
        raise ValueError(
            f"cusa: {name}_range must satisfy 0 < low <= high, got {temperature_range!r}"
        )
    return low, high


class ProjectionHead(nn.Module):
    """``Linear(d, d)(LayerNorm(d)(x))``; the Linear weight is N(0, std²), bias PyTorch's."""

    def __init__(self, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.normal_(self.proj.weight, std=init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x))


def kl_rows(
    student: torch.Tensor, teacher: torch.Tensor, tau_student: torch.Tensor,
    tau_teacher: torch.Tensor,
) -> torch.Tensor:
    """``(1/rows) Σ_rows KL(softmax(teacher/τ_t) ‖ softmax(student/τ_s))`` (``batchmean``)."""
    targets = F.softmax(teacher / tau_teacher, dim=1)
    log_probs = F.log_softmax(student / tau_student, dim=1)
    return F.kl_div(log_probs, targets, reduction="batchmean")


def cosine_matrix(features: torch.Tensor) -> torch.Tensor:
    """``cos(x_a, x_b)`` for all pairs of rows: (n, n)."""
    unit = F.normalize(features, dim=-1)
    return unit @ unit.T


def soft_contrastive(logits: torch.Tensor, targets: torch.Tensor, mode: str) -> torch.Tensor:
    """``mean_rows(-red_b targets_ab log softmax(logits)_ab)``; red = Σ_b or (1/cols) Σ_b."""
    terms = F.log_softmax(logits, dim=1) * targets
    per_row = terms.sum(dim=1) if mode == "sum" else terms.mean(dim=1)
    return -per_row.mean()


@register_objective("cusa")
class CusaObjective(Objective):
    """CUSA: contrastive + cross-modal (CSA) + uni-modal (USA) soft-label alignment.

    See the module docstring for the formulas, layouts and temperatures.

    Inputs: ``image_features`` (P or N, d) and ``text_features`` (P or N·K, d), the towers'
    outputs; ``teacher_image_features`` (P or N, d_I) aligned with the image rows and
    ``teacher_text_features`` (P or N·K, d_T) aligned with the text rows (required when CSA
    or USA is on); optional ``image_ids`` aligned with the image rows, ``text_mask`` (K > 1).

    Args:
        embed_dim: d, the towers' output width (required with ``heads=True``; inputs of
            another width raise).
        weight: multiplies every returned term.
        alpha, beta: weights α of CSA and β of USA (0 switches the term off).
        contrastive_weight: r (0 switches the contrastive term off, e.g. when another
            objective such as ``one_to_k`` or ``clip`` provides it).
        mode: CSA target, ``"each"`` (default), ``"add"`` or ``"dot"``.
        contrastive_loss_mode: ``"mean"`` (reference) or ``"sum"``.
        heads: own the four ``LayerNorm → Linear`` student heads (reference) or use the
            given features directly.
        use_contrastive, use_csa, use_usa: switch terms off without changing weights.
        use_image_ids: multi-positive contrastive targets from ``image_ids``.
        num_langs: K, captions per image (see Layouts).
        *_temperature, *_temperature_range, learn_*_temperature: initial τ, clamp range
            ``[low, high]`` (None = unclamped) and learnable flag of each temperature.
        temperature_parametrization: ``"tau"`` (reference) or ``"log_scale"``.
        gather, gather_with_grad: distributed all-gather (see Distributed).
        head_init_std: std of the heads' Linear weights.
    """

    def __init__(
        self,
        embed_dim: int | None = None,
        weight: float = 1.0,
        alpha: float = 0.1,
        beta: float = 0.5,
        contrastive_weight: float = 1.0,
        mode: str = "each",
        contrastive_loss_mode: str = "mean",
        heads: bool = True,
        use_contrastive: bool = True,
        use_csa: bool = True,
        use_usa: bool = True,
        use_image_ids: bool = True,
        num_langs: int = 1,
        contrastive_temperature: float = 0.05,
        contrastive_temperature_range: Range = (0.01, 0.10),
        learn_contrastive_temperature: bool = True,
        csa_temperature: float = 0.45,
        csa_temperature_range: Range = (0.10, 0.99),
        learn_csa_temperature: bool = True,
        usa_image_temperature: float = 0.45,
        usa_text_temperature: float = 0.45,
        usa_temperature_range: Range = (0.10, 1.00),
        learn_usa_temperature: bool = True,
        teacher_temperature: float = 1.0,
        teacher_temperature_range: Range = (0.10, 1.00),
        learn_teacher_temperature: bool = False,
        temperature_parametrization: str = "tau",
        gather: bool = False,
        gather_with_grad: bool = True,
        head_init_std: float = 0.02,
    ) -> None:
        super().__init__(weight)
        if mode not in CSA_MODES:
            raise ValueError(f"cusa: mode must be one of {CSA_MODES}, got {mode!r}")
        if contrastive_loss_mode not in CONTRASTIVE_MODES:
            raise ValueError(
                f"cusa: contrastive_loss_mode must be one of {CONTRASTIVE_MODES}, "
                f"got {contrastive_loss_mode!r}"
            )
        if isinstance(num_langs, bool) or not isinstance(num_langs, int) or num_langs < 1:
            raise ValueError(f"cusa: num_langs must be an integer >= 1, got {num_langs!r}")
        self.mode = mode
        self.contrastive_loss_mode = contrastive_loss_mode
        self.num_langs = num_langs
        self.use_image_ids = use_image_ids
        self.gather = gather
        self.gather_with_grad = gather_with_grad
        self.contrastive_weight = float(contrastive_weight)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.with_contrastive = bool(use_contrastive) and self.contrastive_weight != 0.0
        self.with_csa = bool(use_csa) and self.alpha != 0.0
        self.with_usa = bool(use_usa) and self.beta != 0.0
        if not (self.with_contrastive or self.with_csa or self.with_usa):
            raise ValueError(
                "cusa: every term is switched off (contrastive_weight/alpha/beta = 0 or "
                "use_contrastive/use_csa/use_usa = False); enable at least one"
            )
        self.heads = bool(heads)
        if self.heads:
            if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
                raise ValueError(
                    "cusa: embed_dim (the towers' output width, e.g. 128 for mmret-tiny) must "
                    f"be a positive int when heads=True, got {embed_dim!r}"
                )
        self.embed_dim = embed_dim
        cross = self.with_contrastive or self.with_csa
        if self.heads and cross:
            self.cross_image_head = ProjectionHead(embed_dim, head_init_std)
            self.cross_text_head = ProjectionHead(embed_dim, head_init_std)
        if self.heads and self.with_usa:
            self.uni_image_head = ProjectionHead(embed_dim, head_init_std)
            self.uni_text_head = ProjectionHead(embed_dim, head_init_std)

        def temp(init: float, rng: Range, learn: bool, name: str) -> Temperature:
            return Temperature(init, rng, learn, temperature_parametrization, name)

        if self.with_contrastive:
            self.contrastive_temperature = temp(
                contrastive_temperature, contrastive_temperature_range,
                learn_contrastive_temperature, "contrastive_temperature",
            )  # fmt: skip
        if self.with_csa:
            self.csa_temperature = temp(
                csa_temperature, csa_temperature_range, learn_csa_temperature, "csa_temperature"
            )
        if self.with_usa:
            self.usa_image_temperature = temp(
                usa_image_temperature, usa_temperature_range, learn_usa_temperature,
                "usa_image_temperature",
            )  # fmt: skip
            self.usa_text_temperature = temp(
                usa_text_temperature, usa_temperature_range, learn_usa_temperature,
                "usa_text_temperature",
            )  # fmt: skip
        if self.with_csa or self.with_usa:
            self.teacher_temperature = temp(
                teacher_temperature, teacher_temperature_range, learn_teacher_temperature,
                "teacher_temperature",
            )  # fmt: skip
        needs = ["image_features", "text_features"]
        if self.with_csa or self.with_usa:
            needs += ["teacher_image_features", "teacher_text_features"]
        self.requires = tuple(needs)

    # ------------------------------------------------------------------ helpers

    def check_captions_per_image(self, k: int) -> None:
        """K text rows per image must equal ``num_langs`` (see Layouts)."""
        if k != self.num_langs:
            raise ValueError(
                f"cusa has num_langs={self.num_langs} but the data yields {k} caption(s) per "
                f"image: they must agree (set objective.cusa.num_langs={k})"
            )

    @property
    def eval_heads_active(self) -> bool:
        """Whether retrieval should go through :meth:`encode_cross`: the objective owns heads
        and its own contrastive term trains them (with ``use_contrastive=False`` another
        objective trains the towers' features and the heads only see CSA)."""
        return self.heads and self.with_contrastive

    def temperature_values(self) -> dict[str, float]:
        """τ of every temperature by name (the trainer logs these as ``objective.<name>``)."""
        return {name: t.temperature for name, t in self.temperatures().items()}

    def temperatures(self) -> dict[str, Temperature]:
        """The objective's temperatures by name (for logging: ``t.temperature``)."""
        return {n: m for n, m in self.named_children() if isinstance(m, Temperature)}

    @torch.no_grad()
    def clamp_temperatures(self) -> None:
        for t in self.temperatures().values():
            t.clamp()

    def post_step(self) -> None:
        self.clamp_temperatures()

    def _check_width(self, features: torch.Tensor, name: str) -> None:
        if features.dim() != 2:
            raise ValueError(f"cusa: {name} must be 2-D (rows, d), got {tuple(features.shape)}")
        if self.heads and features.shape[1] != self.embed_dim:
            raise ValueError(
                f"cusa: {name} has width {features.shape[1]} but the heads were built for "
                f"embed_dim={self.embed_dim}; set cusa.embed_dim to the towers' output width"
            )

    def encode_cross(
        self, image_features: torch.Tensor | None = None, text_features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Cross-modal features ``normalize(head^c(x))`` for retrieval (None passes through)."""
        return (
            self._project(image_features, "cross_image_head", "image_features"),
            self._project(text_features, "cross_text_head", "text_features"),
        )

    def encode_uni(
        self, image_features: torch.Tensor | None = None, text_features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Uni-modal features ``normalize(head^u(x))`` (the cross heads if USA is off)."""
        image_head = "uni_image_head" if self.with_usa else "cross_image_head"
        text_head = "uni_text_head" if self.with_usa else "cross_text_head"
        return (
            self._project(image_features, image_head, "image_features"),
            self._project(text_features, text_head, "text_features"),
        )

    def _project(self, x: torch.Tensor | None, head: str, name: str) -> torch.Tensor | None:
        if x is None:
            return None
        self._check_width(x, name)
        if self.heads:
            x = getattr(self, head)(x)
        return F.normalize(x, dim=-1)

    def _check_layout(
        self, images: torch.Tensor, texts: torch.Tensor, teacher_images: torch.Tensor | None,
        teacher_texts: torch.Tensor | None, image_ids: torch.Tensor | None,
        text_mask: torch.Tensor | None,
    ) -> None:
        self._check_width(images, "image_features")
        self._check_width(texts, "text_features")
        n, k = images.shape[0], self.num_langs
        if texts.shape[0] != n * k:
            what = "N" if k == 1 else f"N*K = {n}*{k}"
            raise ValueError(
                f"cusa: text_features has {texts.shape[0]} rows, expected {what} = {n * k} for "
                f"image_features with {n} rows and num_langs={k}"
            )
        for name, value, rows in (
            ("teacher_image_features", teacher_images, n),
            ("teacher_text_features", teacher_texts, n * k),
        ):
            if value is not None and (value.dim() != 2 or value.shape[0] != rows):
                raise ValueError(
                    f"cusa: {name} must be (rows, any width) with {rows} rows aligned with "
                    f"the {'image' if 'image' in name else 'text'} rows, got {tuple(value.shape)}"
                )
        if image_ids is not None and tuple(image_ids.shape) != (n,):
            raise ValueError(
                f"cusa: image_ids must have shape ({n},) (one per image row), "
                f"got {tuple(image_ids.shape)}"
            )
        if text_mask is not None and (
            text_mask.dtype != torch.bool or tuple(text_mask.shape) != (n * k,)
        ):
            raise ValueError(
                f"cusa: text_mask must be a bool tensor of shape ({n * k},), "
                f"got {text_mask.dtype} {tuple(text_mask.shape)}"
            )

    # ------------------------------------------------------------------ forward

    def compute(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        teacher_image_features: torch.Tensor | None = None,
        teacher_text_features: torch.Tensor | None = None,
        image_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        self.clamp_temperatures()  # before the forward, as the reference does
        soft = self.with_csa or self.with_usa
        teacher_images = teacher_image_features.detach() if soft else None
        teacher_texts = teacher_text_features.detach() if soft else None
        self._check_layout(
            image_features, text_features, teacher_images, teacher_texts, image_ids, text_mask
        )
        if get_world_size() > 1 and self.gather:
            grad = self.gather_with_grad
            image_features = gather_features(image_features, grad)
            text_features = gather_features(text_features, grad)
            if soft:
                teacher_images = gather_features(teacher_images, with_grad=False)
                teacher_texts = gather_features(teacher_texts, with_grad=False)
            if image_ids is not None:
                image_ids = gather_features(image_ids, with_grad=False)
            if text_mask is not None:  # gloo has no bool all_gather
                text_mask = gather_features(text_mask.to(torch.uint8), with_grad=False).bool()

        n, k = image_features.shape[0], self.num_langs
        # pair p = (image owner[p], text p); K = 1 without a mask: owner = arange(N)
        owner = torch.arange(n, device=image_features.device).repeat_interleave(k)
        if text_mask is not None:
            keep = text_mask.nonzero().flatten()
            owner = owner[keep]
            text_features = text_features[keep]
            teacher_texts = teacher_texts[keep] if soft else None
        pair_ids = (image_ids if image_ids is not None else torch.arange(n, device=owner.device))
        pair_ids = pair_ids[owner]
        if k == 1 and image_ids is None:
            pair_ids = None

        losses: dict[str, torch.Tensor] = {}
        if self.with_contrastive or self.with_csa:
            v_c, t_c = self.encode_cross(image_features, text_features)
            v_c = v_c[owner]
            sim = v_c @ t_c.T  # (P, P): image of pair a · text of pair b
        if self.with_contrastive:
            tau = self.contrastive_temperature.value()
            if pair_ids is not None and self.use_image_ids:
                targets = same_id_targets(pair_ids, pair_ids).to(sim.dtype)
            else:
                targets = torch.eye(sim.shape[0], device=sim.device, dtype=sim.dtype)
            mode = self.contrastive_loss_mode
            loss = (
                soft_contrastive(sim / tau, targets, mode)
                + soft_contrastive(sim.T / tau, targets.T, mode)
            ) / 2
            losses["contrastive_loss"] = self.contrastive_weight * loss
        if soft:
            tau_t = self.teacher_temperature.value()
            dtype = torch.promote_types(image_features.dtype, torch.float32)
            with torch.no_grad():
                a_image_n = cosine_matrix(teacher_images.to(dtype))  # (N, N)
                a_text = cosine_matrix(teacher_texts.to(dtype))  # (P, P)
        if self.with_csa:
            a_image = a_image_n[owner][:, owner]  # (P, P): images of the pairs
            if self.mode == "each":
                target_i2t, target_t2i = a_image, a_text
            else:
                if self.mode == "add":
                    joint = (a_image + a_text) / 2
                else:
                    joint = torch.sqrt(a_image.clamp(min=0) * a_text.clamp(min=0))
                target_i2t = target_t2i = joint
            tau = self.csa_temperature.value()
            loss = (
                kl_rows(sim, target_i2t, tau, tau_t) + kl_rows(sim.T, target_t2i, tau, tau_t)
            ) / 2
            losses["csa_loss"] = self.alpha * loss
        if self.with_usa:
            v_u, t_u = self.encode_uni(image_features, text_features)
            loss = (
                kl_rows(v_u @ v_u.T, a_image_n, self.usa_image_temperature.value(), tau_t)
                + kl_rows(t_u @ t_u.T, a_text, self.usa_text_temperature.value(), tau_t)
            ) / 2
            losses["usa_loss"] = self.beta * loss
        return losses

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, r={self.contrastive_weight if self.with_contrastive else 0}, "
            f"alpha={self.alpha if self.with_csa else 0}, beta={self.beta if self.with_usa else 0}, "
            f"mode={self.mode!r}, contrastive_loss_mode={self.contrastive_loss_mode!r}, "
            f"heads={self.heads}, num_langs={self.num_langs}, gather={self.gather}"
        )
