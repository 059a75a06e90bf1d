//! Introspection speed on a 1000-table schema, on PostgreSQL and MariaDB (the local servers,
//! or `SQLORA_TEST_PG` / `SQLORA_TEST_MYSQL`). Creates a scratch database with 1000 tables
//! (5 columns each, a primary key, a foreign key to the previous table, comments on some),
//! times `Database::introspect` five times, prints min and median, then times building the
//! value index (distinct values of every text column) and choosing the tables for 20 questions
//! within the default context budget, and drops the database.
//! Run with `cargo bench --bench introspect` (`BENCH_TABLES=N` to change the size).

use std::time::Instant;

use sqlx::{AssertSqlSafe, Connection};

fn script(tables: usize, postgres: bool) -> String {
    let mut s = String::new();
    for i in 0..tables {
        let fk = if i == 0 {
            String::new()
        } else {
            format!(", prev_id INT REFERENCES t{:04}(id)", i - 1)
        };
        let comment = if postgres {
            ""
        } else if i % 10 == 0 {
            " COMMENT 'a commented table'"
        } else {
            ""
        };
        s.push_str(&format!(
            "CREATE TABLE t{i:04} (id INT PRIMARY KEY, name VARCHAR(80) NOT NULL, \
             created DATE, amount DECIMAL(12,2){fk}){comment};\n"
        ));
        s.push_str(&format!(
            "INSERT INTO t{i:04} (id, name) VALUES (1, 'alpha {i}'), (2, 'beta'), (3, 'gamma'), \
             (4, 'city{i}'), (5, 'delta {i}');\n"
        ));
        if postgres && i % 10 == 0 {
            s.push_str(&format!(
                "COMMENT ON TABLE t{i:04} IS 'a commented table';\n"
            ));
        }
    }
    s
}

fn main() -> anyhow::Result<()> {
    let tables: usize = std::env::var("BENCH_TABLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let name = format!("sqlora_bench_{}", std::process::id());
    let servers = [
        (
            "PostgreSQL",
            std::env::var("SQLORA_TEST_PG")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        ),
        (
            "MariaDB",
            std::env::var("SQLORA_TEST_MYSQL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into()),
        ),
    ];
    for (label, admin) in servers {
        let postgres = label == "PostgreSQL";
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        let admin_exec = |sql: String| -> anyhow::Result<()> {
            rt.block_on(async {
                if postgres {
                    let mut c = sqlx::PgConnection::connect(&admin).await?;
                    sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut c).await?;
                } else {
                    let mut c = sqlx::MySqlConnection::connect(&admin).await?;
                    sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut c).await?;
                }
                Ok(())
            })
        };
        let drop = if postgres {
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        } else {
            format!("DROP DATABASE IF EXISTS {name}")
        };
        admin_exec(drop.clone())?;
        admin_exec(format!("CREATE DATABASE {name}"))?;
        let t = Instant::now();
        let ddl = script(tables, postgres);
        rt.block_on(async {
            if postgres {
                let mut c = sqlx::PgConnection::connect(&url).await?;
                sqlx::raw_sql(AssertSqlSafe(ddl)).execute(&mut c).await?;
            } else {
                let mut c = sqlx::MySqlConnection::connect(&url).await?;
                sqlx::raw_sql(AssertSqlSafe(ddl)).execute(&mut c).await?;
            }
            Ok::<_, sqlx::Error>(())
        })?;
        println!(
            "{label}: created {tables} tables in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let result = (|| -> anyhow::Result<()> {
            let t = Instant::now();
            let mut db = sqlora::db::open(&url)?;
            let connect = t.elapsed().as_secs_f64();
            let mut times = Vec::new();
            let mut shape = (0, 0, 0);
            for _ in 0..5 {
                let t = Instant::now();
                let s = db.introspect()?;
                times.push(t.elapsed().as_secs_f64());
                shape = (
                    s.tables.len(),
                    s.tables.iter().map(|t| t.columns.len()).sum::<usize>(),
                    s.tables.iter().map(|t| t.foreign_keys.len()).sum::<usize>(),
                );
            }
            times.sort_by(f64::total_cmp);
            let context = {
                let s = db.introspect()?;
                sqlora::schema::render_context(&s, db.dialect()).len()
            };
            println!(
                "{label}: connect {:.3} s; introspect {} tables, {} columns, {} foreign keys: \
                 min {:.3} s, median {:.3} s over 5 runs; context {} KB",
                connect,
                shape.0,
                shape.1,
                shape.2,
                times[0],
                times[2],
                context / 1024
            );
            let mut p = sqlora::pipeline::Pipeline::new(db, None)?;
            let cancel = sqlora::cancel::Cancel::new();
            let t = Instant::now();
            p.prepare_selection(&cancel)?;
            println!(
                "{label}: value index of {} text columns built in {:.2} s",
                shape.0,
                t.elapsed().as_secs_f64()
            );
            let mut sel = Vec::new();
            for q in 0..20 {
                let question = format!(
                    "How many rows of table t{:04} are in city{} and have amount over 10?",
                    q * 37 % tables,
                    q * 37 % tables
                );
                let t = Instant::now();
                p.context_for(&question, &cancel)?;
                sel.push(t.elapsed().as_secs_f64() * 1000.0);
                let chosen = p.last_selection.as_ref().map_or(0, |s| s.tables.len());
                assert!(chosen > 0, "nothing chosen for {question}");
            }
            sel.sort_by(f64::total_cmp);
            println!(
                "{label}: table selection per question: median {:.1} ms, max {:.1} ms over 20",
                sel[10], sel[19]
            );
            Ok(())
        })();
        admin_exec(drop)?;
        result?;
    }
    Ok(())
}
