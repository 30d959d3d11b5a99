"""Gold question/SQL pairs of the embedded benchmark and their labelled mismatched variants.

**Value mismatches** (Tool-SQL's *condition mismatch*): each gold query has one literal
slot ``{v}`` on a column; a variant writes the literal as a question would, in one of the
kinds :data:`VALUE_KINDS`:

======================  =========================================================
``case``                ``'united states'``, ``'NEW YORK CITY'``
``abbreviation``        ``'USA'``, ``'NYC'``, ``'R&B'``, ``'TV'``, ``'ENT'``
``synonym``             ``'America'``, ``'The Big Apple'``, ``'Couch'``, ``'Eye Care'``
``typo``                one edit: swap, drop, double or replace a letter
``number_format``       ``'8336817'`` / ``'8.336.817'`` for ``'8,336,817'``; ``'J45909'``
``date_format``         ``'March 15, 2021'`` / ``'15.03.2021'`` for ``'2021-03-15'``
``missing_unit``        ``'1.5'`` for ``'1.5 kg'``, ``'38.1'`` for ``'38.1 °C'``
======================  =========================================================

A variant is kept only when its literal matches no cell of the column (the condition
really fails) and the gold query returns rows.

**Constraint mismatches** (Tool-SQL's *stricter constraint*): a wrong query next to the
gold one, labelled with the detector rule that should catch it (:data:`CONSTRAINT_KINDS`);
kept only when the two give different results on the data (the error is silent and real).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from mmret.sql.benchmark import vocab
from mmret.sql.conditions import sql_literal
from mmret.sql.database import Database

__all__ = ["CONSTRAINT_KINDS", "VALUE_KINDS", "VALUE_TEMPLATES", "ValueTemplate",
           "constraint_items", "make_variant"]

VALUE_KINDS = ("case", "abbreviation", "synonym", "typo", "number_format", "date_format",
               "missing_unit")
CONSTRAINT_KINDS = ("join_not_fk", "literal_type", "text_vs_number", "aggregate_group_by",
                    "limit_ties", "count_distinct", "nullable_condition")


@dataclass(frozen=True)
class ValueTemplate:
    """One gold query shape with a literal slot ``{v}`` on ``table.column``."""

    id: str
    db: str
    table: str
    column: str
    question: str
    sql: str
    kinds: tuple[str, ...]
    forms: dict[str, dict[str, list[str]]] | None = None


#: the mismatch kinds of a free-text column
TEXT_KINDS = ("case", "abbreviation", "synonym", "typo")

VALUE_TEMPLATES = [
    ValueTemplate("artist_country", "music", "artist", "country",
                  "How many artists come from {v}?",
                  "SELECT COUNT(*) FROM artist WHERE country = {v}",
                  TEXT_KINDS, vocab.COUNTRIES),
    ValueTemplate("artist_genre", "music", "artist", "genre",
                  "List the names of {v} artists formed after 2010.",
                  "SELECT name FROM artist WHERE genre = {v} AND formed_year > 2010",
                  TEXT_KINDS, vocab.GENRES),
    ValueTemplate("concert_city", "music", "city", "name",
                  "What are the titles of the concerts held in {v}?",
                  "SELECT c.title FROM concert AS c JOIN venue AS v ON c.venue_id = v.id "
                  "JOIN city AS ci ON v.city_id = ci.id WHERE ci.name = {v}",
                  TEXT_KINDS,
                  {k: v[2] for k, v in vocab.CITIES.items()}),
    ValueTemplate("concert_date", "music", "concert", "concert_date",
                  "Which concerts took place on {v}?",
                  "SELECT title FROM concert WHERE concert_date = {v}", ("date_format",)),
    ValueTemplate("city_population", "music", "city", "population",
                  "Which city has a population of {v}?",
                  "SELECT name FROM city WHERE population = {v}", ("number_format",)),
    ValueTemplate("product_category", "shop", "product", "category",
                  "What is the average price of {v} products?",
                  "SELECT AVG(price) FROM product WHERE category = {v}",
                  TEXT_KINDS, vocab.CATEGORIES),
    ValueTemplate("customer_state", "shop", "customer", "state",
                  "How many customers live in {v}?",
                  "SELECT COUNT(*) FROM customer WHERE state = {v}",
                  TEXT_KINDS, vocab.STATES),
    ValueTemplate("product_weight", "shop", "product", "weight",
                  "List the names of the products that weigh {v}.",
                  "SELECT name FROM product WHERE weight = {v}", ("missing_unit",)),
    ValueTemplate("order_date", "shop", "orders", "order_date",
                  "How many orders were placed on {v}?",
                  "SELECT COUNT(*) FROM orders WHERE order_date = {v}", ("date_format",)),
    ValueTemplate("product_brand", "shop", "product", "brand",
                  "Which products are made by {v}?",
                  "SELECT name FROM product WHERE brand = {v}", ("case", "typo")),
    ValueTemplate("doctor_specialty", "clinic", "doctor", "specialty",
                  "Which doctors work in {v}?",
                  "SELECT name FROM doctor WHERE specialty = {v}",
                  TEXT_KINDS, vocab.SPECIALTIES),
    ValueTemplate("visit_diagnosis", "clinic", "visit", "diagnosis_code",
                  "How many visits had the diagnosis code {v}?",
                  "SELECT COUNT(*) FROM visit WHERE diagnosis_code = {v}",
                  ("number_format", "case")),
    ValueTemplate("visit_temperature", "clinic", "visit", "temperature",
                  "Which patients had a temperature of {v} at a visit?",
                  "SELECT DISTINCT p.name FROM patient AS p JOIN visit AS v ON v.patient_id = p.id "
                  "WHERE v.temperature = {v}", ("missing_unit",)),
    ValueTemplate("patient_insurer", "clinic", "patient", "insurer",
                  "How many patients are insured by {v}?",
                  "SELECT COUNT(*) FROM patient WHERE insurer = {v}", ("case", "typo")),
    ValueTemplate("patient_birth", "clinic", "patient", "birth_date",
                  "Which patients were born on {v}?",
                  "SELECT name FROM patient WHERE birth_date = {v}", ("date_format",)),
]

_KEYBOARD = "qwertyuiopasdfghjklzxcvbnm"


def _typo(value: str, rng: random.Random) -> str:
    letters = [i for i, ch in enumerate(value) if ch.isalpha()]
    if len(letters) < 3:
        return value
    i = rng.choice(letters[1:])
    op = rng.choice(("swap", "drop", "double", "replace"))
    if op == "swap" and i + 1 < len(value) and value[i + 1].isalpha() and value[i] != value[i + 1]:
        return value[:i] + value[i + 1] + value[i] + value[i + 2:]
    if op == "drop":
        return value[:i] + value[i + 1:]
    if op == "double":
        return value[:i] + value[i] + value[i:]
    repl = rng.choice([c for c in _KEYBOARD if c != value[i].lower()])
    repl = repl.upper() if value[i].isupper() else repl
    return value[:i] + repl + value[i + 1:]


def _case(value: str, rng: random.Random) -> str:
    options = [value.lower(), value.upper(), value.swapcase()]
    options = [o for o in options if o != value]
    return rng.choice(options) if options else value


def _number_format(value: str, rng: random.Random) -> str:
    if "," in value:  # 8,336,817
        digits = value.replace(",", "")
        return rng.choice([digits, value.replace(",", "."), value.replace(",", " ")])
    if "." in value:  # ICD-10 J45.909
        return rng.choice([value.replace(".", ""), value.replace(".", " ")])
    return value


def _date_format(value: str, rng: random.Random) -> str:
    d = date.fromisoformat(value)
    return rng.choice([d.strftime("%B %d, %Y").replace(" 0", " "), d.strftime("%d.%m.%Y"),
                       d.strftime("%Y/%m/%d"), d.strftime("%d %b %Y")])


def _missing_unit(value: str, rng: random.Random) -> str:
    return value.split(" ")[0]


def make_variant(kind: str, value: str, rng: random.Random,
                 forms: dict[str, list[str]] | None) -> str | None:
    """The literal of a ``kind`` variant of ``value`` (None when the kind does not apply)."""
    if kind in ("abbreviation", "synonym"):
        options = (forms or {}).get(kind, [])
        return rng.choice(options) if options else None
    fn: Callable[[str, random.Random], str] = {
        "case": _case, "typo": _typo, "number_format": _number_format,
        "date_format": _date_format, "missing_unit": _missing_unit}[kind]
    out = fn(value, rng)
    return None if out == value else out


# ----------------------------------------------------------------------------- constraints
def constraint_items(name: str, db: Database, rng: random.Random) -> Iterator[dict[str, Any]]:
    """Candidate ``{kind, question, gold, query}`` constraint items of database ``name``
    (filtered by the caller: the two queries must give different results)."""
    q = sql_literal

    def values(sql: str) -> list[Any]:
        return [r[0] for r in db.query(sql).rows]

    if name == "music":
        for city in rng.sample(values("SELECT name FROM city"), 4):
            yield dict(kind="join_not_fk",
                       question=f"What are the titles of the concerts at venues in {city}?",
                       gold="SELECT c.title FROM concert AS c JOIN venue AS v ON c.venue_id = v.id "
                            f"JOIN city AS ci ON v.city_id = ci.id WHERE ci.name = {q(city)}",
                       query="SELECT c.title FROM concert AS c JOIN venue AS v ON c.id = v.id "
                             f"JOIN city AS ci ON v.city_id = ci.id WHERE ci.name = {q(city)}")
        for n in (1000, 5000, 20000):
            yield dict(kind="text_vs_number",
                       question=f"Which venues hold more than {n} people?",
                       gold=f"SELECT name FROM venue WHERE CAST(capacity AS REAL) > {n}",
                       query=f"SELECT name FROM venue WHERE capacity > {n}")
        yield dict(kind="text_vs_number", question="Name the five largest venues.",
                   gold="SELECT name FROM venue ORDER BY CAST(capacity AS REAL) DESC LIMIT 5",
                   query="SELECT name FROM venue ORDER BY capacity DESC LIMIT 5")
        for year in (1990, 2000, 2010):
            yield dict(kind="aggregate_group_by",
                       question=f"How many artists of each genre formed after {year}?",
                       gold=f"SELECT genre, COUNT(*) FROM artist WHERE formed_year > {year} "
                            "GROUP BY genre",
                       query=f"SELECT genre, COUNT(*) FROM artist WHERE formed_year > {year}")
        for country in rng.sample(list(vocab.COUNTRIES), 6):
            yield dict(kind="limit_ties",
                       question=f"Which artists from {country} formed most recently?",
                       gold=f"SELECT name FROM artist WHERE country = {q(country)} AND "
                            f"formed_year = (SELECT MAX(formed_year) FROM artist WHERE "
                            f"country = {q(country)})",
                       query=f"SELECT name FROM artist WHERE country = {q(country)} "
                             "ORDER BY formed_year DESC LIMIT 1")
        for genre in rng.sample(list(vocab.GENRES), 4):
            yield dict(kind="count_distinct",
                       question=f"How many different {genre} artists have performed?",
                       gold="SELECT COUNT(DISTINCT a.id) FROM artist AS a JOIN performance AS p "
                            f"ON p.artist_id = a.id WHERE a.genre = {q(genre)}",
                       query="SELECT COUNT(a.id) FROM artist AS a JOIN performance AS p "
                             f"ON p.artist_id = a.id WHERE a.genre = {q(genre)}")
        for label in ("Atlantic", "Warp", "Blue Note"):
            yield dict(kind="nullable_condition",
                       question=f"How many artists are not signed to {label} (unsigned included)?",
                       gold=f"SELECT COUNT(*) FROM artist WHERE label != {q(label)} OR label IS NULL",
                       query=f"SELECT COUNT(*) FROM artist WHERE label != {q(label)}")
    elif name == "shop":
        for state in rng.sample(list(vocab.STATES), 4):
            yield dict(kind="join_not_fk",
                       question=f"How many orders did customers from {state} place?",
                       gold="SELECT COUNT(*) FROM orders AS o JOIN customer AS c ON "
                            f"o.customer_id = c.id WHERE c.state = {q(state)}",
                       query="SELECT COUNT(*) FROM orders AS o JOIN customer AS c ON "
                             f"o.id = c.id WHERE c.state = {q(state)}")
        for n in (2, 4):
            yield dict(kind="literal_type",
                       question=f"How many orders were for exactly {n} items?",
                       gold=f"SELECT COUNT(*) FROM orders WHERE quantity = {n}",
                       query=f"SELECT COUNT(*) FROM orders WHERE quantity = "
                             f"{q(['zero', 'one', 'two', 'three', 'four'][n])}")
        for cat in rng.sample(list(vocab.CATEGORIES), 3):
            yield dict(kind="aggregate_group_by",
                       question=f"What is the average price of each brand's {cat} products?",
                       gold=f"SELECT brand, AVG(price) FROM product WHERE category = {q(cat)} "
                            "GROUP BY brand",
                       query=f"SELECT brand, AVG(price) FROM product WHERE category = {q(cat)}")
        for cat in list(vocab.CATEGORIES):
            yield dict(kind="limit_ties",
                       question=f"Which {cat} products are the most expensive?",
                       gold=f"SELECT name FROM product WHERE category = {q(cat)} AND price = "
                            f"(SELECT MAX(price) FROM product WHERE category = {q(cat)})",
                       query=f"SELECT name FROM product WHERE category = {q(cat)} "
                             "ORDER BY price DESC LIMIT 1")
        for cat in rng.sample(list(vocab.CATEGORIES), 4):
            yield dict(kind="count_distinct",
                       question=f"How many customers bought a {cat}?",
                       gold="SELECT COUNT(DISTINCT c.id) FROM customer AS c JOIN orders AS o ON "
                            "o.customer_id = c.id JOIN product AS p ON o.product_id = p.id "
                            f"WHERE p.category = {q(cat)}",
                       query="SELECT COUNT(c.id) FROM customer AS c JOIN orders AS o ON "
                             "o.customer_id = c.id JOIN product AS p ON o.product_id = p.id "
                             f"WHERE p.category = {q(cat)}")
        for code in ("SPRING10", "VIP20", "WELCOME5"):
            yield dict(kind="nullable_condition",
                       question=f"How many orders did not use the coupon {code} "
                                "(orders without a coupon included)?",
                       gold=f"SELECT COUNT(*) FROM orders WHERE coupon != {q(code)} OR coupon IS NULL",
                       query=f"SELECT COUNT(*) FROM orders WHERE coupon != {q(code)}")
    elif name == "clinic":
        for spec in rng.sample(list(vocab.SPECIALTIES), 4):
            yield dict(kind="join_not_fk",
                       question=f"On which dates did {spec} doctors see patients?",
                       gold="SELECT DISTINCT v.visit_date FROM visit AS v JOIN doctor AS d ON "
                            f"v.doctor_id = d.id WHERE d.specialty = {q(spec)}",
                       query="SELECT DISTINCT v.visit_date FROM visit AS v JOIN doctor AS d ON "
                             f"v.patient_id = d.id WHERE d.specialty = {q(spec)}")
        for room in rng.sample(values("SELECT DISTINCT room FROM doctor"), 4):
            yield dict(kind="literal_type", question=f"Which doctors work in room {room}?",
                       gold=f"SELECT name FROM doctor WHERE room = {q(room)}",
                       query=f"SELECT name FROM doctor WHERE room = {int(room)}")
        for spec in rng.sample(list(vocab.SPECIALTIES), 3):
            yield dict(kind="aggregate_group_by",
                       question=f"What is the total fee per diagnosis code for {spec} visits?",
                       gold="SELECT v.diagnosis_code, SUM(v.fee) FROM visit AS v JOIN doctor AS d "
                            f"ON v.doctor_id = d.id WHERE d.specialty = {q(spec)} "
                            "GROUP BY v.diagnosis_code",
                       query="SELECT v.diagnosis_code, SUM(v.fee) FROM visit AS v JOIN doctor AS d "
                             f"ON v.doctor_id = d.id WHERE d.specialty = {q(spec)}")
        for code in rng.sample(list(vocab.DIAGNOSES), 4):
            yield dict(kind="limit_ties",
                       question=f"What is the highest fee charged for diagnosis {code}, and "
                                "on which visits?",
                       gold=f"SELECT id FROM visit WHERE diagnosis_code = {q(code)} AND fee = "
                            f"(SELECT MAX(fee) FROM visit WHERE diagnosis_code = {q(code)})",
                       query=f"SELECT id FROM visit WHERE diagnosis_code = {q(code)} "
                             "ORDER BY fee DESC LIMIT 1")
        for spec in rng.sample(list(vocab.SPECIALTIES), 4):
            yield dict(kind="count_distinct",
                       question=f"How many patients saw a {spec} doctor?",
                       gold="SELECT COUNT(DISTINCT p.id) FROM patient AS p JOIN visit AS v ON "
                            "v.patient_id = p.id JOIN doctor AS d ON v.doctor_id = d.id "
                            f"WHERE d.specialty = {q(spec)}",
                       query="SELECT COUNT(p.id) FROM patient AS p JOIN visit AS v ON "
                             "v.patient_id = p.id JOIN doctor AS d ON v.doctor_id = d.id "
                             f"WHERE d.specialty = {q(spec)}")
        for ins in rng.sample(vocab.INSURERS, 3):
            yield dict(kind="nullable_condition",
                       question=f"How many patients are not insured by {ins} (uninsured included)?",
                       gold=f"SELECT COUNT(*) FROM patient WHERE insurer != {q(ins)} OR "
                            "insurer IS NULL",
                       query=f"SELECT COUNT(*) FROM patient WHERE insurer != {q(ins)}")
