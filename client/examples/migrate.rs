//! Run at every instance's start-up: each migration is applied once across the fleet (docs/usage.md).
use spanner_mutex::prelude::*;
const MIGRATIONS: [&str; 3] = ["001-create-users", "002-backfill-emails", "003-drop-legacy"];
struct Migrate(Mutexes);

impl CriticalSection for Migrate {
    async fn is_needed(&self) -> Result<bool, BoxError> {
        Ok(!pending(&self.0).await?.is_empty())
    }
    async fn execute(&self, lease: &LeaseHandle) -> Result<(), BoxError> {
        for id in pending(&self.0).await? {
            // Apply migration `id` here; its record commits only while this instance holds the lease.
            lease.commit(vec![Mutation::new_insert_builder("Applied").set("id").to(id).build()]).await?;
        }
        Ok(())
    }
}
async fn pending(mutexes: &Mutexes) -> Result<Vec<&'static str>, BoxError> {
    let query = Statement::builder("SELECT ARRAY(SELECT id FROM Applied) AS ids").build();
    let spanner = mutexes.spanner().ok_or("the mutexes are not on Spanner")?;
    let mut rows = spanner.database_client().await.single_use().build().execute_query(query).await?;
    let applied: Vec<String> = rows.next().await.ok_or("the query returned no row")??.get("ids")?;
    Ok(MIGRATIONS.into_iter().filter(|id| !applied.iter().any(|a| a == id)).collect())
}
#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mutexes = Mutexes::from_file(std::env::args().nth(1).unwrap_or_else(|| "mutex.toml".into())).await?;
    // Named after the newest migration: a DONE row counts as done for `staleness_ms`, so a new set needs a new name.
    println!("{}", mutexes.mutex(&format!("migrations-to-{}", MIGRATIONS[2]))?.run(&Migrate(mutexes.clone())).await?);
    Ok(())
}
