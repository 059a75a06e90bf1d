//! Unit tests of the feedback store on SQLite files (PostgreSQL's are in tests/feedback.rs).

use super::*;

fn answer(q: &str, sql: &str) -> NewAnswer {
    NewAnswer {
        question: q.into(),
        db_identity: "sqlite:/tmp/shop.db".into(),
        dialect: "SQLite".into(),
        schema_context: "CREATE TABLE t (a INT);".into(),
        model: "test".into(),
        generated_sql: Some(sql.into()),
        final_sql: Some(sql.into()),
        ..NewAnswer::default()
    }
}

#[test]
fn verdicts_undo_and_export_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("fb.sqlite").to_string_lossy()).unwrap();
    assert_eq!(s.applied_versions().unwrap(), vec![1, 2, 3]);
    let a = s
        .record(&answer("How many t?", "SELECT count(*) FROM t"))
        .unwrap();
    let b = s.record(&answer("Max a?", "SELECT min(a) FROM t")).unwrap();
    let c = s.record(&answer("All a?", "DROP TABLE t")).unwrap();
    s.set_verdict(a, Review::Accepted, None, None).unwrap();
    s.set_verdict(b, Review::Corrected, Some("SELECT max(a) FROM t"), None)
        .unwrap();
    s.set_verdict(c, Review::Rejected, None, Some("wrong"))
        .unwrap();
    let pairs = s.export(&Filter::default()).unwrap();
    let answers: Vec<&str> = pairs.iter().map(|p| p.answer.as_str()).collect();
    assert_eq!(answers, ["SELECT count(*) FROM t", "SELECT max(a) FROM t"]);
    assert_eq!(pairs[0].context, "CREATE TABLE t (a INT);");

    // Undo puts the previous verdict back; a second undo of `a` restores unreviewed.
    s.set_verdict(a, Review::Rejected, None, None).unwrap();
    assert_eq!(s.undo(a).unwrap(), Some(Review::Accepted));
    assert_eq!(s.undo(a).unwrap(), Some(Review::Unreviewed));
    assert_eq!(s.undo(a).unwrap(), None);
    assert_eq!(s.export(&Filter::default()).unwrap().len(), 1);
    assert!(matches!(
        s.set_verdict(999, Review::Accepted, None, None),
        Err(FeedbackError::NotFound(999))
    ));

    // The same question on the same schema: the latest judgement wins.
    let d = s
        .record(&answer("Max a?", "SELECT max(a) AS m FROM t"))
        .unwrap();
    s.set_verdict(d, Review::Accepted, None, None).unwrap();
    let pairs = s.export(&Filter::default()).unwrap();
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].answer, "SELECT max(a) AS m FROM t");

    let listed = s
        .list(&Filter {
            verdict: Some(Review::Rejected),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(listed.iter().map(|e| e.id).collect::<Vec<_>>(), vec![c]);
    let (counts, fresh) = s.stats().unwrap();
    assert_eq!(fresh, 2);
    assert!(counts.iter().any(|(_, v, n)| v == "rejected" && *n == 1));
    assert_eq!(s.integrity_check().unwrap(), "ok");
}

#[test]
fn migrations_apply_forward_and_keep_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fb.sqlite").to_string_lossy().into_owned();
    let mut old = Store::open_at_version(&path, Some(1)).unwrap();
    assert_eq!(old.applied_versions().unwrap(), vec![1]);
    let id = old.record_v1(&answer("q", "SELECT 1")).unwrap();
    drop(old);
    let mut s = Store::open(&path).unwrap();
    assert_eq!(s.applied_versions().unwrap(), vec![1, 2, 3]);
    let e = s.list(&Filter::default()).unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].id, id);
    // Reopening applies nothing twice.
    drop(s);
    let mut s = Store::open(&path).unwrap();
    assert_eq!(s.applied_versions().unwrap(), vec![1, 2, 3]);
}

impl Store {
    /// An insert as version 1 of the schema wrote it (no `source` column).
    fn record_v1(&mut self, a: &NewAnswer) -> Result<i64, FeedbackError> {
        let at = crate::clock::now_iso();
        let insert = sqlx::query(
            "INSERT INTO feedback (created_at, updated_at, os_user, question, db_identity, \
             dialect, schema_fingerprint, schema_context, model) \
             VALUES ($1, $1, 'me', $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(&at);
        let fut = bind_asked(insert, a).fetch_one(&mut self.conn);
        let row = self.rt.block_on(fut).map_err(store_err)?;
        row.try_get(0).map_err(store_err)
    }
}

#[test]
fn a_url_of_another_database_is_refused_not_taken_for_a_file() {
    let e = Store::open("mariadb://root:pa/ss@127.0.0.1:3306/x")
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("not mariadb://") && !e.contains("pa/ss"), "{e}");
    assert!(!std::path::Path::new("mariadb:").exists());
}

#[test]
fn examples_are_the_confirmed_pairs_of_one_database_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("fb.sqlite").to_string_lossy()).unwrap();
    let on = |db: &str, q: &str, sql: &str| NewAnswer {
        db_identity: db.into(),
        ..answer(q, sql)
    };
    let ok = s
        .record(&on("shop", "How many t?", "SELECT count(*) FROM t"))
        .unwrap();
    let fixed = s
        .record(&on("shop", "Max a?", "SELECT min(a) FROM t"))
        .unwrap();
    let bad = s.record(&on("shop", "All a?", "SELECT b FROM t")).unwrap();
    let open = s
        .record(&on("shop", "Sum a?", "SELECT sum(a) FROM t"))
        .unwrap();
    let other = s.record(&on("zoo", "How many t?", "SELECT 1")).unwrap();
    s.set_verdict(ok, Review::Accepted, None, None).unwrap();
    s.set_verdict(fixed, Review::Corrected, Some("SELECT max(a) FROM t"), None)
        .unwrap();
    s.set_verdict(bad, Review::Rejected, None, None).unwrap();
    s.set_verdict(other, Review::Accepted, None, None).unwrap();
    let _ = open;
    let shop = s.confirmed("shop").unwrap();
    let got: Vec<(i64, &str)> = shop.iter().map(|c| (c.id, c.sql.as_str())).collect();
    // Never the rejected or the unreviewed answer, never another database's; a correction
    // stands with the user's SQL.
    assert_eq!(
        got,
        [
            (ok, "SELECT count(*) FROM t"),
            (fixed, "SELECT max(a) FROM t")
        ]
    );
    assert_eq!(s.confirmed("zoo").unwrap().len(), 1);

    // `feedback remove` takes a pair out of examples and training, and keeps it on record.
    assert!(s.remove(fixed).unwrap());
    assert!(!s.remove(fixed).unwrap(), "removing twice says so");
    assert!(matches!(s.remove(999), Err(FeedbackError::NotFound(999))));
    let ids: Vec<i64> = s.confirmed("shop").unwrap().iter().map(|c| c.id).collect();
    assert_eq!(ids, [ok]);
    let exported: Vec<String> = s
        .export(&Filter::default())
        .unwrap()
        .into_iter()
        .map(|p| p.answer)
        .collect();
    assert!(
        !exported.contains(&"SELECT max(a) FROM t".to_string()),
        "{exported:?}"
    );
    assert_eq!(s.fresh_pairs(Some("shop")).unwrap(), 1);
    let listed = s.list(&Filter::default()).unwrap();
    let removed = listed.iter().find(|e| e.id == fixed).unwrap();
    assert!(removed.removed_at.is_some());

    // `\undo` of an accept takes that pair out as well.
    s.undo(ok).unwrap();
    assert!(s.confirmed("shop").unwrap().is_empty());
}
