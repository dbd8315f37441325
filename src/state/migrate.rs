//! Schema migrations: the numbered files in `migrations/`, compiled in, applied in order at
//! start-up, each in its own transaction and recorded in `schema_migrations`.

use rusqlite::{Connection, params};

/// (version, file name, SQL). Add new files here; a test checks none is forgotten.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_initial.sql",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "0002_trash_and_runs.sql",
        include_str!("../../migrations/0002_trash_and_runs.sql"),
    ),
    (
        3,
        "0003_index_fields.sql",
        include_str!("../../migrations/0003_index_fields.sql"),
    ),
    (
        4,
        "0004_staged_and_first_serial.sql",
        include_str!("../../migrations/0004_staged_and_first_serial.sql"),
    ),
    (
        5,
        "0005_verify.sql",
        include_str!("../../migrations/0005_verify.sql"),
    ),
    (
        6,
        "0006_page_validators.sql",
        include_str!("../../migrations/0006_page_validators.sql"),
    ),
    (
        7,
        "0007_held_back.sql",
        include_str!("../../migrations/0007_held_back.sql"),
    ),
    (
        8,
        "0008_projects_serial.sql",
        include_str!("../../migrations/0008_projects_serial.sql"),
    ),
    (
        9,
        "0009_staged_by_project.sql",
        include_str!("../../migrations/0009_staged_by_project.sql"),
    ),
    (
        10,
        "0010_root_names_dirty.sql",
        include_str!("../../migrations/0010_root_names_dirty.sql"),
    ),
];

pub fn apply(conn: &mut Connection) -> rusqlite::Result<()> {
    apply_up_to(conn, latest())
}

/// The migrations up to `last` (a test builds an older schema with it).
pub(super) fn apply_up_to(conn: &mut Connection, last: i64) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at INTEGER NOT NULL
         )",
    )?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    let pending = MIGRATIONS
        .iter()
        .filter(|(v, ..)| *v > current && *v <= last);
    for (version, name, sql) in pending {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, unixepoch())",
            params![version, name],
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// Newest schema this binary knows; a database ahead of it was written by a newer pymirror.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_listed_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS.iter().map(|m| m.1.to_owned()).collect();
        assert_eq!(files, listed);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.0, i as i64 + 1);
            assert!(m.1.starts_with(&format!("{:04}_", m.0)));
        }
    }

    #[test]
    fn staged_keys_survive_their_new_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                 applied_at INTEGER NOT NULL)",
        )
        .unwrap();
        for (version, name, sql) in &MIGRATIONS[..8] {
            conn.execute_batch(sql).unwrap();
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?1, ?2, 0)",
                rusqlite::params![version, name],
            )
            .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO staged (path, project) VALUES ('packages/aa/x/a-1.tar.gz', 'a'),
                 ('packages/bb/y/b-1.tar.gz', 'b')",
        )
        .unwrap();
        apply(&mut conn).unwrap();
        let rows: Vec<(String, String)> = conn
            .prepare("SELECT project, path FROM staged ORDER BY project")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                ("a".to_owned(), "packages/aa/x/a-1.tar.gz".to_owned()),
                ("b".to_owned(), "packages/bb/y/b-1.tar.gz".to_owned())
            ]
        );
    }

    #[test]
    fn applying_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn).unwrap();
        apply(&mut conn).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, latest());
    }
}
