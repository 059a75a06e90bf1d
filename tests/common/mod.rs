//! Shared helpers for integration tests.
#![allow(dead_code)]

pub mod tiny;

use std::path::PathBuf;

use sqlora::sql::{Outcome, Value};

/// The default model, which `.ci/run` fetches before the tests (`sqlora model pull`).
pub fn model_path() -> PathBuf {
    let opts = sqlora::cli::ModelOpts {
        model: std::env::var("SQLORA_TEST_MODEL").ok(),
        offline: true,
        adapter: None,
        merge: false,
        device: sqlora::hub::device::DeviceChoice::Auto,
        backend: sqlora::llm::remote::BackendChoice::Local,
    };
    sqlora::app::session::model_path(&opts).unwrap_or_else(|e| {
        panic!("these tests need the real model: {e:#} (run `cargo run --release -- model pull`)")
    })
}

/// A fresh demo database in its own temporary folder.
pub fn demo_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = sqlora::db::demo::ensure(dir.path()).unwrap();
    (dir, path)
}

fn norm(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Bool(b) => format!("{:.2}", u8::from(*b) as f64),
        Value::Int(i) => format!("{:.2}", *i as f64),
        Value::Decimal(d) => format!("{:.2}", d.parse::<f64>().unwrap_or(f64::NAN)),
        Value::Float(f) => format!("{:.2}", f),
        Value::Text(s) => s.clone(),
        Value::Bytes(b) => format!("{b:?}"),
    }
}

/// Result sets as multisets of rows, each row a multiset of values (column order ignored),
/// numbers compared to 2 decimals.
pub fn same_rows(a: &Outcome, b: &Outcome) -> bool {
    let key = |o: &Outcome| {
        let mut rows: Vec<Vec<String>> = o
            .rows
            .iter()
            .map(|r| {
                let mut r: Vec<String> = r.iter().map(norm).collect();
                r.sort();
                r
            })
            .collect();
        rows.sort();
        rows
    };
    a.columns.len() == b.columns.len() && key(a) == key(b)
}

pub fn sha256(path: &std::path::Path) -> String {
    sqlora::hub::registry::sha256_file(path).unwrap()
}

/// The shared data directory (Spider and the sample databases): `$SQLORA_EVAL_DATA`, else
/// `../shared/data` beside the checkout. CI always has it; elsewhere the test fails saying so.
pub fn shared_data() -> PathBuf {
    let dir = std::env::var_os("SQLORA_EVAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    assert!(
        dir.join(sqlora::eval::SPIDER_DEV).is_file(),
        "this test needs the shared data directory with Spider ({} is missing); set \
         SQLORA_EVAL_DATA to the directory that holds spider/",
        dir.join(sqlora::eval::SPIDER_DEV).display()
    );
    dir
}

/// Which server a [`ServerDb`] lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Postgres,
    MariaDb,
}

/// A uniquely named database on the local PostgreSQL or MariaDB server (the CI services),
/// created for one test and dropped afterwards. The admin URL comes from
/// `SQLORA_TEST_PG` / `SQLORA_TEST_MYSQL` (default: the local superuser without password).
pub struct ServerDb {
    pub server: Server,
    pub name: String,
    admin: String,
}

impl ServerDb {
    pub fn create(server: Server, tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "sqlora_t_{tag}_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let admin = match server {
            Server::Postgres => std::env::var("SQLORA_TEST_PG")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
            Server::MariaDb => std::env::var("SQLORA_TEST_MYSQL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into()),
        };
        let db = Self {
            server,
            name,
            admin,
        };
        db.admin_exec(&format!("CREATE DATABASE {}", db.name));
        db
    }

    /// The database's URL, as `--db` takes it.
    pub fn url(&self) -> String {
        let base = self.admin.rsplit_once('/').unwrap().0;
        let base = match self.server {
            Server::MariaDb => base.replacen("mysql://", "mariadb://", 1),
            Server::Postgres => base.to_string(),
        };
        format!("{base}/{}", self.name)
    }

    fn admin_exec(&self, sql: &str) {
        self.run_on(&self.admin, sql).unwrap_or_else(|e| {
            panic!(
                "{:?} server at {} failed `{sql}`: {e} (is it running? .ci/run starts it)",
                self.server, self.admin
            )
        });
    }

    fn run_on(&self, url: &str, sql: &str) -> Result<(), sqlx::Error> {
        try_exec(url, sql)
    }

    /// Runs a script (many statements) in this database as the superuser.
    pub fn exec(&self, sql: &str) {
        self.run_on(&self.url(), sql)
            .unwrap_or_else(|e| panic!("script failed in {}: {e}", self.name));
    }

    /// Chinook from `../shared/data/sample_dbs/chinook`, without its own CREATE/USE lines.
    pub fn load_chinook(&self) {
        let file = match self.server {
            Server::Postgres => "Chinook_PostgreSql.sql",
            Server::MariaDb => "Chinook_MySql.sql",
        };
        let path = shared_data().join("sample_dbs/chinook").join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let script: String = text
            .lines()
            .filter(|l| {
                let t = l.trim_start().to_ascii_uppercase();
                !(t.starts_with("DROP DATABASE")
                    || t.starts_with("CREATE DATABASE")
                    || t.starts_with("USE ")
                    || t.starts_with("\\C"))
            })
            .collect::<Vec<_>>()
            .join("\n");
        self.exec(&script);
    }
}

impl Drop for ServerDb {
    fn drop(&mut self) {
        let sql = match self.server {
            Server::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            Server::MariaDb => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        let _ = self.run_on(&self.admin, &sql);
    }
}

/// Row count and checksum of every table, read through sqlora's own read-only path.
pub fn fingerprint(db: &mut dyn sqlora::db::Database) -> Vec<(String, String)> {
    use sqlora::sql::Dialect;
    let schema = db.introspect().unwrap();
    let dialect = db.dialect();
    let limits = sqlora::db::Limits::default();
    schema
        .tables
        .iter()
        .filter(|t| t.kind == sqlora::schema::TableKind::Table)
        .map(|t| {
            let name = t.qualified_name(dialect);
            let cols: Vec<String> = t
                .columns
                .iter()
                .map(|c| sqlora::schema::ident(&c.name, dialect))
                .collect();
            let sql = match dialect {
                Dialect::MySql => format!(
                    "SELECT CONCAT(COUNT(*), ':', COALESCE(SUM(CRC32(CONCAT_WS('|', {}))), 0)) FROM {name}",
                    cols.join(", ")
                ),
                Dialect::Postgres => format!(
                    "SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {name} t"
                ),
                Dialect::Sqlite => format!(
                    "SELECT count(*) || ':' || coalesce(sum(length(quote({}))), 0) || ':' || \
                     coalesce(group_concat(quote({})), '') FROM {name}",
                    cols.join(") || quote("),
                    cols.first().cloned().unwrap_or_else(|| "1".into())
                ),
            };
            let out = db
                .query(&sql, &limits, &sqlora::cancel::Cancel::new())
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let fp = out.rows[0][0].display();
            (name, sha256_text(&fp))
        })
        .collect()
}

fn sha256_text(s: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(s.as_bytes()))
}

/// The largest absolute difference between two tensors of one shape.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// A private PostgreSQL cluster for one test, started from the installed server binaries with
/// every statement logged (`log_statement = 'all'`) to a file the test reads: the database-side
/// record of what reached the server. Stopped and removed on drop.
pub struct PgTestCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
    pub port: u16,
}

impl PgTestCluster {
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| {
                let mut v: Vec<PathBuf> = d
                    .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                    .filter(|p| p.join("initdb").is_file())
                    .collect();
                v.sort();
                v.pop()
            })
            .expect("PostgreSQL's server binaries (initdb, pg_ctl) are not in /usr/lib/postgresql/*/bin");
        // initdb refuses to run as root: run the cluster as the `postgres` user then.
        let uid = std::process::Command::new("id").arg("-u").output().unwrap();
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let dir = tempfile::Builder::new()
            .prefix("sqlora-pgtest")
            .tempdir()
            .unwrap();
        if as_postgres {
            let ok = std::process::Command::new("chown")
                .args(["-R", "postgres", &dir.path().to_string_lossy()])
                .status()
                .unwrap()
                .success();
            assert!(
                ok,
                "cannot hand {} to the postgres user",
                dir.path().display()
            );
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = PgTestCluster {
            dir,
            bin,
            as_postgres,
            port,
        };
        let data = c.dir.path().join("data");
        c.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c log_statement=all \
             -c logging_collector=off -c fsync=off",
            c.dir.path().display()
        );
        c.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-o",
                &opts,
                "-l",
                &c.log_path().to_string_lossy(),
                "-w",
                "start",
            ],
        );
        c
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let out = if self.as_postgres {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            std::process::Command::new(&exe).args(args).output()
        }
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for PgTestCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.run(
                "pg_ctl",
                &["-D", &data.to_string_lossy(), "-m", "immediate", "stop"],
            )
        }));
    }
}

/// Runs a script (one or more statements) on a PostgreSQL or MySQL/MariaDB URL with sqlx,
/// outside sqlora.
pub fn try_exec(url: &str, sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = url.replacen("mariadb://", "mysql://", 1);
    let sql = sql.to_string();
    rt.block_on(async move {
        if url.starts_with("postgres") {
            let mut c = sqlx::PgConnection::connect(&url).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await?;
            c.close().await
        } else {
            let mut c = sqlx::MySqlConnection::connect(&url).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await?;
            c.close().await
        }
    })
}

/// [`try_exec`] for set-up and probes that must work.
pub fn admin_exec(url: &str, sql: &str) {
    try_exec(url, sql).unwrap_or_else(|e| panic!("`{}`: {e}", sqlora::db::redact_url(url)));
}

/// Runs `cmd` with `input` on its stdin and its stdout and stderr captured. The input is
/// written from another thread, so a child that prints more than a pipe holds before it has
/// read everything cannot block the test.
pub fn feed(cmd: &mut std::process::Command, input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}
