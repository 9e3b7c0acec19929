//! Run at every instance's start-up: each migration is applied once across the fleet (docs/usage.md).
use spanner_mutex::google_cloud_spanner::{mutation::Mutation, statement::Statement};
use spanner_mutex::{BoxError, CriticalSection, LeaseHandle, Mutexes};

const MIGRATIONS: [&str; 3] = ["001-create-users", "002-backfill-emails", "003-drop-legacy"];
struct Migrate(Mutexes);

impl CriticalSection for Migrate {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok(pending(&self.0).await?.next().is_some())
    }
    async fn execute(&self, lease: &LeaseHandle) -> Result<(), BoxError> {
        for id in pending(&self.0).await? {
            // Apply migration `id` here; its record commits only while this instance holds the lease.
            lease.commit(vec![Mutation::new_insert_builder("Applied").set("id").to(id).build()]).await?;
        }
        Ok(())
    }
}

async fn pending(mutexes: &Mutexes) -> Result<impl Iterator<Item = &'static str>, BoxError> {
    let query = Statement::builder("SELECT id FROM Applied").build();
    let mut rows = mutexes.store().database_client().await.single_use().build().execute_query(query).await?;
    let mut done = Vec::<String>::new();
    while let Some(row) = rows.next().await.transpose()? {
        done.push(row.get("id")?);
    }
    Ok(MIGRATIONS.into_iter().filter(move |id| !done.iter().any(|d| d == id)))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mutexes = Mutexes::from_file(std::env::args().nth(1).unwrap_or_else(|| "mutex.toml".into())).await?;
    // Named after the newest migration: a DONE row counts as done for `staleness_ms`, so a new set needs a new name.
    let name = format!("migrations-to-{}", MIGRATIONS[MIGRATIONS.len() - 1]);
    println!("{}", mutexes.mutex(&name)?.run(&Migrate(mutexes.clone())).await?);
    Ok(())
}
