#!/usr/bin/env python3
"""The many-schema benchmark of table selection (issue 10).

  python3 scripts/spider-many-schema.py load  DATA_DIR PG_URL OUT_DIR [EVERY]
  python3 scripts/spider-many-schema.py score OUT_DIR REPORT.json [REPORT.json ...]

`load` copies every Spider dev database (DATA_DIR/spider/database/<db>/<db>.sqlite, the ones
dev_without_wta_1.json uses) into ONE PostgreSQL database, one schema per Spider database
(names lower-cased, primary and foreign keys where the data allows), sets that database's
search_path to all of them, and writes OUT_DIR/spider-pg.jsonl: the Spider dev questions,
asked of the PostgreSQL database without saying which schema, with the gold SQL run on the
original SQLite file (`gold_db`); OUT_DIR/spider-pg-oracle.jsonl, the same questions asked of
the same PostgreSQL database with the search_path set to the question's own schema (the
oracle that knows the database); OUT_DIR/spider-sqlite.jsonl, the same questions on the
original SQLite files; and OUT_DIR/gold-tables.json
(the tables each gold query uses, as `schema.table`). With EVERY=K only every K-th question
(0, K, 2K, ...) is written, a sample that spans all the databases. PG_URL names the database to (re)create, e.g.
postgres://postgres@127.0.0.1:5432/spider_many.

`score` prints, for each `sqlora eval --out` report, EX and the recall of gold tables in the
tables the model was shown (a report of the whole-schema prompt, which shows every table, has
recall 100% by construction).

Uses psql; no Python packages beyond the standard library.
"""

import json
import os
import re
import sqlite3
import subprocess
import sys
from urllib.parse import urlparse


def q(name):
    return '"' + name.lower().replace('"', '""') + '"'


def lit(v):
    if v is None:
        return "NULL"
    if isinstance(v, bytes):
        return "NULL"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
            return "NULL"
        return repr(v)
    return "'" + str(v).replace("'", "''").replace("\x00", "") + "'"


def column_type(declared, values):
    d = (declared or "").lower()
    vals = [v for v in values if v is not None and v != ""]
    if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return "bigint"
    if vals and all(isinstance(v, (int, float)) for v in vals):
        return "double precision"
    if not vals and "int" in d:
        return "bigint"
    if not vals and any(k in d for k in ("real", "float", "double", "numeric", "decimal", "number")):
        return "double precision"
    return "text"


def psql(url, sql):
    r = subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=0", url], input=sql, text=True,
                       capture_output=True)
    return r.stderr


def load(data, url, out, every=1):
    dev = json.load(open(os.path.join(data, "spider/derived/dev_without_wta_1.json")))
    dbs = sorted({x["db_id"] for x in dev})
    u = urlparse(url)
    name = u.path.lstrip("/")
    admin = url.rsplit("/", 1)[0] + "/postgres"
    psql(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE);\nCREATE DATABASE {name};\n")
    fk_sql, errors = [], 0
    for db in dbs:
        path = os.path.join(data, "spider/database", db, db + ".sqlite")
        con = sqlite3.connect(path)
        con.text_factory = lambda b: b.decode("utf-8", "replace")
        ns = db.lower()
        sql = [f"CREATE SCHEMA {q(ns)};"]
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        for t in tables:
            cols = con.execute(f'PRAGMA table_info("{t}")').fetchall()
            rows = con.execute(f'SELECT * FROM "{t}"').fetchall()
            types = [column_type(c[2], [r[i] for r in rows]) for i, c in enumerate(cols)]
            defs = [f"{q(c[1])} {ty}" for c, ty in zip(cols, types)]
            sql.append(f"CREATE TABLE {q(ns)}.{q(t)} ({', '.join(defs)});")
            for i in range(0, len(rows), 500):
                chunk = rows[i:i + 500]
                vals = ",\n".join("(" + ", ".join(
                    lit(v) if ty == "text" or v is None or isinstance(v, (int, float)) else "NULL"
                    for v, ty in zip(r, types)) + ")" for r in chunk)
                sql.append(f"INSERT INTO {q(ns)}.{q(t)} VALUES {vals};")
            pk = [c[1] for c in sorted(cols, key=lambda c: c[5]) if c[5] > 0]
            if pk:
                sql.append(f"ALTER TABLE {q(ns)}.{q(t)} ADD PRIMARY KEY ({', '.join(map(q, pk))});")
            for fk in con.execute(f'PRAGMA foreign_key_list("{t}")').fetchall():
                ref, frm, to = fk[2], fk[3], fk[4]
                if to is None:
                    continue
                fk_sql.append(
                    f"ALTER TABLE {q(ns)}.{q(ref)} ADD UNIQUE ({q(to)});\n"
                    f"ALTER TABLE {q(ns)}.{q(t)} ADD FOREIGN KEY ({q(frm)}) "
                    f"REFERENCES {q(ns)}.{q(ref)} ({q(to)}) NOT VALID;")
        err = psql(url, "\n".join(sql) + "\n")
        errors += err.count("ERROR")
    # Foreign keys last (they may point at tables created later); some Spider foreign keys
    # point at columns that are not unique, and PostgreSQL refuses those.
    err = psql(url, "\n".join(fk_sql) + "\n")
    fk_failed = err.count("ERROR")
    path = ", ".join(["public"] + [q(d.lower()) for d in dbs])
    psql(url, f"ALTER DATABASE {name} SET search_path = {path};\n")
    os.makedirs(out, exist_ok=True)
    tables_json = {t["db_id"]: t for t in json.load(open(os.path.join(data, "spider/tables.json")))}
    gold_tables = []
    with open(os.path.join(out, "spider-pg.jsonl"), "w") as f, \
            open(os.path.join(out, "spider-sqlite.jsonl"), "w") as o, \
            open(os.path.join(out, "spider-pg-oracle.jsonl"), "w") as po:
        for i, x in enumerate(dev):
            if i % every:
                continue
            sqlite_path = os.path.abspath(os.path.join(
                data, "spider/database", x["db_id"], x["db_id"] + ".sqlite"))
            f.write(json.dumps({"question": x["question"], "db": url, "gold_db": sqlite_path,
                                "query": x["query"]}) + "\n")
            o.write(json.dumps({"question": x["question"], "db": sqlite_path,
                                "query": x["query"]}) + "\n")
            one = f"{url}?options=-c%20search_path%3D{x['db_id'].lower()}"
            po.write(json.dumps({"question": x["question"], "db": one, "gold_db": sqlite_path,
                                 "query": x["query"]}) + "\n")
            names = tables_json[x["db_id"]]["table_names_original"]
            used = sorted({f"{x['db_id'].lower()}.{names[tu[1]].lower()}"
                           for tu in table_units(x["sql"])})
            gold_tables.append(used)
    json.dump(gold_tables, open(os.path.join(out, "gold-tables.json"), "w"))
    print(f"loaded {len(dbs)} Spider databases into {name} ({errors} statements refused, "
          f"{fk_failed} of {2 * len(fk_sql)} key statements refused); "
          f"{len(gold_tables)} questions in {out}/spider-pg.jsonl")


def table_units(sql):
    """Every ("table_unit", index) in a parsed Spider query, nested queries included."""
    out = []
    def walk(node):
        if isinstance(node, dict):
            for tu in node.get("from", {}).get("table_units", []):
                if tu[0] == "table_unit":
                    out.append(tu)
                else:
                    walk(tu[1])
            for k, v in node.items():
                if k != "from":
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(sql)
    return out


def score(out, reports):
    gold = json.load(open(os.path.join(out, "gold-tables.json")))
    for path in reports:
        r = json.load(open(path))
        recs = r["records"]
        ex = sum(1 for x in recs if x["verdict"] == "correct")
        shown = [x for x in recs if x.get("tables")]
        hit = total = full = 0
        for x in shown:
            g = gold[x["index"]]
            s = {t.replace('"', "").lower() for t in x["tables"]}
            h = sum(1 for t in g if t in s)
            hit += h
            total += len(g)
            full += h == len(g)
        recall = f"{100 * hit / total:.1f}% of gold tables, all of them for {full}/{len(shown)}" \
            if total else "n/a (no selection recorded)"
        print(f"{path}: EX {100 * ex / len(recs):.1f}% ({ex}/{len(recs)}); recall {recall}")


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "load":
        load(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else 1)
    elif len(sys.argv) >= 4 and sys.argv[1] == "score":
        score(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
