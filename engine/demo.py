"""The embedded demo: a SQLite shop, a DuckDB analytics file, a ladybug graph of who
referred which customer and a LanceDB catalog of the shop's product descriptions with
their embeddings (the offline MiniLM model), related by customer and product ids, so
`sluice serve` with no config lets a newcomer query, search by meaning and federate
(SQL with SQL, Cypher or vector search) at once, with no server running."""

from __future__ import annotations

import random
import shutil
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import ladybug
import pyarrow as pa

DEMO_VERSION = "3"

COUNTRIES = ["DE", "FR", "US", "GB", "JP", "BR", "IN", "NL", "ES", "CA"]
FIRST = [
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Barbara",
    "Ken",
    "Margaret",
    "Dennis",
    "Frances",
    "Edsger",
    "Radia",
    "John",
    "Katherine",
    "Donald",
    "Sophie",
    "Tim",
]
LAST = [
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Liskov",
    "Thompson",
    "Hamilton",
    "Ritchie",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Backus",
    "Johnson",
    "Knuth",
    "Wilson",
]
PRODUCTS = [
    ("Espresso beans 1kg", "coffee", "18.90"),
    ("Filter papers", "coffee", "3.50"),
    ("Hand grinder", "equipment", "64.00"),
    ("Moka pot", "equipment", "32.00"),
    ("Green tea 250g", "tea", "9.80"),
    ("Kettle", "equipment", "45.50"),
    ("Oolong 100g", "tea", "12.40"),
    ("Mug", "accessories", "8.00"),
    ("Scale", "equipment", "27.90"),
    ("Decaf beans 500g", "coffee", "11.20"),
    ("Chai mix", "tea", "6.30"),
    ("Travel cup", "accessories", "15.00"),
    ("Waterproof hiking boots", "outdoor", "129.00"),
    ("Trail running shoes", "outdoor", "95.00"),
    ("Rain jacket", "outdoor", "110.00"),
    ("Wool hiking socks", "outdoor", "14.50"),
    ("Camping stove", "outdoor", "49.00"),
    ("Insulated winter boots", "outdoor", "139.00"),
    ("Trekking poles", "outdoor", "59.00"),
    ("Dry bag 20 l", "outdoor", "19.90"),
]
# what the catalog says about each product (its embedding is what near_text searches)
DESCRIPTIONS = [
    "Whole Arabica espresso beans, dark roast with notes of chocolate, one kilogram bag",
    "Paper filters for pour-over and drip coffee makers, pack of one hundred",
    "Burr hand grinder with adjustable grind size for espresso to French press",
    "Stovetop moka pot brewing strong Italian-style coffee on a gas or electric hob",
    "Japanese sencha green tea, loose leaf, 250 gram tin",
    "Electric kettle with temperature control for tea and pour-over coffee",
    "Taiwanese oolong tea, lightly roasted, 100 gram pouch",
    "Stoneware coffee mug, 350 ml, dishwasher safe",
    "Kitchen scale with timer for weighing coffee beans and water",
    "Decaffeinated coffee beans, Swiss water process, 500 grams",
    "Spiced chai tea mix with cinnamon, cardamom and ginger",
    "Insulated travel cup that keeps coffee hot on the commute",
    "Leather hiking boots with a waterproof membrane and a grippy sole for muddy trails",
    "Lightweight trail running shoes with a breathable mesh upper",
    "Breathable waterproof rain jacket with a hood for hiking in wet weather",
    "Merino wool socks that keep feet warm and dry on long hikes",
    "Compact camping stove for boiling water and brewing coffee outdoors",
    "Insulated snow boots for winter walks in cold and slush",
    "Adjustable aluminium trekking poles for steep mountain paths",
    "Roll-top dry bag that keeps gear dry on canoe and kayak trips",
]
STATUSES = ["paid", "paid", "paid", "shipped", "shipped", "delivered", "refunded"]
PAGES = ["/", "/products", "/products/{}", "/cart", "/checkout", "/blog", "/support"]

CONFIG_TEMPLATE = """\
# The embedded demo, written by `sluice serve` when no sluice.yaml is given.
databases:
  - name: shop
    type: sqlite
    path: shop.sqlite
    description: customers, products and orders of a small coffee and outdoor shop
  - name: analytics
    type: duckdb
    path: analytics.duckdb
    description: page views of the shop's website, by customer
  - name: referrals
    type: ladybug
    path: referrals.lbug
    description: who referred which customer of the shop (a Cypher graph)
  - name: catalog
    type: lancedb
    path: catalog
    description: the shop's product descriptions with embeddings (vector search by meaning)
permissions:
  default:
    shop:
      level: R
    analytics:
      level: R
    referrals:
      level: R
    catalog:
      level: R
server:
  data_dir: state
"""


def ensure_demo(folder: str | Path) -> Path:
    """Create the demo files once (idempotent); returns the path of its sluice.yaml."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    marker = root / f".demo-v{DEMO_VERSION}"
    config = root / "sluice.yaml"
    if not marker.exists():
        for name in ("shop.sqlite", "analytics.duckdb", "referrals.lbug", "referrals.lbug.wal"):
            path = root / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        rng = random.Random(42)  # noqa: S311 - deterministic sample data, not secrets
        customers = _make_shop(root / "shop.sqlite", rng)
        _make_analytics(root / "analytics.duckdb", rng, customers)
        _make_referrals(root / "referrals.lbug", rng, customers)
        shutil.rmtree(root / "catalog", ignore_errors=True)
        _make_catalog(root / "catalog")
        config.write_text(CONFIG_TEMPLATE, encoding="utf-8")
        marker.touch()
    return config


def _make_shop(path: Path, rng: random.Random) -> int:
    n_customers, n_orders = 800, 3000
    con = sqlite3.connect(path)
    try:
        con.executescript("""
            CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL,
                email TEXT NOT NULL UNIQUE, country TEXT NOT NULL, signup_date DATE NOT NULL);
            CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL,
                category TEXT NOT NULL, price DECIMAL(10,2) NOT NULL);
            CREATE TABLE orders (id INTEGER PRIMARY KEY,
                customer_id INTEGER NOT NULL REFERENCES customers(id),
                ordered_at TIMESTAMP NOT NULL, status TEXT NOT NULL, total DECIMAL(10,2));
            CREATE TABLE order_items (order_id INTEGER NOT NULL REFERENCES orders(id),
                product_id INTEGER NOT NULL REFERENCES products(id),
                quantity INTEGER NOT NULL, unit_price DECIMAL(10,2) NOT NULL,
                PRIMARY KEY (order_id, product_id));
            CREATE INDEX orders_customer ON orders(customer_id);
        """)
        start = date(2024, 1, 1)
        customers = []
        for i in range(1, n_customers + 1):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            customers.append(
                (
                    i,
                    f"{first} {last}",
                    f"{first}.{last}.{i}@example.com".lower(),
                    rng.choice(COUNTRIES),
                    (start + timedelta(days=rng.randrange(600))).isoformat(),
                )
            )
        con.executemany("INSERT INTO customers VALUES (?,?,?,?,?)", customers)
        con.executemany(
            "INSERT INTO products VALUES (?,?,?,?)",
            [(i, n, c, p) for i, (n, c, p) in enumerate(PRODUCTS, 1)],
        )
        orders, items = [], []
        for oid in range(1, n_orders + 1):
            when = datetime(2024, 3, 1) + timedelta(minutes=rng.randrange(900 * 24 * 60))
            picks = rng.sample(range(1, len(PRODUCTS) + 1), rng.randint(1, 4))
            total = 0.0
            for pid in picks:
                qty = rng.randint(1, 3)
                price = float(PRODUCTS[pid - 1][2])
                total += qty * price
                items.append((oid, pid, qty, PRODUCTS[pid - 1][2]))
            orders.append(
                (
                    oid,
                    rng.randint(1, n_customers),
                    when.isoformat(sep=" "),
                    rng.choice(STATUSES),
                    f"{total:.2f}",
                )
            )
        con.executemany("INSERT INTO orders VALUES (?,?,?,?,?)", orders)
        con.executemany("INSERT INTO order_items VALUES (?,?,?,?)", items)
        con.commit()
        con.execute("ANALYZE")
    finally:
        con.close()
    return n_customers


def _make_analytics(path: Path, rng: random.Random, n_customers: int) -> None:
    rows = []
    base = datetime(2025, 1, 1, tzinfo=UTC)
    for i in range(1, 6001):
        page = rng.choice(PAGES).format(rng.randint(1, len(PRODUCTS)))
        customer = rng.randint(1, n_customers) if rng.random() > 0.15 else None
        rows.append(
            (
                i,
                customer,
                page,
                base + timedelta(seconds=rng.randrange(300 * 86400)),
                rng.randint(200, 120_000),
                rng.choice(["web", "ios", "android"]),
            )
        )
    con = duckdb.connect(str(path))
    try:
        con.execute("""
            CREATE TABLE page_views (id BIGINT PRIMARY KEY, customer_id BIGINT, url VARCHAR,
                viewed_at TIMESTAMPTZ, duration_ms INTEGER, device VARCHAR)
        """)
        # one Arrow insert: executemany costs ~4 ms a row in DuckDB
        names = ["id", "customer_id", "url", "viewed_at", "duration_ms", "device"]
        table = pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows])
        con.register("demo_rows", table)
        con.execute("INSERT INTO page_views SELECT * FROM demo_rows")
        con.unregister("demo_rows")
    finally:
        con.close()


def _make_referrals(path: Path, rng: random.Random, n_customers: int) -> None:
    """Customer nodes (the shop's ids and names) and REFERRED edges: about a third of the
    customers came through a referral by an earlier customer."""
    shop = sqlite3.connect(path.parent / "shop.sqlite")
    try:
        names = dict(shop.execute("SELECT id, name FROM customers").fetchall())
    finally:
        shop.close()
    edges = [
        {"src": rng.randint(1, i - 1), "dst": i, "channel": rng.choice(["link", "code", "email"])}
        for i in range(2, n_customers + 1)
        if rng.random() < 0.35
    ]
    db = ladybug.Database(str(path))
    con = ladybug.Connection(db)
    try:
        con.execute("CREATE NODE TABLE Customer(id INT64, name STRING, PRIMARY KEY(id))")
        con.execute("CREATE REL TABLE REFERRED(FROM Customer TO Customer, channel STRING)")
        con.execute(
            "UNWIND $rows AS r CREATE (:Customer {id: r.id, name: r.name})",
            {"rows": [{"id": i, "name": names.get(i, f"customer {i}")} for i in names]},
        )
        con.execute(
            "UNWIND $edges AS e MATCH (a:Customer {id: e.src}), (b:Customer {id: e.dst}) "
            "CREATE (a)-[:REFERRED {channel: e.channel}]->(b)",
            {"edges": edges},
        )
    finally:
        con.close()
        db.close()


def _make_catalog(folder: Path) -> None:
    """A LanceDB folder with one table, products: the shop's id, name and category, its
    description, and the description's embedding (384 floats, unit length)."""
    import lancedb
    import numpy as np

    from connectors.embedding import DIMENSION, default

    vectors = np.stack(default().embed(DESCRIPTIONS)).astype(np.float32)
    table = pa.table(
        {
            "id": pa.array(range(1, len(PRODUCTS) + 1), pa.int64()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIMENSION),
            "name": [name for name, _, _ in PRODUCTS],
            "category": [category for _, category, _ in PRODUCTS],
            "description": DESCRIPTIONS,
        }
    )
    folder.mkdir(parents=True)
    lancedb.connect(str(folder)).create_table("products", table)
