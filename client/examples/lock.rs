//! A lock around a job that must never run twice at the same time (a nightly report, say): an instance that finds
//! it held waits up to a minute, then reports who holds it. The lease renews in the background while the job runs;
//! if it is ever lost, the job stops. `cargo run -p spanner-mutex --example lock -- mutex.toml [JOB_MS]`.
use spanner_mutex::prelude::*;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let mutexes = Mutexes::from_file(args.next().unwrap_or_else(|| "mutex.toml".into())).await?;
    let job = Duration::from_millis(args.next().map_or(Ok(2_000), |ms| ms.parse())?);
    let mutex = mutexes.mutex("nightly-report")?;
    let Some(lock) = mutex.acquire_timeout(Duration::from_secs(60)).await? else {
        println!("busy: {}", mutex.status().await?);
        return Ok(());
    };
    println!("locked with fence {}", lock.fence().get());
    tokio::select! {
        () = tokio::time::sleep(job) => {} // the job; its writes could go through `lock.commit(..)`
        () = lock.lock_lost() => return Err("lost the lock mid-job: stopped".into()),
    }
    println!("released fence {}", lock.release().await?.get());
    Ok(())
}
