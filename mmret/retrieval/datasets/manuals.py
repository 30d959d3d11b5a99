"""The embedded manuals benchmark: product-manual chunks with knowledge paths, in English and
Chinese, generated deterministically (seeded), written in BEIR format.

Like EasyRAG's corpus (METHODS-TEXT §4.1), every chunk belongs to a product manual page
whose *knowledge path* is a title chain ``"<product> / <section> / <page>"`` (the document's
``title``; ``metadata`` holds ``product``, ``path``, ``lang`` and the ``topic``). Each chunk
states one fact, and one question is asked about it whose answer is in that chunk only
(qrels grade 1). Two question variants:

* ``lexical`` (BM25 should win): the question repeats a rare exact term of its chunk, an
  alarm code (``ERR-4471``), a parameter name (``hb_timer_417``), a package or a CLI
  command; dozens of chunks share the question's wording apart from that term, and a dense
  encoder maps such codes close together.
* ``paraphrase`` (dense should win): the question says the chunk's fact in other words
  (synonyms, no shared content word but the product name), so BM25 only matches the
  product name, which every chunk of that product's manual contains.

Filler sentences common to manuals (safety notes, support hints) are mixed into chunks.
Products are split: questions about every third product form the ``train`` split (for
fine-tuning a reranker), the others ``test``; every chunk is in the one corpus. The
generator is seeded: the same settings give byte-identical files (``manifest.json`` records
the settings and counts). ``products`` sets the size (about ``CHUNKS_PER_PRODUCT`` chunks
each: ``products=5300`` gives >= 100k chunks for speed numbers).

>>> folder = generate_manuals("data/manuals_en", lang="en", products=30)   # doctest: +SKIP
>>> s = load_beir(folder)                                                  # doctest: +SKIP
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmret.retrieval.datasets.base import write_beir
from mmret.retrieval.types import Document, Query

__all__ = ["CHUNKS_PER_PRODUCT", "MANUAL_FORMAT_VERSION", "generate_manuals",
           "manuals_dataset", "manuals_set", "product_names"]

MANUAL_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Topic:
    """One fact template: where it lives, the chunk sentence, the question templates, the
    variant (``lexical`` / ``paraphrase``) and how many chunks per product use it."""

    section: str
    page: str
    fact: str
    questions: tuple[str, ...]
    variant: str
    reps: int = 1


# {p} product, {code} unique code, {v} a value, {c} a component
EN_TOPICS: tuple[Topic, ...] = (
    Topic("Troubleshooting", "Alarms",
          "Alarm {code} is raised when the {c} cannot reach the license server; restart the "
          "{c} service to clear alarm {code}.",
          ("What should I do when alarm {code} appears on the {p}?",
           "How is alarm {code} cleared on the {p}?"), "lexical", 4),
    Topic("Configuration", "Parameters",
          "The parameter {code} controls the {c} retry interval; its default value is {v} "
          "milliseconds.",
          ("What is the default value of {code} on the {p}?",
           "Which default does the {p} use for {code}?"), "lexical", 3),
    Topic("Installation", "Packages",
          "Install the package {code} before enabling the {c} module; older builds are not "
          "supported.",
          ("When must {code} be installed on the {p}?",), "lexical", 2),
    Topic("Operation", "Commands",
          "The command {code} prints the state of every {c} link together with its counters.",
          ("What does the command {code} show on the {p}?",), "lexical", 2),
    Topic("Security", "Accounts",
          "To reset the administrator password of the {p}, hold the recessed button on the "
          "rear panel for {v} seconds until the status lamp blinks.",
          ("How can I recover the admin login credentials of the {p}?",
           "I forgot how to sign in as root on the {p}, what now?"), "paraphrase"),
    Topic("Installation", "Environment",
          "Operate the {p} between 0 and {v} degrees Celsius and keep the unit away from "
          "direct sunlight.",
          ("How hot may the room get while the {p} is running?",), "paraphrase"),
    Topic("Maintenance", "Upgrades",
          "Firmware updates for the {p} are downloaded automatically every night and installed "
          "after the next reboot.",
          ("When does the {p} receive new software versions?",), "paraphrase"),
    Topic("Maintenance", "Backup",
          "Export the configuration database of the {p} to an external server once a week.",
          ("How often should the setup of the {p} be copied to another machine?",),
          "paraphrase"),
    Topic("Security", "Encryption",
          "Traffic between sites is encrypted with AES-256 once the secure tunnel of the {p} "
          "is enabled.",
          ("Is information protected while it moves from one location to another on the {p}?",),
          "paraphrase"),
    Topic("Hardware", "Cooling",
          "The fan speed of the {p} rises automatically when the chassis temperature "
          "increases.",
          ("Why does the {p} get noisier when it warms up?",), "paraphrase"),
    Topic("Licensing", "Capacity",
          "Up to {v} users can be logged in to the {p} at the same time.",
          ("How many people can work with the {p} simultaneously?",), "paraphrase"),
    Topic("Hardware", "Power",
          "If mains power fails, the internal battery keeps the {p} running for about {v} "
          "minutes.",
          ("How long does the {p} last during an electricity outage?",), "paraphrase"),
)

ZH_TOPICS: tuple[Topic, ...] = (
    Topic("故障处理", "告警",
          "当{c}无法连接许可证服务器时，系统产生告警{code}；重启{c}服务即可清除告警{code}。",
          ("{p}出现告警{code}时应该怎么办？", "{p}上的告警{code}如何清除？"), "lexical", 4),
    Topic("配置", "参数",
          "参数{code}控制{c}的重试间隔，默认值为{v}毫秒。",
          ("{p}中{code}的默认值是多少？",), "lexical", 3),
    Topic("安装", "软件包",
          "启用{c}模块之前必须安装软件包{code}，旧版本不受支持。",
          ("{p}什么时候需要安装{code}？",), "lexical", 2),
    Topic("操作", "命令",
          "命令{code}会显示每条{c}链路的状态及其计数器。",
          ("在{p}上执行命令{code}会显示什么？",), "lexical", 2),
    Topic("安全", "账户",
          "如需重置{p}的管理员密码，请按住后面板上的复位按钮{v}秒，直到状态灯闪烁。",
          ("忘记了{p}的超级用户登录口令，怎样找回？",), "paraphrase"),
    Topic("安装", "环境",
          "{p}应在0到{v}摄氏度之间运行，并避免阳光直射。",
          ("{p}工作时机房最热可以到多少度？",), "paraphrase"),
    Topic("维护", "升级",
          "{p}的固件更新会在每天夜间自动下载，并在下次重启后安装。",
          ("{p}何时获得新的软件版本？",), "paraphrase"),
    Topic("维护", "备份",
          "请每周将{p}的配置数据库导出到外部服务器。",
          ("{p}的设置多久应该保存到另一台机器上一次？",), "paraphrase"),
    Topic("安全", "加密",
          "启用{p}的安全隧道后，站点之间的流量使用AES-256加密。",
          ("{p}在不同地点之间传输信息时是否受到保护？",), "paraphrase"),
    Topic("硬件", "散热",
          "机箱温度升高时，{p}的风扇转速会自动提高。",
          ("{p}变热后为什么声音变大？",), "paraphrase"),
    Topic("许可", "容量",
          "{p}最多允许{v}个用户同时登录。",
          ("多少人可以同时使用{p}？",), "paraphrase"),
    Topic("硬件", "电源",
          "市电中断时，内置电池可使{p}继续工作约{v}分钟。",
          ("停电的时候{p}能撑多久？",), "paraphrase"),
)

FILLER = {
    "en": ("Read the safety instructions before servicing the unit.",
           "Contact your support representative if the problem persists.",
           "Settings changed here take effect immediately.",
           "This page applies to all hardware revisions.",
           "Record every change in the maintenance log.",
           "Only trained personnel may open the enclosure."),
    "zh": ("维修设备前请阅读安全说明。", "如果问题仍然存在，请联系技术支持。",
           "此处修改的设置立即生效。", "本页适用于所有硬件版本。",
           "请在维护日志中记录每一次变更。", "只有经过培训的人员才能打开机箱。"),
}
COMPONENTS = {
    "en": ("gateway", "controller", "signalling", "billing", "routing", "storage", "monitor",
           "media", "session", "policy"),
    "zh": ("网关", "控制器", "信令", "计费", "路由", "存储", "监控", "媒体", "会话", "策略"),
}
_NAME_A = {"en": ("Orion", "Helix", "Vega", "Atlas", "Nova", "Polar", "Zenith", "Aurora",
                  "Cobalt", "Quartz", "Delta", "Summit"),
           "zh": ("星辰", "天河", "银河", "北斗", "昆仑", "长城", "泰山", "黄河", "青松",
                  "凌云", "飞鹰", "海燕")}
_NAME_B = {"en": ("Gateway", "Router", "Switch", "Controller", "Server", "Console", "Manager",
                  "Director"),
           "zh": ("网关", "路由器", "交换机", "控制器", "服务器", "控制台", "管理器", "调度器")}
_PREFIX = ("ERR", "ALM", "FLT", "EVT")
_PARAM_A = ("hb", "sctp", "diam", "sip", "gtp", "lic", "db", "ntp")
_PARAM_B = ("timer", "retry", "window", "limit", "queue", "backoff")
_PKG = ("libzx", "pkt-core", "sigtran", "meddrv", "ha-agent", "certkit")
_CMD = ("show link", "display port", "list peer", "dump route")

CHUNKS_PER_PRODUCT = sum(t.reps for t in EN_TOPICS)


def product_names(n: int, lang: str = "en", seed: int = 0) -> list[str]:
    """``n`` distinct product names (``"Orion Gateway X-512"``), seeded."""
    rng = random.Random(f"products-{lang}-{seed}")
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        a, b = rng.choice(_NAME_A[lang]), rng.choice(_NAME_B[lang])
        model = f"{rng.choice('ABCEKMRSTX')}-{rng.randint(100, 9999)}"
        name = f"{a} {b} {model}" if lang == "en" else f"{a}{b} {model}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


class _Codes:
    """Unique rare terms per topic kind (a code never repeats in one corpus)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used = rng, set()

    def __call__(self, kind: str) -> str:
        while True:
            r = self.rng
            if kind == "Alarms" or kind == "告警":
                code = f"{r.choice(_PREFIX)}-{r.randint(1000, 99999)}"
            elif kind in ("Parameters", "参数"):
                code = f"{r.choice(_PARAM_A)}_{r.choice(_PARAM_B)}_{r.randint(100, 99999)}"
            elif kind in ("Packages", "软件包"):
                code = f"{r.choice(_PKG)}-{r.randint(1, 99)}.{r.randint(0, 999)}"
            else:
                code = f"{r.choice(_CMD)} {r.randint(100, 99999)}"
            if code not in self.used:
                self.used.add(code)
                return code


def manuals_dataset(lang: str = "en", products: int = 30, seed: int = 0, train_every: int = 3
                    ) -> tuple[list[Document], list[Query], dict[str, dict[str, dict[str, int]]]]:
    """``(documents, queries, {"train": qrels, "test": qrels})`` of the benchmark (see the
    module docstring). Product ``i`` is a training product when ``i % train_every == 0``."""
    if lang not in ("en", "zh"):
        raise ValueError(f"lang={lang!r}: expected 'en' or 'zh'")
    if products < 1:
        raise ValueError(f"products={products}: expected >= 1")
    topics = EN_TOPICS if lang == "en" else ZH_TOPICS
    sep = " / "
    rng = random.Random(f"manuals-{lang}-{seed}")
    codes = _Codes(rng)
    documents: list[Document] = []
    queries: list[Query] = []
    qrels: dict[str, dict[str, dict[str, int]]] = {"train": {}, "test": {}}
    joiner = " " if lang == "en" else ""
    for pi, product in enumerate(product_names(products, lang, seed)):
        split = "train" if pi % train_every == 0 else "test"
        for ti, topic in enumerate(topics):
            for rep in range(topic.reps):
                slots = {"p": product, "c": rng.choice(COMPONENTS[lang]),
                         "v": str(rng.choice((5, 10, 15, 20, 30, 40, 45, 50, 60, 64, 120))),
                         "code": codes(topic.page) if topic.variant == "lexical" else ""}
                sentences = [topic.fact.format(**slots)]
                for _ in range(rng.randint(1, 2)):
                    pos = rng.randint(0, len(sentences))
                    sentences.insert(pos, rng.choice(FILLER[lang]))
                path = sep.join((product, topic.section, topic.page))
                did = f"p{pi:05d}-t{ti:02d}-r{rep}"
                meta = {"product": product, "path": path, "lang": lang, "topic": topic.page}
                documents.append(Document(did, joiner.join(sentences), path, meta))
                question = rng.choice(topic.questions).format(**slots)
                qid = f"{split}-{did}"
                queries.append(Query(qid, question, {"product": product, "lang": lang,
                                                     "variant": topic.variant,
                                                     "topic": topic.page}))
                qrels[split][qid] = {did: 1}
    return documents, queries, qrels


def generate_manuals(folder: str | os.PathLike, lang: str = "en", products: int = 30,
                     seed: int = 0, train_every: int = 3, overwrite: bool = False) -> Path:
    """Write the benchmark in BEIR format under ``folder`` (``corpus.jsonl``,
    ``queries.jsonl``, ``qrels/{train,test}.tsv``, ``manifest.json``); an existing folder
    with the same settings is reused, one with other settings is an error unless
    ``overwrite``."""
    import json

    out = Path(folder)
    settings: dict[str, Any] = {"benchmark": "mmret-manuals", "version": MANUAL_FORMAT_VERSION,
                                "lang": lang, "products": products, "seed": seed,
                                "train_every": train_every}
    manifest = out / "manifest.json"
    if manifest.is_file():
        found = json.loads(manifest.read_text(encoding="utf-8")).get("settings")
        if found == settings:
            return out
        if not overwrite:
            raise FileExistsError(f"{out}: holds a manuals benchmark made with {found}, not "
                                  f"{settings} (choose another folder or overwrite=True)")
    documents, queries, qrels = manuals_dataset(lang, products, seed, train_every)
    info = {"settings": settings, "documents": len(documents), "queries": len(queries),
            "train_queries": len(qrels["train"]), "test_queries": len(qrels["test"])}
    return write_beir(out, documents, queries, qrels, info)


def manuals_set(root: str | os.PathLike = "data/manuals_en", lang: str = "en",
                products: int = 30, seed: int = 0, split: str = "test",
                train_every: int = 3) -> Any:
    """The benchmark as a :class:`~mmret.retrieval.datasets.base.RetrievalSet` (generated
    into ``root`` first when absent; its ``train`` split in ``train_queries``)."""
    from mmret.retrieval.datasets.beir import load_beir

    folder = generate_manuals(root, lang, products, seed, train_every)
    return load_beir(folder, split=split, name=f"manuals-{lang}", with_train=True)
