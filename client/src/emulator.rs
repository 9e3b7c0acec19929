//! Starts the Cloud Spanner emulator (with its REST gateway, which the admin clients need) on free ports, and
//! stops it (the whole process group) when dropped. Used by the demo, tests and benchmarks.

use crate::spanner::SpannerStore;
use crate::{Timeouts, schema};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The default install location on this project's machines (`gcloud components install cloud-spanner-emulator`).
pub const DEFAULT_DIR: &str = "/usr/lib/google-cloud-sdk/bin/cloud_spanner_emulator";

/// Emulator problems.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// Not installed where we looked.
    #[error("Spanner emulator not found in {0} (set SPANNER_EMULATOR_DIR, see README)")]
    NotInstalled(PathBuf),
    /// It did not start.
    #[error("emulator did not start: {0}")]
    Start(String),
    /// Creating the instance, database or table failed.
    #[error("emulator setup failed: {0}")]
    Setup(String),
}

/// Where the emulator binaries are: `SPANNER_EMULATOR_DIR`, else [`DEFAULT_DIR`].
pub fn install_dir() -> PathBuf {
    std::env::var_os("SPANNER_EMULATOR_DIR").map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from)
}

/// Whether the emulator binaries are installed.
pub fn is_installed() -> bool {
    install_dir().join("gateway_main").is_file()
}

/// A running emulator. Dropping it stops it.
#[derive(Debug)]
pub struct Emulator {
    child: Child,
    grpc_port: u16,
    rest_port: u16,
}

fn free_port() -> Result<u16, EmulatorError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| EmulatorError::Start(e.to_string()))?;
    Ok(listener.local_addr().map_err(|e| EmulatorError::Start(e.to_string()))?.port())
}

impl Emulator {
    /// Starts the emulator on free ports and waits (at most 30 s) until both ports accept connections.
    pub async fn start() -> Result<Self, EmulatorError> {
        Self::start_on(free_port()?, free_port()?).await
    }

    /// Stops the emulator and starts a fresh one (empty: no instances) on the same ports.
    pub async fn restart(&mut self) -> Result<(), EmulatorError> {
        self.stop();
        let fresh = Self::start_on(self.grpc_port, self.rest_port).await?;
        // Swap in the new process; the old one is already stopped.
        let old = std::mem::replace(self, fresh);
        std::mem::forget(old);
        Ok(())
    }

    async fn start_on(grpc_port: u16, rest_port: u16) -> Result<Self, EmulatorError> {
        let dir = install_dir();
        if !dir.join("gateway_main").is_file() {
            return Err(EmulatorError::NotInstalled(dir));
        }
        let mut command = Command::new(dir.join("gateway_main"));
        command
            .arg("--hostname=127.0.0.1")
            .arg(format!("--grpc_port={grpc_port}"))
            .arg(format!("--http_port={rest_port}"))
            .arg(format!("--grpc_binary={}", dir.join("emulator_main").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().map_err(|e| EmulatorError::Start(e.to_string()))?;
        let emulator = Self { child, grpc_port, rest_port };
        let started = Instant::now();
        for port in [grpc_port, rest_port] {
            while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                if started.elapsed() > Duration::from_secs(30) {
                    return Err(EmulatorError::Start(format!("port {port} not open after 30 s")));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(emulator)
    }

    /// The gRPC endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// The REST endpoint the admin clients use.
    pub fn rest_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.rest_port)
    }

    /// Creates `projects/P/instances/I/databases/D` with the lease `table` and connects a store to it.
    pub async fn create_database(
        &self,
        project: &str,
        instance: &str,
        database: &str,
        table: &str,
        timeouts: Timeouts,
    ) -> Result<SpannerStore, EmulatorError> {
        create_database_at(&self.endpoint(), &self.rest_endpoint(), project, instance, database, table, timeouts).await
    }

    /// Applies DDL statements to a database of this emulator (e.g. the user tables a test writes through
    /// `fenced`).
    pub async fn apply_ddl(&self, database_path: &str, statements: Vec<String>) -> Result<(), EmulatorError> {
        use google_cloud_lro::Poller;
        let (_, databases) = admin_clients(&self.endpoint(), &self.rest_endpoint()).await?;
        databases
            .update_database_ddl()
            .set_database(database_path)
            .set_statements(statements)
            .poller()
            .until_done()
            .await
            .map_err(|e| EmulatorError::Setup(e.to_string()))?;
        Ok(())
    }

    /// Freezes the emulator (SIGSTOP): Spanner stops answering, connections stay open, nothing is lost.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused emulator go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args([signal, "--", &group]).stderr(Stdio::null()).status();
    }

    /// Stops the emulator now.
    pub fn stop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Admin clients for an emulator: derived from a plaintext-endpoint client, so they carry its anonymous
/// credentials instead of looking for Google credentials.
pub fn admin_clients(endpoint: &str, rest_endpoint: &str) -> impl Future<Output = AdminClients> + Send + 'static {
    admin_clients_compiled(endpoint.to_owned(), rest_endpoint.to_owned())
}

/// The instance and database admin clients, or why they could not be built.
type AdminClients = Result<
    (
        google_cloud_spanner_admin_instance_v1::client::InstanceAdmin,
        google_cloud_spanner_admin_database_v1::client::DatabaseAdmin,
    ),
    EmulatorError,
>;

/// Compiled once, here: an `async fn`'s body is compiled where its future is polled, and building the admin
/// clients pulls in every one of their calls.
#[inline(never)]
fn admin_clients_compiled(endpoint: String, rest_endpoint: String) -> crate::future::Compiled<'static, AdminClients> {
    Box::pin(async move { admin_clients_now(&endpoint, &rest_endpoint).await })
}

async fn admin_clients_now(endpoint: &str, rest_endpoint: &str) -> AdminClients {
    let setup = |e: &dyn std::fmt::Display| EmulatorError::Setup(e.to_string());
    let spanner = google_cloud_spanner::client::Spanner::builder()
        .with_endpoint(endpoint.to_owned())
        .build()
        .await
        .map_err(|e| setup(&e))?;
    let instances =
        spanner.instance_admin_builder().with_endpoint(rest_endpoint).build().await.map_err(|e| setup(&e))?;
    let databases =
        spanner.database_admin_builder().with_endpoint(rest_endpoint).build().await.map_err(|e| setup(&e))?;
    Ok((instances, databases))
}

/// Creates an instance and a database with the lease table on an emulator's endpoints (at most 60 s), and
/// connects a store to it.
pub fn create_database_at(
    endpoint: &str,
    rest_endpoint: &str,
    project: &str,
    instance: &str,
    database: &str,
    table: &str,
    timeouts: Timeouts,
) -> impl Future<Output = Result<SpannerStore, EmulatorError>> + Send + 'static {
    let names = [endpoint, rest_endpoint, project, instance, database, table].map(str::to_owned);
    create_database_compiled(names, timeouts)
}

/// Compiled once, here (see [`admin_clients_compiled`]).
#[inline(never)]
fn create_database_compiled(
    names: [String; 6],
    timeouts: Timeouts,
) -> crate::future::Compiled<'static, Result<SpannerStore, EmulatorError>> {
    Box::pin(create_database_now(names, timeouts))
}

async fn create_database_now(names: [String; 6], timeouts: Timeouts) -> Result<SpannerStore, EmulatorError> {
    let [endpoint, rest_endpoint, project, instance, database, table] = names;
    let (endpoint, rest_endpoint, project, instance, database, table) =
        (&*endpoint, &*rest_endpoint, &*project, &*instance, &*database, &*table);
    tokio::time::timeout(Duration::from_secs(60), async {
        use google_cloud_lro::Poller;
        use google_cloud_spanner_admin_instance_v1::model::Instance;
        let setup = |e: &dyn std::fmt::Display| EmulatorError::Setup(e.to_string());
        let (instances, databases) = admin_clients(endpoint, rest_endpoint).await?;
        let created = instances
            .create_instance()
            .set_parent(format!("projects/{project}"))
            .set_instance_id(instance)
            .set_instance(
                Instance::new()
                    .set_name(format!("projects/{project}/instances/{instance}"))
                    .set_config(format!("projects/{project}/instanceConfigs/emulator-config"))
                    .set_display_name(instance)
                    .set_node_count(1),
            )
            .poller()
            .until_done()
            .await;
        if let Err(e) = created
            && !already_exists(&e.to_string())
        {
            return Err(setup(&e));
        }
        let ddl = schema::create_table_ddl(table, None).map_err(|e| setup(&e))?;
        let path = format!("projects/{project}/instances/{instance}/databases/{database}");
        let created = databases
            .create_database()
            .set_parent(format!("projects/{project}/instances/{instance}"))
            .set_create_statement(format!("CREATE DATABASE `{database}`"))
            .set_extra_statements([ddl.clone()])
            .poller()
            .until_done()
            .await;
        // Run again on an existing database, it adds the table if that is what is missing.
        if let Err(e) = created {
            if !already_exists(&e.to_string()) {
                return Err(setup(&e));
            }
            let added =
                databases.update_database_ddl().set_database(&path).set_statements([ddl]).poller().until_done().await;
            if let Err(e) = added
                && !already_exists(&e.to_string())
            {
                return Err(setup(&e));
            }
        }
        SpannerStore::connect(path, table, Some(endpoint.to_owned()), timeouts).await.map_err(|e| setup(&e))
    })
    .await
    .map_err(|_| EmulatorError::Setup("creating the database took over 60 s".into()))?
}

/// Whether an admin error says the thing to create is there already (the emulator words it several ways).
pub fn already_exists(message: &str) -> bool {
    schema::already_exists(message)
}
