"""Driven by tests/clients_test.go: one psycopg2 session through the proxy
doing what every client in the matrix does, printing one JSON line per step."""
import json
import os
import sys

import psycopg2


def out(step, value):
    print(json.dumps({"step": step, "value": value}, default=str), flush=True)


def main():
    conn = psycopg2.connect(os.environ["PGRULES_URL"])
    cur = conn.cursor()
    cur.execute("CREATE TABLE item (id int PRIMARY KEY, price numeric(10,2), note text)")
    cur.execute("INSERT INTO item VALUES (%s, %s, %s), (2, 0.10, NULL)", (1, "19.99", "first"))
    conn.commit()
    cur.execute("SELECT id, price, note FROM item ORDER BY id")
    out("select", [[r[0], str(r[1]), r[2]] for r in cur.fetchall()])
    conn.commit()

    cur.execute("INSERT INTO item VALUES (3, 1, 'rolled back')")
    conn.rollback()
    cur.execute("INSERT INTO item VALUES (4, 1, 'committed')")
    conn.commit()
    cur.execute("SELECT array_agg(id ORDER BY id) FROM item")
    out("ids", cur.fetchone()[0])
    conn.commit()

    try:
        cur.execute("INSERT INTO item VALUES (1, 0, NULL)")
        out("error", None)
    except psycopg2.Error as e:
        out("error", e.pgcode)
    conn.rollback()
    cur.execute("SELECT 1")
    out("after_error", cur.fetchone()[0])

    cur.execute("PREPARE by_id(int) AS SELECT note FROM item WHERE id = $1")
    cur.execute("EXECUTE by_id(%s)", (1,))
    out("prepared", cur.fetchone()[0])
    cur.execute("EXECUTE by_id(%s)", (4,))
    out("prepared_again", cur.fetchone()[0])
    conn.rollback()

    out("ssl", bool(conn.info.ssl_in_use))
    conn.close()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the Go test shows stderr
        print(repr(e), file=sys.stderr)
        sys.exit(1)
