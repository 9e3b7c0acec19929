//! A leader-elected worker: of all instances running it, one leads at a time and does the leader-only work (here,
//! a fenced write every 200 ms that only the current term can commit); the others wait to take over. SIGTERM (as
//! Cloud Run and GKE send) or Ctrl-C resigns at once. `cargo run -p spanner-mutex --example leader -- mutex.toml`
//! (needs a `LeaderWrites` table: client/tests/examples.rs has its DDL).
use spanner_mutex::google_cloud_spanner::Error;
use spanner_mutex::prelude::*;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mutexes = Mutexes::from_file(std::env::args().nth(1).unwrap_or_else(|| "mutex.toml".into())).await?;
    let (mut terminate, mut interrupt) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    let stop = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    tokio::select! {
        result = lead(&mutexes) => result?,
        () = stop => println!("stopping"),
    }
    // Resigns a held leadership and waits until the release committed: the next instance leads within one poll.
    mutexes.shutdown().await;
    Ok(())
}

/// Campaigns, leads until leadership is lost, and campaigns again; Spanner outages are waited out.
async fn lead(mutexes: &Mutexes) -> Result<(), BoxError> {
    let mutex = mutexes.mutex("leader")?;
    let pid = i64::from(std::process::id());
    loop {
        let leader = match mutex.campaign().await {
            Ok(leader) => leader,
            Err(RunError::Unavailable(_)) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let term = i64::try_from(leader.term().get())?;
        println!("leading term {term} pid {pid}");
        for seq in 1_i64.. {
            tokio::select! {
                () = leader.lock_lost() => break,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            let written = leader
                .fenced(move |tx| async move {
                    let sql = "INSERT INTO LeaderWrites (term, seq, pid, committed_at) \
                               VALUES (@term, @seq, @pid, PENDING_COMMIT_TIMESTAMP())";
                    let insert = Statement::builder(sql).add_param("term", term).add_param("seq", seq);
                    // DML needs Spanner's own transaction (the in-memory store takes mutations only).
                    let tx = tx.spanner().ok_or_else(|| Error::deser("this example's DML needs Spanner"))?;
                    tx.execute_update(insert.add_param("pid", pid).build()).await
                })
                .await;
            match written {
                Ok(_) => {}
                Err(FencedError::Rejected { .. }) => break,
                Err(error) => eprintln!("write of term {term} failed: {error}"),
            }
        }
        println!("lost term {term}");
    }
}
