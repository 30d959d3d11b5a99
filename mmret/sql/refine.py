"""The refinement loop: run the value retriever and the detector on a query, hand their
feedback to a refiner, repeat on the refined query, at most ``max_rounds`` times.

Each round::

    checks   = value retriever on every condition (the failed ones carry candidates)
    findings = detector rules (each with span, message, maybe a fix)
    stop if nothing failed and nothing was found (converged)
    sql'     = refiner(Feedback(sql, question, failed checks, findings, round))
    stop if sql' is None, unchanged, seen before, or not one read-only query

Refiners (any callable ``Feedback -> str | None``):

- :class:`RuleRefiner` (default): applies the first detector fix in query order (errors
  before warnings; one per round, because a fix may re-print the query), else replaces
  every failed literal whose top candidate scores at least ``min_score`` (the route's own
  scale; ``None`` accepts any top candidate) with that candidate — LIKE patterns keep
  their wildcards.
- :class:`LLMRefiner`: wraps ``llm(prompt) -> text``; the prompt is :data:`PROMPT` filled
  as documented there; the SQL is taken from the first fenced block of the reply (or the
  whole reply).

>>> result = refine(sql, db, ValueRetriever(db, "fuzzy"))           # doctest: +SKIP
>>> result.sql, result.rounds, [s.note for s in result.steps]       # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mmret.sql.conditions import rewrite
from mmret.sql.database import Database, check_read_only
from mmret.sql.errors import SQLError
from mmret.sql.rules import Finding, detect
from mmret.sql.values import ValueCheck, ValueRetriever

__all__ = ["PROMPT", "Feedback", "LLMRefiner", "RefineResult", "RefineStep", "RuleRefiner",
           "feedback_prompt", "refine"]

#: The LLM refiner's prompt. ``{question}``: the user's question (may be empty);
#: ``{sql}``: the current query; ``{value_feedback}``: one line per failed condition (the
#: value retriever's text: the condition, its character span and the most similar existing
#: values with scores); ``{findings}``: one line per detector finding
#: (``[rule/severity] chars a-b: message (suggested fix: ...)``); ``{schema}``: one line per
#: table, ``table(column kind, ...)``. The reply must contain the corrected query, ideally
#: in a fenced ```sql block; replying with the query unchanged stops the loop.
PROMPT = """You are fixing a SQLite query that runs without error but may return the wrong \
result.

Question: {question}

Schema:
{schema}

Current query:
```sql
{sql}
```

Database retriever (conditions whose literal matches no row, with the closest existing \
values):
{value_feedback}

Error detector (constraint problems):
{findings}

Rewrite the query so that it answers the question using values that exist in the \
database. Reply with only the corrected query in a ```sql block."""


@dataclass(frozen=True)
class Feedback:
    """What a refiner receives in one round."""

    sql: str
    question: str
    checks: list[ValueCheck]
    findings: list[Finding]
    round: int
    database: Database | None = None


@dataclass(frozen=True)
class RefineStep:
    """One applied change: ``kind`` ``"rule"`` / ``"value"`` / ``"llm"``, the SQL before and
    after, and a note (which rule or which literal)."""

    round: int
    kind: str
    before: str
    after: str
    note: str


@dataclass
class RefineResult:
    """The final query, how many rounds ran, the steps and the last round's feedback."""

    sql: str
    rounds: int
    converged: bool
    steps: list[RefineStep] = field(default_factory=list)
    checks: list[ValueCheck] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    stopped: str = ""


class RuleRefiner:
    """The rule-based refiner (module docstring)."""

    def __init__(self, min_score: float | None = None, use_fixes: bool = True,
                 use_values: bool = True) -> None:
        self.min_score = min_score
        self.use_fixes = use_fixes
        self.use_values = use_values
        self.last_note = ""
        self.last_kind = ""

    def __call__(self, fb: Feedback) -> str | None:
        if self.use_fixes:
            fixable = sorted((f for f in fb.findings if f.fix),
                             key=lambda f: (f.severity != "error", f.start))
            if fixable:
                f = fixable[0]
                self.last_kind, self.last_note = "rule", f"{f.rule}: {f.fix_note or f.message}"
                return f.fix
        if self.use_values:
            edits, notes = [], []
            for chk in fb.checks:
                if not chk.failed or not chk.candidates:
                    continue
                top = chk.candidates[0]
                if self.min_score is not None and top.score < self.min_score:
                    continue
                edits.append((chk.condition, chk.suggestion()))
                notes.append(f"{chk.condition.literal} -> {chk.suggestion()!r}")
            if edits:
                self.last_kind, self.last_note = "value", "; ".join(notes)
                return rewrite(fb.sql, edits)
        return None


def _schema_lines(db: Database | None) -> str:
    if db is None:
        return "(not given)"
    return "\n".join(f"{t.name}({', '.join(f'{c.name} {c.kind}' for c in t.columns)})"
                     for t in db.schema.tables.values())


def feedback_prompt(fb: Feedback) -> str:
    """:data:`PROMPT` filled from ``fb``."""
    values = "\n".join(c.feedback for c in fb.checks if c.failed) or "(none)"
    finds = "\n".join(
        f"[{f.rule}/{f.severity}] chars {f.start}-{f.end}: {f.message}"
        + (f" (suggested fix: {f.fix})" if f.fix else "") for f in fb.findings) or "(none)"
    return PROMPT.format(question=fb.question or "(not given)", schema=_schema_lines(fb.database),
                         sql=fb.sql, value_feedback=values, findings=finds)


class LLMRefiner:
    """Wraps ``llm(prompt) -> reply``; the reply's first fenced SQL block (or the whole
    reply) is the refined query."""

    def __init__(self, llm: Callable[[str], str]) -> None:
        if not callable(llm):
            raise TypeError(f"LLMRefiner: llm must be callable, got {type(llm).__name__}")
        self.llm = llm
        self.last_note = ""
        self.last_kind = "llm"
        self.prompts: list[str] = []

    def __call__(self, fb: Feedback) -> str | None:
        prompt = feedback_prompt(fb)
        self.prompts.append(prompt)
        reply = str(self.llm(prompt) or "")
        m = re.search(r"```(?:sql|sqlite)?\s*\n?(.*?)```", reply, flags=re.S | re.I)
        sql = (m.group(1) if m else reply).strip().rstrip(";").strip()
        self.last_note = "llm reply"
        return sql or None


def refine(sql: str, database: Database, retriever: ValueRetriever | None = None,
           refiner: Callable[[Feedback], str | None] | None = None,
           rules: Sequence[str] | None = None, max_rounds: int = 3,
           question: str = "") -> RefineResult:
    """Run the loop (module docstring) on ``sql``; ``retriever`` None skips value checks."""
    if max_rounds < 0:
        raise ValueError(f"refine: max_rounds must be >= 0, got {max_rounds}")
    check_read_only(sql)
    refiner = refiner if refiner is not None else RuleRefiner()
    seen = {sql}
    steps: list[RefineStep] = []
    checks: list[ValueCheck] = []
    findings: list[Finding] = []
    for rnd in range(max_rounds + 1):
        checks = retriever.check_sql(sql) if retriever is not None else []
        findings = detect(sql, database=database, rules=rules)
        failed = [c for c in checks if c.failed]
        if not failed and not findings:
            return RefineResult(sql, rnd, True, steps, checks, findings, "converged")
        if rnd == max_rounds:
            return RefineResult(sql, rnd, False, steps, checks, findings, "max_rounds")
        new = refiner(Feedback(sql, question, failed, findings, rnd, database))
        if new is None or new.strip() == sql.strip():
            return RefineResult(sql, rnd, False, steps, checks, findings, "no change")
        if new in seen:
            return RefineResult(sql, rnd, False, steps, checks, findings, "cycle")
        try:
            check_read_only(new)
        except SQLError as exc:
            return RefineResult(sql, rnd, False, steps, checks, findings,
                                f"refiner returned unusable SQL: {exc}")
        steps.append(RefineStep(rnd, getattr(refiner, "last_kind", "refiner"), sql, new,
                                getattr(refiner, "last_note", "")))
        seen.add(new)
        sql = new
    return RefineResult(sql, max_rounds, False, steps, checks, findings, "max_rounds")
