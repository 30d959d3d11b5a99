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
weight 0 or its group's ``enabled`` False) is omitted, and so are the heads it alone needs.

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

Temperatures follow the reference: each is stored as τ itself
(``temperatures.parametrization="tau"``, an ``nn.Parameter`` equal to τ, logits divided by
it) or, optionally, as ``log(1/τ)`` (``"log_scale"``); each is a
:class:`~mmret.objectives.temperature.LearnableTemperature` with an initial value, a
learnable flag and a clamp range, and all are clamped *before every forward* (as the
reference does) and again in :meth:`~mmret.objectives.base.Objective.post_step`.
Reference CLIP values: τ_c 0.05 in [0.01, 0.10]; τ_csa 0.45 in [0.10, 0.99] shared by both
directions; τ_ui, τ_ut 0.45 in [0.10, 1.00]; τ_t 1.0 frozen (one teacher τ for CSA and USA).

Options come in groups (:class:`CusaHeads`, :class:`CusaContrastive`, :class:`CusaCSA`,
:class:`CusaUSA`, :class:`CusaTemperatures`); in YAML::

    cusa:
      embed_dim: 128
      csa: {weight: 0.1, mode: each}
      usa: {weight: 0.5}
      temperatures: {csa: {init: 0.45, range: [0.10, 0.99]}}

The flat options of earlier versions (``alpha``, ``use_usa``, ``csa_temperature``, ...)
still work; :data:`FLAT_KEYS` maps each to its grouped key.

Heads are owned by the objective (they train with it and are saved with its weights):
``LayerNorm(d) → Linear(d, d)``, weights initialised N(0, 0.02²) as in the reference.
Because the LayerNorm comes first, a head gives (up to its ε) the same output for raw and
for L2-normalised tower features, so it can sit on mmret's normalised ``image_features``.
At evaluation, score with :meth:`encode_cross` (the reference retrieves with the cross
heads). With ``heads={enabled: false}`` (or ``heads=False``) the given features (L2-normalised again, which changes nothing
for normalised inputs) serve as both cross and uni features.

Teacher features are constants (detached, no gradient); they may have any width, also
different for images and texts, and need not be normalised.

Distributed: by default (``gather=False``, the reference CLIP configuration) every rank
computes the loss of its own batch. With ``gather=True`` student features are all-gathered
with gradient and teacher features, ids and masks without; every rank then computes the
global loss and DDP-averaged gradients equal the single-process ones (:mod:`mmret.distributed`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmret.distributed import gather_features, get_world_size
from mmret.embedding import NormalizedHead, describe_part, register_embedding_part
from mmret.objectives.base import Objective, register_objective
from mmret.objectives.targets import same_id_targets
from mmret.objectives.temperature import (
    PARAMETRIZATIONS,
    LearnableTemperature,
    check_temperature_range,
    temperatures_of,
)

CSA_MODES = ("each", "add", "dot")
CONTRASTIVE_MODES = ("mean", "sum")

Range = Sequence[float | None] | None


@dataclass(frozen=True)
class TemperatureSpec:
    """One CUSA temperature: initial ``τ``, clamp ``range`` ``[low, high]`` (None =
    unclamped, either end may be None) and whether it is ``learnable``."""

    init: float
    range: Range = None
    learnable: bool = True

    def __post_init__(self) -> None:  # YAML gives lists: compare and hash as tuples
        if self.range is not None:
            object.__setattr__(self, "range", tuple(self.range))


@dataclass(frozen=True)
class CusaHeads:
    """The four ``LayerNorm → Linear`` student heads: owned (``enabled``, the reference) or
    not (the given features serve as cross and uni features); ``init_std`` of the Linear
    weights."""

    enabled: bool = True
    init_std: float = 0.02


@dataclass(frozen=True)
class CusaContrastive:
    """The contrastive term: weight ``r`` (0 switches it off), ``enabled``, the column
    reduction ``loss_mode`` (``"mean"``, the reference, or ``"sum"``) and multi-positive
    targets from ``image_ids`` (``use_image_ids``)."""

    weight: float = 1.0
    enabled: bool = True
    loss_mode: str = "mean"
    use_image_ids: bool = True


@dataclass(frozen=True)
class CusaCSA:
    """Cross-modal soft-label alignment: weight ``α`` (0 switches it off), ``enabled`` and
    the target ``mode`` (``"each"``, ``"add"`` or ``"dot"``)."""

    weight: float = 0.1
    enabled: bool = True
    mode: str = "each"


@dataclass(frozen=True)
class CusaUSA:
    """Uni-modal soft-label alignment: weight ``β`` (0 switches it off) and ``enabled``."""

    weight: float = 0.5
    enabled: bool = True


@dataclass(frozen=True)
class CusaTemperatures:
    """The five temperatures (reference values) and how they are stored:
    ``parametrization="tau"`` (τ itself, the reference) or ``"log_scale"`` (``log(1/τ)``)."""

    contrastive: TemperatureSpec = TemperatureSpec(0.05, (0.01, 0.10))
    csa: TemperatureSpec = TemperatureSpec(0.45, (0.10, 0.99))
    usa_image: TemperatureSpec = TemperatureSpec(0.45, (0.10, 1.00))
    usa_text: TemperatureSpec = TemperatureSpec(0.45, (0.10, 1.00))
    teacher: TemperatureSpec = TemperatureSpec(1.0, (0.10, 1.00), learnable=False)
    parametrization: str = "tau"


#: the flat constructor keys of earlier versions (still accepted, with a
#: ``DeprecationWarning``) and the grouped key(s) each one sets
FLAT_KEYS: dict[str, tuple[str, ...]] = {
    "alpha": ("csa.weight",),
    "beta": ("usa.weight",),
    "contrastive_weight": ("contrastive.weight",),
    "mode": ("csa.mode",),
    "contrastive_loss_mode": ("contrastive.loss_mode",),
    "use_contrastive": ("contrastive.enabled",),
    "use_csa": ("csa.enabled",),
    "use_usa": ("usa.enabled",),
    "use_image_ids": ("contrastive.use_image_ids",),
    "head_init_std": ("heads.init_std",),
    "contrastive_temperature": ("temperatures.contrastive.init",),
    "contrastive_temperature_range": ("temperatures.contrastive.range",),
    "learn_contrastive_temperature": ("temperatures.contrastive.learnable",),
    "csa_temperature": ("temperatures.csa.init",),
    "csa_temperature_range": ("temperatures.csa.range",),
    "learn_csa_temperature": ("temperatures.csa.learnable",),
    "usa_image_temperature": ("temperatures.usa_image.init",),
    "usa_text_temperature": ("temperatures.usa_text.init",),
    "usa_temperature_range": ("temperatures.usa_image.range", "temperatures.usa_text.range"),
    "learn_usa_temperature": (
        "temperatures.usa_image.learnable", "temperatures.usa_text.learnable",
    ),
    "teacher_temperature": ("temperatures.teacher.init",),
    "teacher_temperature_range": ("temperatures.teacher.range",),
    "learn_teacher_temperature": ("temperatures.teacher.learnable",),
    "temperature_parametrization": ("temperatures.parametrization",),
}

_GROUPS: dict[str, type] = {
    "heads": CusaHeads, "contrastive": CusaContrastive, "csa": CusaCSA, "usa": CusaUSA,
    "temperatures": CusaTemperatures,
}


def _check_keys(cls: type, value: Mapping[str, Any], where: str) -> None:
    known = sorted(f.name for f in fields(cls))
    unknown = sorted(set(value) - set(known))
    if unknown:
        hint = "".join(
            f"; {key!r} is a flat option: use {' and '.join(FLAT_KEYS[key])}"
            for key in unknown if key in FLAT_KEYS
        )
        raise ValueError(
            f"cusa: unknown key(s) {unknown} in {where}; expected some of {known}{hint}"
        )


def _as_spec(default: TemperatureSpec, value: Any, where: str) -> TemperatureSpec:
    """``value`` (a spec, a number = the initial τ, or a mapping of some fields) merged
    onto ``default``."""
    if isinstance(value, TemperatureSpec):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return replace(default, init=float(value))
    if not isinstance(value, Mapping):
        raise ValueError(f"cusa: {where} must be a mapping of init, range, learnable, got "
                         f"{value!r}")
    _check_keys(TemperatureSpec, value, where)
    return replace(default, **dict(value))


def _as_group(cls: type, value: Any, where: str) -> Any:
    """``value`` (None, a ``cls`` instance or a mapping of some of its fields, merged onto
    the defaults; ``heads`` may also be a bool) as a ``cls`` instance."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if cls is CusaHeads and isinstance(value, bool):
        return CusaHeads(enabled=value)
    if not isinstance(value, Mapping):
        raise ValueError(
            f"cusa: {where} must be a mapping of {sorted(f.name for f in fields(cls))}, "
            f"got {value!r}"
        )
    _check_keys(cls, value, where)
    default = cls()
    if cls is not CusaTemperatures:
        return replace(default, **dict(value))
    return replace(default, **{
        key: item if key == "parametrization"
        else _as_spec(getattr(default, key), item, f"{where}.{key}")
        for key, item in value.items()
    })


def _apply_flat(groups: dict[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    """Set the grouped keys of the flat keys in ``flat`` (a warning names each new key)."""
    unknown = sorted(set(flat) - set(FLAT_KEYS))
    if unknown:
        raise TypeError(
            f"cusa: unexpected option(s) {unknown}; options are embed_dim, weight, num_langs, "
            f"gather, gather_with_grad and the groups {sorted(_GROUPS)}"
        )
    for key, value in flat.items():
        targets = FLAT_KEYS[key]
        warnings.warn(
            f"cusa: the flat option {key!r} is deprecated; use {' and '.join(targets)} "
            f"(YAML: objective.cusa.{targets[0]})",
            DeprecationWarning,
            stacklevel=4,
        )
        for target in targets:
            group, *path = target.split(".")
            current = groups[group]
            if len(path) == 1:
                groups[group] = replace(current, **{path[0]: value})
            else:
                spec = getattr(current, path[0])
                groups[group] = replace(current, **{path[0]: replace(spec, **{path[1]: value})})
    return groups


@dataclass(frozen=True)
class CusaConfig:
    """The resolved groups of a :class:`CusaObjective` (``objective.config``)."""

    heads: CusaHeads
    contrastive: CusaContrastive
    csa: CusaCSA
    usa: CusaUSA
    temperatures: CusaTemperatures


@register_embedding_part("cusa_projection_head")
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

    Formula:
        With cross features ``v^c, t^c`` and uni features ``v^u, t^u`` (the heads'
        normalised outputs) and teacher similarities ``A^I = cos(f_I, f_I)``,
        ``A^T = cos(g_T, g_T)``::

            L_con = ½ (L_i2t + L_t2i),  L_i2t = mean_rows(-red_b P_ab log softmax(V^c T^cᵀ/τ_c)_ab)
            L_CSA = ½ [KLrow(V^c T^cᵀ, A^I, τ_csa, τ_t) + KLrow(T^c V^cᵀ, A^T, τ_csa, τ_t)]
            L_USA = ½ [KLrow(V^u V^uᵀ, A^I, τ_ui, τ_t) + KLrow(T^u T^uᵀ, A^T, τ_ut, τ_t)]
            L = r·L_con + α·L_CSA + β·L_USA

        (``red`` = Σ_b or (1/cols) Σ_b, CSA's ``add`` / ``dot`` targets and the layouts:
        see the module docstring).

    Inputs:
        ``image_features`` (P or N, d) and ``text_features`` (P or N·K, d), the towers'
        outputs; ``teacher_image_features`` (P or N, d_I) aligned with the image rows and
        ``teacher_text_features`` (P or N·K, d_T) aligned with the text rows (required
        when CSA or USA is on); optional ``image_ids`` aligned with the image rows,
        ``text_mask`` (N·K,) bool (K > 1).

    Returns:
        ``{"contrastive_loss": r·L_con, "csa_loss": α·L_CSA, "usa_loss": β·L_USA}``
        (each times ``weight``); a term that is switched off is omitted.

    Defaults:
        The reference's: r = 1, α = 0.1, β = 0.5, CSA mode ``each``, contrastive
        reduction ``mean``, heads on (init std 0.02); τ_c 0.05 in [0.01, 0.10], τ_csa 0.45
        in [0.10, 0.99], τ_ui = τ_ut = 0.45 in [0.10, 1.00] (learnable, stored as τ),
        τ_t = 1.0 frozen; K = 1; no all-gather.

    Args:
        embed_dim: d, the towers' output width (required with heads; inputs of another
            width raise).
        weight: multiplies every returned term.
        num_langs: K, captions per image (see Layouts in the module docstring).
        heads: :class:`CusaHeads` (``enabled``, ``init_std``), a mapping of its fields,
            or a bool (``enabled``).
        contrastive: :class:`CusaContrastive` (``weight`` r, ``enabled``, ``loss_mode``,
            ``use_image_ids``) or a mapping of some of its fields.
        csa: :class:`CusaCSA` (``weight`` α, ``enabled``, ``mode``) or a mapping.
        usa: :class:`CusaUSA` (``weight`` β, ``enabled``) or a mapping.
        temperatures: :class:`CusaTemperatures` (``contrastive``, ``csa``, ``usa_image``,
            ``usa_text``, ``teacher``: each a :class:`TemperatureSpec` ``{init, range,
            learnable}``, a mapping of some of its fields or a number = ``init``; and
            ``parametrization``) or a mapping of some of them.
        gather, gather_with_grad: distributed all-gather (see the module docstring).
        **flat: the flat options of earlier versions (``alpha``, ``use_csa``,
            ``csa_temperature_range``, ... :data:`FLAT_KEYS` maps each to its grouped key);
            still accepted, with a ``DeprecationWarning`` naming the new key. A flat option
            overrides the grouped key it maps to.

    Paper:
        Huang et al., "Cross-Modal and Uni-Modal Soft-Label Alignment for Image-Text
        Retrieval" (AAAI 2024).

    Example:
        >>> import torch
        >>> from mmret.objectives import create_objective
        >>> cusa = create_objective("cusa", embed_dim=8, csa={"weight": 0.2, "mode": "add"},
        ...                         temperatures={"csa": {"init": 0.3}})
        >>> batch = {"image_features": torch.randn(4, 8), "text_features": torch.randn(4, 8),
        ...          "teacher_image_features": torch.randn(4, 5),
        ...          "teacher_text_features": torch.randn(4, 3)}
        >>> sorted(cusa(**batch)), round(cusa.temperatures()["csa_temperature"], 4)
        (['contrastive_loss', 'csa_loss', 'usa_loss'], 0.3)
    """

    def __init__(
        self,
        embed_dim: int | None = None,
        weight: float = 1.0,
        num_langs: int = 1,
        heads: CusaHeads | Mapping[str, Any] | bool | None = None,
        contrastive: CusaContrastive | Mapping[str, Any] | None = None,
        csa: CusaCSA | Mapping[str, Any] | None = None,
        usa: CusaUSA | Mapping[str, Any] | None = None,
        temperatures: CusaTemperatures | Mapping[str, Any] | None = None,
        gather: bool = False,
        gather_with_grad: bool = True,
        **flat: Any,
    ) -> None:
        super().__init__(weight)
        given = {"heads": heads, "contrastive": contrastive, "csa": csa, "usa": usa,
                 "temperatures": temperatures}
        groups = _apply_flat(
            {name: _as_group(_GROUPS[name], value, name) for name, value in given.items()},
            flat,
        )
        self.config = CusaConfig(**groups)
        heads_cfg, con, csa_cfg, usa_cfg, temps = (
            groups["heads"], groups["contrastive"], groups["csa"], groups["usa"],
            groups["temperatures"],
        )
        if csa_cfg.mode not in CSA_MODES:
            raise ValueError(f"cusa: mode must be one of {CSA_MODES}, got {csa_cfg.mode!r}")
        if con.loss_mode not in CONTRASTIVE_MODES:
            raise ValueError(
                f"cusa: contrastive_loss_mode (contrastive.loss_mode) must be one of "
                f"{CONTRASTIVE_MODES}, got {con.loss_mode!r}"
            )
        if temps.parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"cusa: temperature_parametrization (temperatures.parametrization) must be "
                f"one of {PARAMETRIZATIONS}, got {temps.parametrization!r}"
            )
        if isinstance(num_langs, bool) or not isinstance(num_langs, int) or num_langs < 1:
            raise ValueError(f"cusa: num_langs must be an integer >= 1, got {num_langs!r}")
        self.mode = csa_cfg.mode
        self.contrastive_loss_mode = con.loss_mode
        self.num_langs = num_langs
        self.use_image_ids = bool(con.use_image_ids)
        self.gather = gather
        self.gather_with_grad = gather_with_grad
        self.contrastive_weight = float(con.weight)
        self.alpha = float(csa_cfg.weight)
        self.beta = float(usa_cfg.weight)
        self.with_contrastive = bool(con.enabled) and self.contrastive_weight != 0.0
        self.with_csa = bool(csa_cfg.enabled) and self.alpha != 0.0
        self.with_usa = bool(usa_cfg.enabled) and self.beta != 0.0
        if not (self.with_contrastive or self.with_csa or self.with_usa):
            raise ValueError(
                "cusa: every term is switched off (contrastive.weight / csa.weight / "
                "usa.weight = 0 or contrastive/csa/usa.enabled = False); enable at least one"
            )
        self.heads = bool(heads_cfg.enabled)
        if self.heads:
            if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
                raise ValueError(
                    "cusa: embed_dim (the towers' output width, e.g. 128 for mmret-tiny) must "
                    f"be a positive int when heads are on, got {embed_dim!r}"
                )
        self.embed_dim = embed_dim
        cross = self.with_contrastive or self.with_csa
        if self.heads and cross:
            self.cross_image_head = ProjectionHead(embed_dim, heads_cfg.init_std)
            self.cross_text_head = ProjectionHead(embed_dim, heads_cfg.init_std)
        if self.heads and self.with_usa:
            self.uni_image_head = ProjectionHead(embed_dim, heads_cfg.init_std)
            self.uni_text_head = ProjectionHead(embed_dim, heads_cfg.init_std)

        def temp(spec: TemperatureSpec, name: str) -> LearnableTemperature:
            label = f"cusa: {name}"
            low, high = check_temperature_range(spec.range, label)
            # "raw": the tensor's name in CUSA checkpoints written before the grouping
            return LearnableTemperature(
                spec.init, low, high, bool(spec.learnable), temps.parametrization,
                storage_name="raw", label=name,
            )

        if self.with_contrastive:
            self.contrastive_temperature = temp(temps.contrastive, "contrastive_temperature")
        if self.with_csa:
            self.csa_temperature = temp(temps.csa, "csa_temperature")
        if self.with_usa:
            self.usa_image_temperature = temp(temps.usa_image, "usa_image_temperature")
            self.usa_text_temperature = temp(temps.usa_text, "usa_text_temperature")
        if self.with_csa or self.with_usa:
            self.teacher_temperature = temp(temps.teacher, "teacher_temperature")
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
        and its own contrastive term trains them (with ``contrastive.enabled=False`` another
        objective trains the towers' features and the heads only see CSA)."""
        return self.heads and self.with_contrastive

    @torch.no_grad()
    def clamp_temperatures(self) -> None:
        """Clamp every temperature into its range (before each forward, as the reference
        does, and after each optimiser step through :meth:`Objective.post_step`)."""
        for t in temperatures_of(self).values():
            t.clamp()

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

    def retrieval_heads(self) -> dict[str, nn.Module]:
        """The heads retrieval applies, by role (:class:`mmret.embedding.RetrievalEmbedding`):
        ``image`` / ``text`` = ``normalize(head^c(x))`` (as :meth:`encode_cross`),
        ``image_unimodal`` / ``text_unimodal`` = ``normalize(head^u(x))`` (as
        :meth:`encode_uni`: the cross heads when USA is off). Empty without heads."""
        if not self.heads:
            return {}
        uni = "uni" if self.with_usa else "cross"
        names = {"image": "cross_image_head", "text": "cross_text_head",
                 "image_unimodal": f"{uni}_image_head", "text_unimodal": f"{uni}_text_head"}
        out: dict[str, nn.Module] = {}
        for role, name in names.items():
            head = getattr(self, name)
            describe_part(head, "cusa_projection_head", dim=self.embed_dim)
            out[role] = NormalizedHead(head)
        return out

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
