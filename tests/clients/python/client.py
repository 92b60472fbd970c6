"""psycopg2 client driven by tests/clients_test.go and tests/auth_test.go.

Usage: PGRULES_URL=postgres://... client.py matrix|auth

matrix  runs the client-matrix session against an empty database;
auth    connects, reports current_user and TLS, or the connection error.

Each result is one JSON line {"step": ..., "value": ...} on stdout; the Go
test holds them to its expectations. Anything unexpected exits non-zero.
"""
import json
import os
import sys
from decimal import Decimal

import psycopg2
import psycopg2.extensions as ext

CREATE = "CREATE TABLE item (id int PRIMARY KEY, price numeric, note text)"
UNICODE = "ünïcødé ✓"

# psycopg2 reports libpq's PQtransactionStatus, which libpq takes from the
# status byte of the last ReadyForQuery.
TX_STATUS = {
    ext.TRANSACTION_STATUS_IDLE: "I",
    ext.TRANSACTION_STATUS_ACTIVE: "A",
    ext.TRANSACTION_STATUS_INTRANS: "T",
    ext.TRANSACTION_STATUS_INERROR: "E",
    ext.TRANSACTION_STATUS_UNKNOWN: "?",
}


def out(step, value):
    print(json.dumps({"step": step, "value": value}), flush=True)


def one(cur, sql, args=None):
    cur.execute(sql, args)
    return cur.fetchone()[0]


def sqlstate(cur, sql):
    try:
        cur.execute(sql)
    except psycopg2.Error as e:
        if e.pgcode is None:
            raise
        return e.pgcode
    return None


def matrix(url):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(CREATE)
    cur.execute("INSERT INTO item VALUES (%s, %s, %s), (2, 0.10, NULL)", (1, Decimal("19.99"), "first"))
    cur.execute("SELECT id, price, note FROM item ORDER BY id")
    out("select", [[i, None if p is None else str(p), n] for i, p, n in cur.fetchall()])

    # psycopg2's own transaction handling: outside autocommit it sends BEGIN
    # before the first statement, and commit()/rollback() end it.
    conn.autocommit = False
    cur.execute("INSERT INTO item VALUES (3, 3, 'rolled back')")
    conn.rollback()
    cur.execute("INSERT INTO item VALUES (4, 4.5, 'committed')")
    conn.commit()
    conn.autocommit = True
    out("rolled_back", one(cur, "SELECT count(*) FROM item WHERE id = %s", (3,)))
    out("committed", one(cur, "SELECT count(*) FROM item WHERE id = %s", (4,)))

    out("error", sqlstate(cur, "INSERT INTO item VALUES (1, 0, NULL)"))
    out("after_error", one(cur, "SELECT 1"))

    cur.execute("BEGIN")
    status = TX_STATUS[conn.info.transaction_status]
    out("tx_error", sqlstate(cur, "SELECT * FROM no_such_table"))
    status += TX_STATUS[conn.info.transaction_status]
    out("tx_aborted", sqlstate(cur, "SELECT 1"))
    cur.execute("ROLLBACK")
    status += TX_STATUS[conn.info.transaction_status]
    out("tx_status", status)
    out("after_rollback", one(cur, "SELECT 1"))

    # psycopg2 has no protocol-level prepare; PREPARE/EXECUTE makes the
    # statement server-side all the same.
    cur.execute("PREPARE ins(int, numeric, text) AS INSERT INTO item VALUES ($1, $2, $3)")
    cur.execute("EXECUTE ins(%s, %s, %s)", (5, Decimal("12345678.901"), UNICODE))
    out("prepared_insert", cur.rowcount)
    cur.execute("PREPARE by_id(int) AS SELECT note FROM item WHERE id = $1")
    out("prepared", [one(cur, "EXECUTE by_id(%s)", (i,)) for i in (1, 4, 5)])
    out("server_side", one(cur, "SELECT count(*) FROM pg_prepared_statements WHERE name IN ('ins', 'by_id')"))
    out("ssl", bool(conn.info.ssl_in_use))
    conn.close()


def auth(url):
    try:
        conn = psycopg2.connect(url)
    except psycopg2.OperationalError as e:
        # libpq keeps no SQLSTATE for a failed connection, only the text.
        out("connect_error", {"code": e.pgcode, "message": str(e)})
        return
    cur = conn.cursor()
    out("user", one(cur, "SELECT current_user"))
    out("ssl", bool(conn.info.ssl_in_use))
    conn.close()


def main():
    modes = {"matrix": matrix, "auth": auth}
    if len(sys.argv) != 2 or sys.argv[1] not in modes:
        sys.exit("usage: client.py matrix|auth (with PGRULES_URL set)")
    modes[sys.argv[1]](os.environ["PGRULES_URL"])


if __name__ == "__main__":
    main()
