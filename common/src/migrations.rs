//! Schema migrations embedded in the binary without a procedural macro.
//!
//! `sqlx::migrate!` needs sqlx's `macros` feature, which builds a second copy
//! of sqlx's drivers (and of SQLite's C sources) for the compiler host; that
//! was about a minute of every clean build. Each crate lists its migration
//! files with `include_str!` instead (see [`embedded_migrations!`](crate::embedded_migrations))
//! and [`migrator`] turns the list into the same [`Migrator`] the macro would
//! have built: version and description parsed from the file name exactly as
//! sqlx does (`0001_releases.sql` -> version 1, "releases"), the checksum
//! from the SQL text, `-- no-transaction` honoured. Databases migrated by the
//! macro therefore validate unchanged.
//!
//! Each crate keeps a test that its list matches its migration directory as
//! sqlx reads it ([`check_against_directory`]), so a new migration cannot be
//! forgotten.

use std::borrow::Cow;
use std::path::Path;

use sqlx::migrate::{Migration, MigrationType, Migrator};

/// One embedded migration: its file name and its SQL text.
pub type Embedded = (&'static str, &'static str);

/// Lists migration files of `$dir` (relative to the calling crate's
/// manifest directory) as `[(file name, SQL)]`, embedded at compile time.
#[macro_export]
macro_rules! embedded_migrations {
    ($dir:literal: $($file:literal),+ $(,)?) => {
        [$(($file, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $dir, "/", $file)))),+]
    };
}

/// Builds a [`Migrator`] from embedded files, parsing each name as sqlx's
/// directory source does. A name that is not `<version>_<description>.sql`
/// is a programming error in the caller's list and is reported by name.
pub fn migrator(files: &[Embedded]) -> Result<Migrator, String> {
    let mut migrations = Vec::with_capacity(files.len());
    for &(name, sql) in files {
        let (version, rest) = name
            .split_once('_')
            .filter(|(_, rest)| rest.ends_with(".sql"))
            .ok_or_else(|| format!("migration file {name:?} is not <version>_<description>.sql"))?;
        let version: i64 = version.parse().map_err(|_| {
            format!("migration file {name:?} does not start with an integer version")
        })?;
        let migration_type = MigrationType::from_filename(rest);
        let description = rest
            .trim_end_matches(migration_type.suffix())
            .replace('_', " ");
        let no_tx = sql.starts_with("-- no-transaction");
        migrations.push(Migration::new(
            version,
            Cow::Owned(description),
            migration_type,
            sqlx::SqlStr::from_static(sql),
            no_tx,
        ));
    }
    Ok(Migrator::with_migrations(migrations))
}

/// Compares `files` with the migration directory `dir` as sqlx's own
/// runtime resolver reads it (versions, descriptions, checksums, no-tx
/// flags), for the test that keeps a crate's list complete and in step.
pub async fn check_against_directory(dir: &Path, files: &[Embedded]) -> Result<(), String> {
    let embedded = migrator(files)?;
    let read = Migrator::new(dir)
        .await
        .map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let summary = |m: &Migrator| -> Vec<(i64, String, Vec<u8>, bool)> {
        m.iter()
            .map(|m| {
                (
                    m.version,
                    m.description.to_string(),
                    m.checksum.to_vec(),
                    m.no_tx,
                )
            })
            .collect()
    };
    let (a, b) = (summary(&embedded), summary(&read));
    if a != b {
        let names = |v: &[(i64, String, Vec<u8>, bool)]| {
            v.iter()
                .map(|(n, d, _, _)| format!("{n} {d}"))
                .collect::<Vec<_>>()
        };
        return Err(format!(
            "embedded migrations {:?} differ from {} {:?} (a file is missing from the list, or changed)",
            names(&a),
            dir.display(),
            names(&b)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_sqlx_parses_them() {
        let m = migrator(&[
            ("0002_ledger_audit.sql", "select 2;"),
            ("0001_releases.sql", "-- no-transaction\nselect 1;"),
        ])
        .unwrap();
        let got: Vec<_> = m
            .iter()
            .map(|m| (m.version, m.description.to_string(), m.no_tx))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "releases".to_owned(), true),
                (2, "ledger audit".to_owned(), false)
            ]
        );
    }

    #[test]
    fn bad_names_are_named() {
        let e = migrator(&[("releases.sql", "")]).unwrap_err();
        assert!(e.contains("releases.sql"), "{e}");
        let e = migrator(&[("v1_releases.sql", "")]).unwrap_err();
        assert!(e.contains("integer version"), "{e}");
    }
}
