//! PostgreSQL and MariaDB as users meet them: Chinook and Pagila introspected, every common
//! value type rendered, writes refused by the guard and — with the guard bypassed — by the
//! database itself, clean one-line errors, and the same questions answered on all three
//! backends with the real model. Each test makes its own database and drops it.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Server, ServerDb};
use sqlora::cancel::Cancel;
use sqlora::db::{self, Database, DbError, Limits};

use sqlora::schema::Schema;
use sqlora::sql::Value;

fn limits() -> Limits {
    Limits {
        max_rows: 1000,
        timeout: Duration::from_secs(10),
    }
}

fn norm(s: &str) -> String {
    s.to_ascii_lowercase().replace('_', "")
}

/// Foreign-key edges as `table.columns -> table.columns`, names lower-cased without `_`, so
/// Chinook's `InvoiceLine.TrackId` and `invoice_line.track_id` compare equal.
fn fk_edges(s: &Schema) -> BTreeSet<String> {
    s.tables
        .iter()
        .flat_map(|t| {
            t.foreign_keys.iter().map(move |fk| {
                format!(
                    "{}.{} -> {}.{}",
                    norm(&t.name),
                    norm(&fk.columns.join(",")),
                    norm(&fk.ref_table),
                    norm(&fk.ref_columns.join(","))
                )
            })
        })
        .collect()
}

fn chinook_sqlite() -> std::path::PathBuf {
    common::shared_data().join("sample_dbs/chinook/Chinook_Sqlite.sqlite")
}

#[test]
fn chinook_introspects_alike_on_sqlite_postgres_and_mariadb() {
    let pg = ServerDb::create(Server::Postgres, "intro");
    pg.load_chinook();
    let my = ServerDb::create(Server::MariaDb, "intro");
    my.load_chinook();
    let expected_edges: BTreeSet<String> = [
        "album.artistid -> artist.artistid",
        "customer.supportrepid -> employee.employeeid",
        "employee.reportsto -> employee.employeeid",
        "invoice.customerid -> customer.customerid",
        "invoiceline.invoiceid -> invoice.invoiceid",
        "invoiceline.trackid -> track.trackid",
        "playlisttrack.playlistid -> playlist.playlistid",
        "playlisttrack.trackid -> track.trackid",
        "track.albumid -> album.albumid",
        "track.genreid -> genre.genreid",
        "track.mediatypeid -> mediatype.mediatypeid",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for url in [
        chinook_sqlite().to_string_lossy().into_owned(),
        pg.url(),
        my.url(),
    ] {
        let mut db = db::open(&url).unwrap();
        let s = db.introspect().unwrap();
        let names: BTreeSet<String> = s.tables.iter().map(|t| norm(&t.name)).collect();
        assert_eq!(names.len(), 11, "{url}: {names:?}");
        assert_eq!(fk_edges(&s), expected_edges, "{url}");
        let count = |t: &str| s.table(t).map(|t| t.columns.len());
        let customer = if url.contains("sqlite") || url.starts_with("mariadb") {
            "Customer"
        } else {
            "customer"
        };
        assert_eq!(count(customer), Some(13), "{url}");
        let pk = &s.table(customer).unwrap().primary_key;
        assert_eq!(
            pk.iter().map(|c| norm(c)).collect::<Vec<_>>(),
            ["customerid"],
            "{url}"
        );
        let playlist_track = s
            .tables
            .iter()
            .find(|t| norm(&t.name) == "playlisttrack")
            .unwrap();
        assert_eq!(playlist_track.primary_key.len(), 2, "{url}: composite key");
        // Sample values show the model what the data looks like.
        let country = s.table(customer).unwrap().column("country").unwrap();
        assert_eq!(country.samples.len(), 3, "{url}: {country:?}");
        let context = sqlora::schema::render_context(&s, db.dialect());
        assert!(
            context.contains(&format!("'{}'", country.samples[0])),
            "{url}: {context}"
        );
        if url.starts_with("mariadb") {
            assert!(
                !context.contains('"'),
                "MySQL names are never double-quoted: {context}"
            );
        }
    }
}

#[test]
fn pagila_shows_enums_arrays_views_partitions_and_schemas() {
    let pg = ServerDb::create(Server::Postgres, "pagila");
    let schema_sql =
        std::fs::read_to_string(common::shared_data().join("sample_dbs/pagila/pagila-schema.sql"))
            .unwrap();
    pg.exec(&schema_sql);
    pg.exec(
        "CREATE SCHEMA crm;
         CREATE TABLE crm.lead (id int PRIMARY KEY, customer_id int REFERENCES public.customer);
         COMMENT ON TABLE crm.lead IS 'Prospects from the web form';
         COMMENT ON COLUMN crm.lead.customer_id IS 'set once the lead buys';",
    );
    let mut db = db::open(&pg.url()).unwrap();
    let s = db.introspect().unwrap();
    let film = s.table("film").expect("film");
    let rating = film.column("rating").unwrap();
    assert_eq!(rating.enum_values, ["G", "PG", "PG-13", "R", "NC-17"]);
    assert_eq!(film.column("special_features").unwrap().data_type, "text[]");
    assert!(film
        .column("rental_rate")
        .unwrap()
        .data_type
        .starts_with("numeric(4,2)"));
    assert_eq!(
        film.column("film_id")
            .unwrap()
            .default
            .as_deref()
            .map(|d| d.starts_with("nextval")),
        Some(true)
    );
    assert_eq!(
        s.table("actor_info").unwrap().kind,
        sqlora::schema::TableKind::View
    );
    // The partitioned payment table appears once, not once per partition.
    assert!(s.table("payment").is_some());
    assert!(s.tables.iter().all(|t| !t.name.starts_with("payment_p20")));
    assert!(
        s.table("crm.lead").is_none(),
        "crm is not on the search_path"
    );

    let mut db = db::connect(&pg.url(), &["public".into(), "crm".into()]).unwrap();
    let s = db.introspect().unwrap();
    let lead = s
        .table("crm.lead")
        .expect("crm.lead with --schema public,crm");
    assert_eq!(lead.comment.as_deref(), Some("Prospects from the web form"));
    let text = sqlora::schema::render_table(lead, db.dialect());
    assert!(
        text.starts_with("-- Prospects from the web form\nCREATE TABLE crm.lead ("),
        "{text}"
    );
    assert!(text.contains("-- set once the lead buys"), "{text}");
    assert!(text.contains("REFERENCES customer(customer_id)"), "{text}");
    let film_text = sqlora::schema::render_table(s.table("film").unwrap(), db.dialect());
    assert!(
        film_text.contains("one of 'G', 'PG', 'PG-13', 'R', 'NC-17'"),
        "{film_text}"
    );
}

fn first(db: &mut dyn Database, sql: &str) -> Vec<Value> {
    let out = db
        .query(sql, &limits(), &Cancel::new())
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    out.rows.into_iter().next().unwrap()
}

#[test]
fn postgres_values_render_like_psql_and_stay_exact() {
    let pg = ServerDb::create(Server::Postgres, "types");
    pg.exec(
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE TABLE v (n numeric(30,10), d date, t time, ts timestamp, tz timestamptz,
           iv interval, b boolean, j json, jb jsonb, ai int[], at text[], u uuid, by bytea,
           m mood, f float8, i8 bigint, nothing text);
         INSERT INTO v VALUES (12345678901234567890.0123456789, '2024-02-29', '13:45:01',
           '2024-02-29 13:45:01.5', '2024-02-29 13:45:01+00', '1 year 2 mons 3 days 04:05:06',
           true, '{\"a\": [1, 2]}', '{\"b\": null, \"a\": 1}', '{1,2,3}', '{x,\"y z\"}',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff10', 'happy', 0.1,
           9223372036854775807, NULL);",
    );
    let mut db = db::open(&pg.url()).unwrap();
    let row = first(
        db.as_mut(),
        "SELECT n, d, t, ts, tz AT TIME ZONE 'UTC', iv, b, j, jb, ai, at, u, by, m, f, i8, nothing FROM v",
    );
    let shown: Vec<String> = row.iter().map(Value::display).collect();
    assert_eq!(
        shown,
        [
            "12345678901234567890.0123456789",
            "2024-02-29",
            "13:45:01",
            "2024-02-29 13:45:01.5",
            "2024-02-29 13:45:01",
            "1 year 2 mons 3 days 04:05:06",
            "true",
            "{\"a\": [1, 2]}",
            "{\"a\": 1, \"b\": null}",
            "{1,2,3}",
            "{x,\"y z\"}",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "\\x00ff10",
            "happy",
            "0.1",
            "9223372036854775807",
            "NULL",
        ]
    );
    assert_eq!(
        row[0],
        Value::Decimal("12345678901234567890.0123456789".into())
    );
    assert_eq!(row[6], Value::Bool(true));
    assert_eq!(row[12], Value::Bytes(vec![0, 255, 16]));
    assert_eq!(row[15], Value::Int(i64::MAX));
    // JSON output keeps the decimal digit for digit; CSV leaves NULL empty.
    let json = sqlora::shell::render::value_json(&row[0]).to_string();
    assert_eq!(json, "12345678901234567890.0123456789");
    let outcome = sqlora::sql::Outcome {
        columns: vec!["n".into(), "nothing".into()],
        rows: vec![vec![row[0].clone(), row[16].clone()]],
        truncated: false,
    };
    assert_eq!(
        sqlora::shell::render::csv(&outcome),
        "n,nothing\n12345678901234567890.0123456789,\n"
    );
}

#[test]
fn mariadb_values_render_as_the_server_writes_them() {
    let my = ServerDb::create(Server::MariaDb, "types");
    my.exec(
        "CREATE TABLE v (n DECIMAL(30,10), d DATE, t TIME, dt DATETIME(3), b BOOLEAN,
           j JSON, bl BLOB, bi BIT(9), e ENUM('sad','ok','happy'), y YEAR, u BIGINT UNSIGNED,
           f DOUBLE, nothing TEXT);
         INSERT INTO v VALUES (12345678901234567890.0123456789, '2024-02-29', '13:45:01',
           '2024-02-29 13:45:01.500', TRUE, '{\"a\": [1, 2]}', X'00ff10', b'100000001',
           'happy', 2024, 18446744073709551615, 0.1, NULL);",
    );
    let mut db = db::open(&my.url()).unwrap();
    let row = first(db.as_mut(), "SELECT * FROM v");
    let shown: Vec<String> = row.iter().map(Value::display).collect();
    assert_eq!(
        shown,
        [
            "12345678901234567890.0123456789",
            "2024-02-29",
            "13:45:01",
            "2024-02-29 13:45:01.500",
            "1",
            "{\"a\": [1, 2]}",
            "\\x00ff10",
            "257",
            "happy",
            "2024",
            "18446744073709551615",
            "0.1",
            "NULL",
        ]
    );
    assert_eq!(
        row[0],
        Value::Decimal("12345678901234567890.0123456789".into())
    );
    assert_eq!(row[10], Value::Decimal("18446744073709551615".into()));
    let s = db.introspect().unwrap();
    assert_eq!(
        s.table("v").unwrap().column("e").unwrap().enum_values,
        ["sad", "ok", "happy"]
    );
}

fn assert_writes_fail(url: &str, writes: &[&str]) {
    let mut db = db::open(url).unwrap();
    let before = common::fingerprint(db.as_mut());
    assert!(
        before.iter().any(|(_, f)| !f.starts_with("0:")),
        "{before:?}"
    );
    for sql in writes {
        // The guard refuses each of these...
        let mut p = sqlora::pipeline::Pipeline::new(db::open(url).unwrap(), None).unwrap();
        assert!(
            p.run_sql(sql, &Cancel::new()).is_err(),
            "the guard let `{sql}` through on {url}"
        );
        // ...and with the guard bypassed, the database refuses it too.
        let err = db.query(sql, &limits(), &Cancel::new());
        assert!(err.is_err(), "{url} ran `{sql}`: {:?}", err.ok());
    }
    assert_eq!(
        common::fingerprint(db.as_mut()),
        before,
        "{url}: data changed"
    );
}

#[test]
fn postgres_refuses_writes_even_for_a_superuser() {
    let pg = ServerDb::create(Server::Postgres, "ro");
    pg.load_chinook();
    let marker = std::env::temp_dir().join(format!("sqlora_copy_{}", std::process::id()));
    let copy = format!("COPY (SELECT 1) TO PROGRAM 'touch {}'", marker.display());
    assert_writes_fail(
        &pg.url(),
        &[
            "DELETE FROM track",
            "UPDATE artist SET name = 'x'",
            "INSERT INTO genre VALUES (999, 'x')",
            "DROP TABLE playlist_track",
            "CREATE TABLE evil (x int)",
            "TRUNCATE invoice_line CASCADE",
            &copy,
            "WITH gone AS (DELETE FROM invoice_line RETURNING *) SELECT count(*) FROM gone",
            "SELECT 1; DELETE FROM album",
            "SET default_transaction_read_only = off",
            "ALTER TABLE album ADD COLUMN x int",
            "GRANT ALL ON album TO PUBLIC",
        ],
    );
    assert!(!marker.exists(), "COPY TO PROGRAM ran");

    // A statement past the time limit is stopped, and the connection stays usable.
    let mut db = db::open(&pg.url()).unwrap();
    let short = Limits {
        max_rows: 10,
        timeout: Duration::from_millis(500),
    };
    let err = db
        .query("SELECT pg_sleep(100)", &short, &Cancel::new())
        .unwrap_err();
    assert!(matches!(err, DbError::Timeout(_)), "{err}");
    assert_eq!(
        first(db.as_mut(), "SELECT count(*) FROM artist")[0],
        Value::Int(275)
    );
    // Ctrl-C from another thread cancels on the server.
    let cancel = Cancel::new();
    let c = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        c.set();
    });
    let t = std::time::Instant::now();
    let err = db
        .query("SELECT pg_sleep(100)", &limits(), &cancel)
        .unwrap_err();
    assert!(matches!(err, DbError::Cancelled), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // Unknown names come back from the server before anything runs.
    let err = db
        .query("SELECT nme FROM artist", &limits(), &Cancel::new())
        .unwrap_err();
    assert_eq!(err.to_string(), "column \"nme\" does not exist");
    // The row cap is applied by the cursor.
    let out = db
        .query("SELECT * FROM track", &short, &Cancel::new())
        .unwrap();
    assert_eq!((out.rows.len(), out.truncated), (10, true));
}

#[test]
fn mariadb_refuses_writes_even_for_root() {
    let my = ServerDb::create(Server::MariaDb, "ro");
    my.load_chinook();
    assert_writes_fail(
        &my.url(),
        &[
            "DELETE FROM Track",
            "UPDATE Artist SET Name = 'x'",
            "INSERT INTO Genre VALUES (999, 'x')",
            "DROP TABLE PlaylistTrack",
            "CREATE TABLE evil (x int)",
            "TRUNCATE InvoiceLine",
            "SELECT 1; DELETE FROM Album",
            "ALTER TABLE Album ADD COLUMN x int",
            "CREATE TEMPORARY TABLE t AS SELECT 1",
        ],
    );
    // INTO OUTFILE is a file write no transaction mode stops: the guard must refuse it.
    let mut p = sqlora::pipeline::Pipeline::new(db::open(&my.url()).unwrap(), None).unwrap();
    assert!(p
        .run_sql(
            "SELECT * FROM Album INTO OUTFILE '/tmp/sqlora_outfile'",
            &Cancel::new()
        )
        .is_err());

    let mut db = db::open(&my.url()).unwrap();
    let short = Limits {
        max_rows: 10,
        timeout: Duration::from_millis(500),
    };
    let err = db
        .query("SELECT SLEEP(100)", &short, &Cancel::new())
        .unwrap_err();
    assert!(matches!(err, DbError::Timeout(_)), "{err}");
    assert_eq!(
        first(db.as_mut(), "SELECT COUNT(*) FROM Artist")[0],
        Value::Int(275)
    );
    let cancel = Cancel::new();
    let c = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        c.set();
    });
    let err = db
        .query("SELECT SLEEP(100)", &limits(), &cancel)
        .unwrap_err();
    assert!(matches!(err, DbError::Cancelled), "{err}");
    let err = db
        .query("SELECT Nme FROM Artist", &limits(), &Cancel::new())
        .unwrap_err();
    assert!(err.to_string().contains("Unknown column 'Nme'"), "{err}");
    let out = db
        .query("SELECT * FROM Track", &short, &Cancel::new())
        .unwrap();
    assert_eq!((out.rows.len(), out.truncated), (10, true));
    // The connection is still in order after the capped read.
    assert_eq!(
        first(db.as_mut(), "SELECT COUNT(*) FROM Genre")[0],
        Value::Int(25)
    );
}

#[test]
fn connection_failures_are_one_clear_line() {
    let bin = env!("CARGO_BIN_EXE_sqlora");
    let cases = [
        ("postgres://postgres@127.0.0.1:1/x", "127.0.0.1:1"),
        (
            "postgres://postgres:hunter2@127.0.0.1:5432/sqlora_no_such_db",
            "does not exist",
        ),
        ("mysql://root@127.0.0.1:1/x", "refused"),
        (
            "mariadb://root@127.0.0.1:3306/sqlora_no_such_db",
            "Unknown database",
        ),
        ("mysql://root@127.0.0.1:3306", "no database named"),
        ("oracle://x/y", "unsupported database URL"),
    ];
    for (url, want) in cases {
        let out = std::process::Command::new(bin)
            .args(["ask", "--offline", "--db", url, "how many?"])
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{url}: {err}");
        assert!(err.contains(want), "{url}: {err}");
        assert!(!err.contains("hunter2"), "password leaked: {err}");
    }
}

#[derive(serde::Deserialize)]
struct Question {
    question: String,
    sqlite: String,
    mysql: Option<String>,
    postgres: String,
}

#[test]
fn the_same_questions_get_the_same_answers_on_all_three_backends() {
    let model = common::model_path();
    let questions: Vec<Question> =
        serde_json::from_str(include_str!("data/chinook_questions.json")).unwrap();
    let pg = ServerDb::create(Server::Postgres, "ask");
    pg.load_chinook();
    let my = ServerDb::create(Server::MariaDb, "ask");
    my.load_chinook();
    let load = sqlora::llm::LoadOptions {
        kv_dir: sqlora::paths::cache_dir().ok().map(|d| d.join("kv")),
        weights_dir: sqlora::paths::cache_dir().ok().map(|d| d.join("weights")),
        ..Default::default()
    };
    let mut engine = Some(sqlora::llm::Engine::load(&model, &load).unwrap());
    let backends = [
        ("sqlite", chinook_sqlite().to_string_lossy().into_owned()),
        ("postgres", pg.url()),
        ("mariadb", my.url()),
    ];
    let mut report = Vec::new();
    for (name, url) in &backends {
        let mut p = sqlora::pipeline::Pipeline::new(db::open(url).unwrap(), engine.take()).unwrap();
        let mut gold_db = db::open(url).unwrap();
        let mut ok = 0;
        for q in &questions {
            let gold_sql = match *name {
                "postgres" => &q.postgres,
                "mariadb" => q.mysql.as_ref().unwrap_or(&q.sqlite),
                _ => &q.sqlite,
            };
            let gold = gold_db.query(gold_sql, &limits(), &Cancel::new()).unwrap();
            let order = sqlora::eval::compare::has_top_level_order_by(gold_sql);
            let verdict = match p.ask(&q.question, &Cancel::new()) {
                Ok(a)
                    if sqlora::eval::compare::results_match(&gold.rows, &a.outcome.rows, order) =>
                {
                    ok += 1;
                    format!("ok    {}", a.sql)
                }
                Ok(a) => format!("WRONG {}", a.sql),
                Err(e) => format!("ERROR {}", e.to_string().replace('\n', " ")),
            };
            eprintln!("[{name}] {} -> {verdict}", q.question);
        }
        report.push((name.to_string(), ok));
        engine = p.take_engine();
    }
    eprintln!("Chinook: {report:?} of {} each", questions.len());
    for (name, ok) in &report {
        assert!(
            *ok >= 8,
            "{name}: only {ok}/10 Chinook questions right ({report:?})"
        );
    }
}
