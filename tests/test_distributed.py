"""Two gloo processes: gathered contrastive losses equal the single-process loss."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from mmret.objectives import create_objective
from tests.distributed_utils import run_distributed

N_LOCAL, D_IN, D = 4, 6, 5


def _setup(world: int):
    g = torch.Generator().manual_seed(0)
    x_img = torch.randn(world * N_LOCAL, D_IN, generator=g, dtype=torch.float64)
    x_txt = torch.randn(world * N_LOCAL, D_IN, generator=g, dtype=torch.float64)
    ids = torch.tensor([0, 0, 1, 2, 3, 3, 4, 5][: world * N_LOCAL])
    w_img = torch.randn(D_IN, D, generator=g, dtype=torch.float64)
    w_txt = torch.randn(D_IN, D, generator=g, dtype=torch.float64)
    return x_img, x_txt, ids, w_img, w_txt


def _loss(name: str, options: dict, x_img, x_txt, ids, w_img, w_txt):
    img = F.normalize(x_img @ w_img, dim=-1)
    txt = F.normalize(x_txt @ w_txt, dim=-1)
    inputs = dict(image_features=img, text_features=txt, logit_scale=torch.tensor(10.0, dtype=torch.float64),
                  logit_bias=torch.tensor(-2.0, dtype=torch.float64))
    if options.pop("ids", False):
        inputs["image_ids"] = ids
    out = create_objective(name, **options)(**inputs)
    return next(iter(out.values()))


CASES = [
    ("clip", {}),
    ("clip", {"local_loss": True}),
    ("clip", {"local_loss": True, "ids": True}),
    ("clip", {"ids": True}),
    ("siglip", {}),
]


def _per_rank(rank: int, world: int):
    x_img, x_txt, ids, w_img, w_txt = _setup(world)
    sl = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
    results = {}
    for i, (name, options) in enumerate(CASES):
        wi, wt = w_img.clone().requires_grad_(), w_txt.clone().requires_grad_()
        loss = _loss(name, dict(options), x_img[sl], x_txt[sl], ids[sl], wi, wt)
        loss.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        for grad in (wi.grad, wt.grad):  # what DistributedDataParallel does
            dist.all_reduce(grad)
            grad /= world
        results[f"{i}_loss"] = loss.detach()
        results[f"{i}_mean_loss"] = mean_loss / world
        results[f"{i}_grad_img"] = wi.grad
        results[f"{i}_grad_txt"] = wt.grad
    return results


def test_two_process_losses_and_gradients_match_single_process() -> None:
    world = 2
    per_rank = run_distributed(_per_rank, world)
    x_img, x_txt, ids, w_img, w_txt = _setup(world)
    for i, (name, options) in enumerate(CASES):
        wi, wt = w_img.clone().requires_grad_(), w_txt.clone().requires_grad_()
        ref = _loss(name, dict(options), x_img, x_txt, ids, wi, wt)
        ref.backward()
        for rank, res in enumerate(per_rank):
            label = f"{name} {options} rank {rank}"
            local = options.get("local_loss", False) or name == "siglip"
            if not local:  # every rank computes the global loss itself
                assert torch.allclose(res[f"{i}_loss"], ref.detach(), atol=1e-10), label
            assert torch.allclose(res[f"{i}_mean_loss"], ref.detach(), atol=1e-10), label
            assert torch.allclose(res[f"{i}_grad_img"], wi.grad, atol=1e-10), label
            assert torch.allclose(res[f"{i}_grad_txt"], wt.grad, atol=1e-10), label
