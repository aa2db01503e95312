"""The workloads' queries, written once: the raw baselines run these SQL texts through the
drivers, and every HTTP runner (the reference product, sluice) posts these bodies, so all
sides compute the same thing.

Database names are the config names both servers are given (bench/peer.py writes them);
"postgresql" and "mysql" also let the reference product infer each SQL dialect from the
name, which it does for its row-cap rewrite.
"""

from __future__ import annotations

from typing import Any

PG_NAME = "postgresql"
MYSQL_NAME = "mysql"

LOOKUP_SQL = "SELECT * FROM users WHERE id = $1"
EVENTS_SQL = "SELECT id, order_id, amount FROM events WHERE id <= $1"
ORDERS_SQL = "SELECT id, status FROM orders"
# The cast is for the reference product, which hands numeric columns to DuckDB as text;
# on a DECIMAL(12,2) column it is a no-op.
JOIN_MERGE_SQL = (
    "SELECT s1.status, COUNT(*) AS events, SUM(CAST(s0.amount AS DECIMAL(18,2))) AS amount"
    " FROM s0 JOIN s1 ON s0.order_id = s1.id GROUP BY s1.status ORDER BY s1.status"
)


def lookup_body(user_id: int) -> dict[str, Any]:
    """POST /v1/query/simple: one user by primary key (the API takes no parameters)."""
    return {
        "database": PG_NAME,
        "table": "users",
        "language": "sql",
        "query": f"SELECT * FROM users WHERE id = {int(user_id)}",
    }


def lookup_bodies(n_users: int, count: int = 1000) -> list[dict[str, Any]]:
    """Distinct keys spread over the table, so no layer can answer from one cached row."""
    step = max(1, n_users // count)
    return [lookup_body(1 + (i * step) % n_users) for i in range(count)]


def join_body(n_events: int, *, orders_db: str = MYSQL_NAME) -> dict[str, Any]:
    """POST /v1/query: the first n events (PostgreSQL), their orders linked by id
    (MariaDB by default), aggregated per order status in the merge."""
    return {
        "steps": [
            {
                "step_id": "s0",
                "database": PG_NAME,
                "table": "events",
                "language": "sql",
                "query": f"SELECT id, order_id, amount FROM events WHERE id <= {int(n_events)}",
            },
            {
                "step_id": "s1",
                "database": orders_db,
                "table": "orders",
                "language": "sql",
                "query": ORDERS_SQL,
                "depends_on": ["s0"],
                "link_from": "order_id",
                "link_to": "id",
            },
        ],
        "merge": JOIN_MERGE_SQL,
    }


def join_range_body(
    n_events: int, last_order_id: int, *, orders_db: str = MYSQL_NAME
) -> dict[str, Any]:
    """The linked join's rows without a link: both steps independent, the orders step bounded
    by the id range the first n events reference (datagen.last_order_of(spec, n)), joined
    in the merge. For servers whose linked steps fail."""
    body = join_body(n_events, orders_db=orders_db)
    child = body["steps"][1]
    for key in ("depends_on", "link_from", "link_to"):
        child.pop(key)
    child["query"] = f"SELECT id, status FROM orders WHERE id <= {int(last_order_id)}"
    return body
