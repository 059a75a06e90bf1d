//! Least privilege as a second wall, and the session settings that make the server read SQL
//! as the guard does: the README's "A read-only login" statements, read from README.md and run
//! on the real PostgreSQL and MariaDB servers, give logins that sqlora connects with and does
//! not warn about, while `postgres`, `root` and logins with file, signal, admin or write
//! privileges are named with their powers; `ask` puts that warning on stderr only, and
//! `SQLORA_QUIET_PRIVILEGES=1` silences it; PostgreSQL sessions keep
//! `standard_conforming_strings` on and MariaDB sessions run without `ANSI_QUOTES` and
//! `NO_BACKSLASH_ESCAPES`.
//!
//! Every login is made here with a unique name and dropped afterwards (tests run in
//! parallel, also with other test binaries on the same servers); nothing changes the
//! servers' global settings.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Server, ServerDb};
use sqlora::cancel::Cancel;
use sqlora::db::{self, Database, Limits};

use sqlora::sql::Value;

fn limits() -> Limits {
    Limits {
        max_rows: 100,
        timeout: Duration::from_secs(10),
    }
}

fn admin_url(server: Server) -> String {
    match server {
        Server::Postgres => std::env::var("SQLORA_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        Server::MariaDb => std::env::var("SQLORA_TEST_MYSQL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into()),
    }
}

/// Runs `sql` (one or more statements) on `url` with sqlx, outside sqlora.
fn raw(_server: Server, url: &str, sql: &str) -> Result<(), sqlx::Error> {
    common::try_exec(url, sql)
}

/// A login name no other test (or test process) uses at the same time.
fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "sqlora_{tag}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        nanos % 100_000
    )
}

/// Drops logins and roles when the test ends, passing or failing. Declare it before the
/// [`ServerDb`] so the database (which holds their grants) is dropped first.
struct Cleanup {
    server: Server,
    sql: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for sql in &self.sql {
            if let Err(e) = raw(self.server, &admin_url(self.server), sql) {
                eprintln!("cleanup `{sql}` failed: {e}");
            }
        }
    }
}

/// `db`'s URL with `login` and password `change-me` instead of the admin login.
fn url_as(db: &ServerDb, login: &str) -> String {
    let url = db.url();
    let (scheme, rest) = url.split_once("://").unwrap();
    let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{login}:change-me@{host_and_db}")
}

/// The README's fenced `sql` block in "A read-only login" that contains `marker`.
fn readme_block(marker: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("### A read-only login")
        .expect("README has a section \"A read-only login\"");
    let section = &readme[start + 3..];
    let section = &section[..section.find("\n#").unwrap_or(section.len())];
    section
        .split("```sql\n")
        .skip(1)
        .map(|b| &b[..b.find("```").expect("closed code block")])
        .find(|b| b.contains(marker))
        .unwrap_or_else(|| panic!("no ```sql block with `{marker}` in \"A read-only login\""))
        .to_string()
}

/// The README's PostgreSQL or MySQL lines for `login` on database `db`.
fn readme_lines(marker: &str, login: &str, db: &str) -> String {
    let block = readme_block(marker);
    assert!(
        block.contains("sqlora_ro") && block.contains("shop"),
        "{block}"
    );
    block.replace("sqlora_ro", login).replace("shop", db)
}

fn one_value(db: &mut dyn Database, sql: &str) -> Vec<Value> {
    let out = db
        .query(sql, &limits(), &Cancel::new())
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(out.rows.len(), 1, "{sql}: {out:?}");
    out.rows[0].clone()
}

fn text(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => other.display(),
    }
}

#[test]
fn postgres_read_only_login_from_the_readme_is_not_warned_about_and_postgres_is() {
    let login = unique("ro");
    let _cleanup = Cleanup {
        server: Server::Postgres,
        sql: vec![format!("DROP ROLE IF EXISTS {login}")],
    };
    let db = ServerDb::create(Server::Postgres, "ro");
    db.exec(
        "CREATE TABLE before_grant (id int PRIMARY KEY, name text); \
             INSERT INTO before_grant VALUES (1, 'a');",
    );
    let lines = readme_lines("CREATE ROLE", &login, &db.name);
    for kind in [
        "CREATE ROLE",
        "GRANT CONNECT",
        "GRANT USAGE",
        "GRANT SELECT",
        "ALTER DEFAULT PRIVILEGES",
    ] {
        assert!(lines.contains(kind), "the README lost `{kind}`:\n{lines}");
    }
    db.exec(&lines);
    // ALTER DEFAULT PRIVILEGES: a table made afterwards is readable too.
    db.exec("CREATE TABLE after_grant (id int); INSERT INTO after_grant VALUES (2);");

    let ro_url = url_as(&db, &login);
    {
        let mut ro = db::connect(&ro_url, &[]).unwrap();
        let powers = ro.powers();
        assert_eq!(powers.login, login);
        assert_eq!(powers.warning(), None, "{powers:?}");
        assert_eq!(
            one_value(ro.as_mut(), "SELECT name FROM before_grant"),
            [Value::Text("a".into())]
        );
        assert_eq!(
            one_value(ro.as_mut(), "SELECT id FROM after_grant"),
            [Value::Int(2)]
        );
        assert_eq!(ro.introspect().unwrap().tables.len(), 2);
    }
    // The second wall itself: outside sqlora's read-only transaction the login still
    // cannot write.
    let err = raw(
        Server::Postgres,
        &ro_url,
        "INSERT INTO before_grant VALUES (3, 'b')",
    )
    .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");

    let su = db::connect(&db.url(), &[]).unwrap();
    let warning = su.powers().warning().expect("postgres is warned about");
    assert!(!warning.contains('\n'), "{warning}");
    assert!(
        warning.starts_with("warning: login postgres is a superuser and can read server files"),
        "{warning}"
    );
    for name in [
        "SUPERUSER",
        "pg_read_server_files",
        "pg_write_server_files",
        "pg_execute_server_program",
        "pg_signal_backend",
        "REPLICATION",
        "CREATEROLE",
    ] {
        assert!(warning.contains(name), "{name} missing: {warning}");
    }
    assert!(
        warning.ends_with("see README \"A read-only login\""),
        "{warning}"
    );
}

#[test]
fn postgres_inherited_roles_attributes_and_writes_are_named() {
    let group = unique("grp");
    let admin = unique("adm");
    let writer = unique("wr");
    let _cleanup = Cleanup {
        server: Server::Postgres,
        sql: vec![
            format!("DROP ROLE IF EXISTS {admin}"),
            format!("DROP ROLE IF EXISTS {writer}"),
            format!("DROP ROLE IF EXISTS {group}"),
        ],
    };
    let db = ServerDb::create(Server::Postgres, "powers");
    db.exec(&format!(
        "CREATE TABLE t (id int); \
         CREATE ROLE {group} NOLOGIN; \
         GRANT pg_signal_backend TO {group}; \
         CREATE ROLE {admin} LOGIN CREATEDB IN ROLE {group}; \
         GRANT SELECT ON t TO {admin}; \
         CREATE ROLE {writer} LOGIN; \
         GRANT SELECT, UPDATE ON t TO {writer};"
    ));

    let a = db::connect(&url_as(&db, &admin), &[]).unwrap();
    let w = a.powers().warning().expect("warned");
    assert!(
        w.starts_with(&format!(
            "warning: login {admin} can signal or kill other sessions and create databases \
             (pg_signal_backend, CREATEDB);"
        )),
        "{w}"
    );

    let wr = db::connect(&url_as(&db, &writer), &[]).unwrap();
    let w = wr.powers().warning().expect("noted");
    assert!(
        w.starts_with(&format!(
            "note: login {writer} can write data or change the schema (UPDATE);"
        )),
        "{w}"
    );
}

#[test]
fn mariadb_read_only_login_from_the_readme_is_not_warned_about_and_root_is() {
    let login = unique("ro");
    let _cleanup = Cleanup {
        server: Server::MariaDb,
        sql: vec![format!("DROP USER IF EXISTS '{login}'@'%'")],
    };
    let db = ServerDb::create(Server::MariaDb, "ro");
    db.exec(
        "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(10)); \
             INSERT INTO t VALUES (1, 'a');",
    );
    let lines = readme_lines("CREATE USER", &login, &db.name);
    assert!(lines.contains("GRANT SELECT ON"), "{lines}");
    db.exec(&lines);

    let ro_url = url_as(&db, &login);
    {
        let mut ro = db::connect(&ro_url, &[]).unwrap();
        let powers = ro.powers();
        assert_eq!(powers.login, format!("{login}@%"));
        assert_eq!(powers.warning(), None, "{powers:?}");
        assert_eq!(
            one_value(ro.as_mut(), "SELECT name FROM t"),
            [Value::Text("a".into())]
        );
    }
    let err = raw(Server::MariaDb, &ro_url, "INSERT INTO t VALUES (2, 'b')").unwrap_err();
    assert!(err.to_string().contains("denied"), "{err}");

    let root = db::connect(&db.url(), &[]).unwrap();
    let warning = root.powers().warning().expect("root is warned about");
    assert!(!warning.contains('\n'), "{warning}");
    assert!(
        warning.starts_with("warning: login root@") && warning.contains(" is a superuser and can "),
        "{warning}"
    );
    for part in [
        "read server files",
        "shut the server down",
        "(ALL PRIVILEGES, GRANT OPTION)",
    ] {
        assert!(warning.contains(part), "{part} missing: {warning}");
    }
}

#[test]
fn mariadb_file_process_role_and_write_privileges_are_named() {
    let admin = unique("adm");
    let writer = unique("wr");
    let role = unique("role");
    let _cleanup = Cleanup {
        server: Server::MariaDb,
        sql: vec![
            format!("DROP USER IF EXISTS '{admin}'@'%'"),
            format!("DROP USER IF EXISTS '{writer}'@'%'"),
            format!("DROP ROLE IF EXISTS {role}"),
        ],
    };
    let db = ServerDb::create(Server::MariaDb, "powers");
    let name = &db.name;
    db.exec(&format!(
        "CREATE ROLE {role}; \
         GRANT SHUTDOWN ON *.* TO {role}; \
         CREATE USER '{admin}'@'%' IDENTIFIED BY 'change-me'; \
         GRANT FILE, PROCESS ON *.* TO '{admin}'@'%'; \
         GRANT SELECT ON {name}.* TO '{admin}'@'%'; \
         GRANT {role} TO '{admin}'@'%'; \
         SET DEFAULT ROLE {role} FOR '{admin}'@'%'; \
         CREATE USER '{writer}'@'%' IDENTIFIED BY 'change-me'; \
         GRANT SELECT, INSERT, DELETE ON {name}.* TO '{writer}'@'%';"
    ));

    let a = db::connect(&url_as(&db, &admin), &[]).unwrap();
    let w = a.powers().warning().expect("warned");
    assert!(
        w.starts_with(&format!(
            "warning: login {admin}@% can read server files, write server files, see other \
             sessions' queries and shut the server down (FILE, PROCESS, SHUTDOWN);"
        )),
        "{w}"
    );

    let wr = db::connect(&url_as(&db, &writer), &[]).unwrap();
    let w = wr.powers().warning().expect("noted");
    assert!(
        w.starts_with(&format!(
            "note: login {writer}@% can write data or change the schema (INSERT, DELETE);"
        )),
        "{w}"
    );
}

#[test]
fn sqlite_logins_hold_no_powers() {
    let (_dir, path) = common::demo_db();
    let db = db::open(&path.to_string_lossy()).unwrap();
    assert_eq!(db.powers().warning(), None);
}

#[test]
fn postgres_sessions_read_backslashes_as_the_guard_does() {
    let db = ServerDb::create(Server::Postgres, "scs");
    // A database whose default reads backslash escapes in '…' (as PostgreSQL did before 9.1).
    db.exec(&format!(
        "ALTER DATABASE {} SET standard_conforming_strings = off",
        db.name
    ));
    // Outside sqlora the default holds: 'a\b' is 'a' and a backspace.
    raw(
        Server::Postgres,
        &db.url(),
        "DO $$ BEGIN IF length('a\\b') <> 2 THEN RAISE 'default not applied'; END IF; END $$",
    )
    .unwrap();
    let mut pg = db::connect(&db.url(), &[]).unwrap();
    let row = one_value(
        pg.as_mut(),
        "SELECT current_setting('standard_conforming_strings'), 'a\\b', length('a\\b')",
    );
    assert_eq!(
        row,
        [
            Value::Text("on".into()),
            Value::Text("a\\b".into()),
            Value::Int(3)
        ]
    );
}

#[test]
fn mariadb_sessions_lex_quotes_and_backslashes_as_the_guard_does() {
    let db = ServerDb::create(Server::MariaDb, "mode");
    let mut my = db::connect(&db.url(), &[]).unwrap();
    let check = |my: &mut dyn Database| {
        let row = one_value(my, "SELECT @@SESSION.sql_mode, 'a\\'b', \"x\"");
        let mode = text(&row[0]);
        for bad in ["ANSI_QUOTES", "NO_BACKSLASH_ESCAPES", "ORACLE"] {
            assert!(!mode.split(',').any(|m| m == bad), "{bad} in {mode}");
        }
        // The rest of the mode stays (sqlx's PIPES_AS_CONCAT, the server's own).
        assert!(mode.contains("PIPES_AS_CONCAT"), "{mode}");
        assert_eq!(text(&row[1]), "a'b");
        assert_eq!(text(&row[2]), "x");
    };
    check(my.as_mut());
    // Whatever a session (or a global sql_mode, which tests must not change on a shared
    // server) sets, the next statement runs under the mode the guard expects. This SET goes
    // around the guard, which would refuse it.
    for mode in ["ANSI_QUOTES,NO_BACKSLASH_ESCAPES", "ANSI", "ORACLE"] {
        my.query(
            &format!("SET SESSION sql_mode = '{mode}'"),
            &limits(),
            &Cancel::new(),
        )
        .unwrap();
        check(my.as_mut());
    }
}

#[test]
fn ask_warns_on_stderr_only_and_can_be_silenced() {
    let db = ServerDb::create(Server::Postgres, "warn");
    db.exec("CREATE TABLE t (id int)");
    let dir = tempfile::tempdir().unwrap();
    let run = |quiet: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sqlora"));
        c.env("SQLORA_DATA_DIR", dir.path())
            .env("SQLORA_CACHE_DIR", dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("SQLORA_MODEL")
            .env_remove("SQLORA_QUIET_PRIVILEGES")
            .stdin(Stdio::null());
        if let Some(q) = quiet {
            c.env("SQLORA_QUIET_PRIVILEGES", q);
        }
        // No model: the warning comes when the database opens, before the model loads.
        let missing = dir.path().join("missing.gguf");
        c.args([
            "ask",
            "--offline",
            "--format",
            "json",
            "--db",
            &db.url(),
            "--model",
        ])
        .arg(&missing)
        .arg("How many tables?");
        let out = c.output().unwrap();
        assert!(!out.status.success());
        assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = run(None);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("sqlora: warning: login postgres is a superuser"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("pg_read_server_files"), "{stderr}");
    assert!(stderr.contains("missing.gguf"), "{stderr}");
    for quiet in ["1", "yes"] {
        let stderr = run(Some(quiet));
        assert!(!stderr.contains("warning: login"), "{stderr}");
        assert!(stderr.contains("missing.gguf"), "{stderr}");
    }
    assert!(run(Some("0")).contains("sqlora: warning: login postgres"));
}
