//! The lease table: create it, and check an existing one before use (missing table or a column of the wrong
//! type is a clear error, not a failure deep inside a transaction).

use crate::config::validate_table_id;
use crate::spanner::SpannerStore;
use google_cloud_spanner::statement::Statement;

/// The columns and their Spanner types.
pub const COLUMNS: &[(&str, &str)] = &[
    ("name", "STRING(128)"),
    ("status", "STRING(16)"),
    ("holder", "STRING(36)"),
    ("holder_name", "STRING(256)"),
    ("fence", "INT64"),
    ("updated_at", "TIMESTAMP"),
    ("expires_at", "TIMESTAMP"),
    ("attempt", "INT64"),
    ("last_error", "STRING(MAX)"),
    ("fenced_writes", "INT64"),
];

/// Schema problems.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The table name is invalid.
    #[error(transparent)]
    Identifier(#[from] crate::ConfigFileError),
    /// The table does not exist.
    #[error("table {table} not found in {database}; create it with `spanner-mutex init` or the DDL in docs")]
    MissingTable {
        /// Table.
        table: String,
        /// Database.
        database: String,
    },
    /// A column has the wrong type.
    #[error("column {table}.{column}: expected {expected}, found {found}")]
    Column {
        /// Table.
        table: String,
        /// Column.
        column: &'static str,
        /// Expected type.
        expected: &'static str,
        /// What the table has.
        found: String,
    },
    /// A column is missing: the table was made by an older version (before `fenced_writes`, the record that keeps
    /// fenced writes exactly-once) or by hand.
    #[error("column {table}.{column} is missing; add it with: {ddl}")]
    MissingColumn {
        /// Table.
        table: String,
        /// Column.
        column: &'static str,
        /// The statement that adds it.
        ddl: String,
    },
    /// Spanner failed.
    #[error("Spanner: {0}")]
    Spanner(String),
    /// A DDL statement failed.
    #[error("Spanner refused `{statement}`: {message}")]
    Ddl {
        /// The statement.
        statement: String,
        /// What Spanner said.
        message: String,
    },
}

/// The DDL for the lease table, with an optional row deletion policy (days after the last update). Note that
/// a row created again after a deletion starts its fences at the server time of its creation, above every fence of
/// the deleted row (see `Fence::first_at`), as long as the policy's days outlast the longest lease.
pub fn create_table_ddl(table: &str, delete_after_days: Option<u32>) -> Result<String, SchemaError> {
    validate_table_id(table)?;
    let nullable = ["holder_name", "last_error"];
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|(name, ty)| {
            let not_null = if nullable.contains(name) { "" } else { " NOT NULL" };
            let options = match *name {
                "updated_at" => " OPTIONS (allow_commit_timestamp = true)",
                // As the upgrade adds it, so tables made either way have one shape.
                "fenced_writes" => " DEFAULT (0)",
                _ => "",
            };
            format!("  {name} {ty}{not_null}{options}")
        })
        .collect();
    let ttl = delete_after_days.map(|d| format!(", ROW DELETION POLICY (OLDER_THAN(updated_at, INTERVAL {d} DAY))"));
    Ok(format!("CREATE TABLE {table} (\n{}\n) PRIMARY KEY (name){}", columns.join(",\n"), ttl.unwrap_or_default()))
}

/// The statement that adds a missing column to an existing lease table. Existing rows get the column's neutral
/// value (`0`: no fenced writes recorded), which every column added since the first version has.
fn add_column_ddl(table: &str, column: &str, ty: &str) -> String {
    let nullable = ["holder_name", "last_error"];
    if nullable.contains(&column) {
        format!("ALTER TABLE {table} ADD COLUMN {column} {ty}")
    } else {
        format!("ALTER TABLE {table} ADD COLUMN {column} {ty} NOT NULL DEFAULT (0)")
    }
}

/// Creates the lease table in an existing database (`projects/P/instances/I/databases/D`) through the
/// database admin API, with an optional row deletion policy, unless it exists. Used by `init` on real Spanner.
pub async fn create_schema(
    admin: &google_cloud_spanner_admin_database_v1::client::DatabaseAdmin,
    database: &str,
    table: &str,
    delete_after_days: Option<u32>,
) -> Result<DdlApplied, SchemaError> {
    let ddl = create_table_ddl(table, delete_after_days)?;
    let mut applied = apply_ddl(admin, database, [ddl]).await?;
    Ok(applied.pop().unwrap_or(DdlApplied::Existed))
}

/// What a DDL statement did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DdlApplied {
    /// It created (or changed) what it names.
    Applied,
    /// What it creates was there already; nothing changed.
    Existed,
}

/// Runs the app's own DDL statements (`CREATE TABLE ...`, `CREATE INDEX ...`) in `database` through the
/// database admin API, one at a time and in order, so that running them again is harmless: a statement whose
/// table or index exists already is reported as [`DdlApplied::Existed`]. Any other failure stops at that
/// statement. On the emulator the admin API is its REST gateway (`emulator::admin_clients`).
pub async fn apply_ddl(
    admin: &google_cloud_spanner_admin_database_v1::client::DatabaseAdmin,
    database: &str,
    statements: impl IntoIterator<Item = String>,
) -> Result<Vec<DdlApplied>, SchemaError> {
    use google_cloud_lro::Poller;
    let mut applied = Vec::new();
    for statement in statements {
        let done = admin
            .update_database_ddl()
            .set_database(database)
            .set_statements([statement.clone()])
            .poller()
            .until_done()
            .await;
        applied.push(match done {
            Ok(_) => DdlApplied::Applied,
            Err(error) if already_exists(&error.to_string()) => DdlApplied::Existed,
            Err(error) => {
                let message = error.status().map_or_else(|| error.to_string(), |status| status.message.clone());
                return Err(SchemaError::Ddl { statement, message });
            }
        });
    }
    Ok(applied)
}

/// Whether an admin error says the thing to create is there already (Spanner and the emulator word it several
/// ways).
pub(crate) fn already_exists(message: &str) -> bool {
    ["ALREADY_EXISTS", "already exists", "Duplicate name"].iter().any(|m| message.contains(m))
}

/// Checks that the store's table exists with the expected column types.
pub async fn validate_schema(store: &SpannerStore) -> Result<(), SchemaError> {
    let client = store.database_client().await;
    let statement = Statement::builder(
        "SELECT COLUMN_NAME, SPANNER_TYPE FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = '' AND TABLE_NAME = @t",
    )
    .add_param("t", store.table())
    .build();
    let spanner = |e: google_cloud_spanner::Error| SchemaError::Spanner(e.to_string());
    let mut rows = client.single_use().build().execute_query(statement).await.map_err(spanner)?;
    let mut found = Vec::new();
    while let Some(row) = rows.next().await.transpose().map_err(spanner)? {
        let column: String = row.get("COLUMN_NAME").map_err(spanner)?;
        let ty: String = row.get("SPANNER_TYPE").map_err(spanner)?;
        found.push((column, ty));
    }
    if found.is_empty() {
        return Err(SchemaError::MissingTable {
            table: store.table().to_owned(),
            database: store.database().to_owned(),
        });
    }
    for (column, expected) in COLUMNS {
        let table = store.table().to_owned();
        match found.iter().find(|(c, _)| c == column).map(|(_, t)| t.clone()) {
            Some(actual) if actual == *expected => {}
            Some(actual) => return Err(SchemaError::Column { table, column, expected, found: actual }),
            None => {
                let ddl = add_column_ddl(&table, column, expected);
                return Err(SchemaError::MissingColumn { table, column, ddl });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_has_every_column_and_rejects_bad_names() {
        let ddl = create_table_ddl("Leases", Some(30)).expect("valid");
        for (name, ty) in COLUMNS {
            assert!(ddl.contains(&format!("{name} {ty}")), "{ddl}");
        }
        assert!(ddl.ends_with("ROW DELETION POLICY (OLDER_THAN(updated_at, INTERVAL 30 DAY))"));
        assert!(create_table_ddl("x; DROP TABLE y", None).is_err());
    }
}
