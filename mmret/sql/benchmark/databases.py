"""The embedded benchmark's three SQLite databases, generated from a seed.

- ``music``: ``city`` (39 real cities, population as text with thousands separators),
  ``venue`` (capacity stored as **text**), ``artist`` (country, genre, nullable label),
  ``concert`` (ISO dates), ``performance`` (concert × artist).
- ``shop``: ``customer`` (US states), ``product`` (category, brand, weight **with units**
  such as ``"1.5 kg"``, prices on a small grid so maxima tie), ``orders`` (ISO dates,
  nullable coupon).
- ``clinic``: ``patient`` (nullable insurer, ISO birth dates), ``doctor`` (specialty, room
  codes as zero-padded text), ``visit`` (ICD-10 codes, temperature text ``"38.2 °C"``).

Every foreign key is declared (``REFERENCES``); the same seed gives the same rows.
"""

from __future__ import annotations

import random
import sqlite3
from datetime import date, timedelta
from pathlib import Path

from mmret.sql.benchmark import vocab

__all__ = ["DATABASES", "build_database"]


def _day(rng: random.Random, start: date, end: date) -> str:
    return (start + timedelta(days=rng.randrange((end - start).days))).isoformat()


def _person(rng: random.Random) -> str:
    return f"{rng.choice(vocab.FIRST_NAMES)} {rng.choice(vocab.LAST_NAMES)}"


def _music(conn: sqlite3.Connection, rng: random.Random, scale: float) -> None:
    conn.executescript("""
    CREATE TABLE city (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, country TEXT NOT NULL,
                       population TEXT);
    CREATE TABLE venue (id INTEGER PRIMARY KEY, name TEXT NOT NULL,
                        city_id INTEGER NOT NULL REFERENCES city(id), capacity TEXT);
    CREATE TABLE artist (id INTEGER PRIMARY KEY, name TEXT NOT NULL, country TEXT NOT NULL,
                         genre TEXT NOT NULL, formed_year INTEGER NOT NULL, label TEXT);
    CREATE TABLE concert (id INTEGER PRIMARY KEY, title TEXT NOT NULL,
                          venue_id INTEGER NOT NULL REFERENCES venue(id),
                          concert_date DATE NOT NULL, ticket_price REAL NOT NULL);
    CREATE TABLE performance (concert_id INTEGER NOT NULL REFERENCES concert(id),
                              artist_id INTEGER NOT NULL REFERENCES artist(id),
                              PRIMARY KEY (concert_id, artist_id));
    """)
    cities = list(vocab.CITIES.items())
    conn.executemany("INSERT INTO city VALUES (?, ?, ?, ?)",
                     [(i + 1, name, c, f"{pop:,}") for i, (name, (c, pop, _)) in enumerate(cities)])
    n_venue = int(300 * scale)
    venues = []
    for i in range(n_venue):
        ci = rng.randrange(len(cities))
        venues.append((i + 1, f"{cities[ci][0]} {rng.choice(vocab.VENUE_WORDS)} {i + 1}", ci + 1,
                       str(rng.choice([300, 450, 800, 1200, 2500, 5000, 9000, 12000, 18000,
                                       25000, 40000, 60000]) + rng.randrange(0, 50))))
    conn.executemany("INSERT INTO venue VALUES (?, ?, ?, ?)", venues)
    countries = list(vocab.COUNTRIES)
    genres = list(vocab.GENRES)
    labels = ["Atlantic", "Columbia", "Sub Pop", "Blue Note", "Def Jam", "Warp", "XL"]
    n_artist = int(2500 * scale)
    conn.executemany("INSERT INTO artist VALUES (?, ?, ?, ?, ?, ?)", [
        (i + 1, f"The {rng.choice(vocab.BAND_WORDS)} {rng.choice(vocab.BAND_NOUNS)} {i + 1}",
         rng.choice(countries), rng.choice(genres), rng.randrange(1965, 2024),
         rng.choice(labels) if rng.random() < 0.7 else None) for i in range(n_artist)])
    n_concert = int(4000 * scale)
    conn.executemany("INSERT INTO concert VALUES (?, ?, ?, ?, ?)", [
        (i + 1, f"{rng.choice(vocab.BAND_WORDS)} Night {i + 1}", rng.randrange(n_venue) + 1,
         _day(rng, date(2015, 1, 1), date(2024, 12, 31)),
         round(rng.choice([15, 25, 40, 60, 85, 120]) + rng.random() * 10, 2))
        for i in range(n_concert)])
    perf = set()
    while len(perf) < int(9000 * scale):
        perf.add((rng.randrange(n_concert) + 1, rng.randrange(n_artist) + 1))
    conn.executemany("INSERT INTO performance VALUES (?, ?)", sorted(perf))


def _shop(conn: sqlite3.Connection, rng: random.Random, scale: float) -> None:
    conn.executescript("""
    CREATE TABLE customer (id INTEGER PRIMARY KEY, first_name TEXT NOT NULL,
                           last_name TEXT NOT NULL, email TEXT NOT NULL, state TEXT NOT NULL,
                           signup_date DATE NOT NULL);
    CREATE TABLE product (id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL,
                          brand TEXT NOT NULL, weight TEXT NOT NULL, price REAL NOT NULL);
    CREATE TABLE orders (id INTEGER PRIMARY KEY,
                         customer_id INTEGER NOT NULL REFERENCES customer(id),
                         product_id INTEGER NOT NULL REFERENCES product(id),
                         order_date DATE NOT NULL, quantity INTEGER NOT NULL, coupon TEXT);
    """)
    states = list(vocab.STATES)
    n_cust = int(3000 * scale)
    rows = []
    for i in range(n_cust):
        first, last = rng.choice(vocab.FIRST_NAMES), rng.choice(vocab.LAST_NAMES)
        rows.append((i + 1, first, last, f"{first}.{last}{i + 1}@example.com".lower(),
                     rng.choice(states), _day(rng, date(2018, 1, 1), date(2024, 6, 30))))
    conn.executemany("INSERT INTO customer VALUES (?, ?, ?, ?, ?, ?)", rows)
    cats = list(vocab.CATEGORIES)
    weights = {"Television": ["8.5 kg", "12 kg", "15.5 kg", "21 kg"],
               "Mobile Phone": ["150 g", "174 g", "188 g", "204 g"],
               "Laptop Computer": ["1.2 kg", "1.5 kg", "1.9 kg", "2.4 kg"],
               "Headphones": ["180 g", "250 g", "320 g"],
               "Refrigerator": ["55 kg", "68 kg", "82 kg"],
               "Sofa": ["35 kg", "48 kg", "62 kg"], "Bicycle": ["9.8 kg", "12.5 kg", "16 kg"],
               "Vacuum Cleaner": ["2.6 kg", "3.4 kg", "5.1 kg"],
               "Personal Computer": ["6.5 kg", "8.2 kg", "11 kg"],
               "Washing Machine": ["62 kg", "71 kg", "79 kg"],
               "Microwave Oven": ["10.5 kg", "12.8 kg", "15 kg"],
               "Coffee Maker": ["2.1 kg", "3.3 kg", "4.6 kg"]}
    n_prod = int(800 * scale)
    prods = []
    for i in range(n_prod):
        cat = rng.choice(cats)
        brand = rng.choice(vocab.BRANDS)
        prods.append((i + 1, f"{brand} {cat} {rng.choice('ABCDEFGHXZ')}{rng.randrange(100, 999)}",
                      cat, brand, rng.choice(weights[cat]),
                      rng.choice([49, 99, 149, 199, 299, 499, 799, 999, 1499]) + 0.99))
    conn.executemany("INSERT INTO product VALUES (?, ?, ?, ?, ?, ?)", prods)
    coupons = ["SPRING10", "WELCOME5", "BLACKFRI", "VIP20"]
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)", [
        (i + 1, rng.randrange(n_cust) + 1, rng.randrange(n_prod) + 1,
         _day(rng, date(2020, 1, 1), date(2024, 12, 31)), rng.randrange(1, 6),
         rng.choice(coupons) if rng.random() < 0.3 else None)
        for i in range(int(8000 * scale))])


def _clinic(conn: sqlite3.Connection, rng: random.Random, scale: float) -> None:
    conn.executescript("""
    CREATE TABLE patient (id INTEGER PRIMARY KEY, name TEXT NOT NULL, sex TEXT NOT NULL,
                          birth_date DATE NOT NULL, blood_type TEXT NOT NULL, insurer TEXT);
    CREATE TABLE doctor (id INTEGER PRIMARY KEY, name TEXT NOT NULL, specialty TEXT NOT NULL,
                         room TEXT NOT NULL);
    CREATE TABLE visit (id INTEGER PRIMARY KEY,
                        patient_id INTEGER NOT NULL REFERENCES patient(id),
                        doctor_id INTEGER NOT NULL REFERENCES doctor(id),
                        visit_date DATE NOT NULL, diagnosis_code TEXT NOT NULL,
                        fee REAL NOT NULL, temperature TEXT NOT NULL);
    """)
    n_pat = int(3000 * scale)
    conn.executemany("INSERT INTO patient VALUES (?, ?, ?, ?, ?, ?)", [
        (i + 1, _person(rng), rng.choice("FM"), _day(rng, date(1940, 1, 1), date(2020, 12, 31)),
         rng.choice(["A+", "A-", "B+", "B-", "AB+", "AB-", "O+", "O-"]),
         rng.choice(vocab.INSURERS) if rng.random() < 0.8 else None) for i in range(n_pat)])
    specs = list(vocab.SPECIALTIES)
    n_doc = int(150 * scale)
    rooms = sorted({f"{rng.randrange(1, 6):02d}{rng.randrange(1, 40):02d}" for _ in range(400)})
    conn.executemany("INSERT INTO doctor VALUES (?, ?, ?, ?)", [
        (i + 1, "Dr. " + _person(rng), rng.choice(specs), rooms[i % len(rooms)])
        for i in range(n_doc)])
    codes = list(vocab.DIAGNOSES)
    conn.executemany("INSERT INTO visit VALUES (?, ?, ?, ?, ?, ?, ?)", [
        (i + 1, rng.randrange(n_pat) + 1, rng.randrange(n_doc) + 1,
         _day(rng, date(2019, 1, 1), date(2024, 12, 31)), rng.choice(codes),
         rng.choice([45.0, 80.0, 120.0, 150.0, 210.0, 300.0]),
         f"{rng.choice([36.4, 36.6, 36.8, 37.0, 37.2, 37.5, 37.8, 38.1, 38.4, 38.9, 39.3])} °C")
        for i in range(int(10000 * scale))])


#: database name -> builder ``(conn, rng, scale)``
DATABASES = {"music": _music, "shop": _shop, "clinic": _clinic}


def build_database(name: str, path: Path, seed: int = 0, scale: float = 1.0) -> Path:
    """Write database ``name`` to ``path`` (replaced atomically) from ``seed``."""
    if name not in DATABASES:
        raise ValueError(f"unknown benchmark database {name!r}; known: {', '.join(DATABASES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    rng = random.Random(f"{seed}:{name}")
    conn = sqlite3.connect(tmp)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        DATABASES[name](conn, rng, scale)
        conn.commit()
    finally:
        conn.close()
    tmp.replace(path)
    return path
