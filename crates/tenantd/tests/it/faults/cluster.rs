//! A PostgreSQL cluster of the test's own (`initdb` + `pg_ctl`), so a test
//! can crash and restart the database under a running server without
//! touching the shared one. The binaries are those of the installed
//! PostgreSQL (`.ci/run` installs it when missing); as root the cluster
//! runs as the `postgres` user, which PostgreSQL requires.

use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::Connection as _;

/// A running cluster on 127.0.0.1 with trust authentication and one
/// database, `tenantd`, owned by `owner`; `app` (bound by row-level
/// security) and `admin` (`BYPASSRLS`) as in production. Stopped (at once)
/// on drop.
pub struct Cluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    port: u16,
}

fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .unwrap_or_else(|e| {
            panic!("PostgreSQL's server binaries are not installed under {root:?} ({e}); .ci/run installs them")
        })
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .expect("a PostgreSQL version with pg_ctl under /usr/lib/postgresql")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Cluster {
    /// `initdb`, start, and create the roles and the database.
    pub async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster = Cluster {
            data: dir.path().join("data"),
            log: dir.path().join("postgres.log"),
            bin: bin_dir(),
            port: free_port(),
            _dir: dir,
        };
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(cluster._dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the cluster directory");
        }
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data.to_string_lossy(),
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        cluster.up();
        let mut conn = sqlx::PgConnection::connect(&cluster.url("postgres", "postgres"))
            .await
            .expect("connect to the test's own cluster");
        for sql in [
            "CREATE ROLE owner LOGIN NOSUPERUSER NOBYPASSRLS",
            "CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS",
            "CREATE ROLE admin LOGIN NOSUPERUSER BYPASSRLS",
            "CREATE DATABASE tenantd OWNER owner",
        ] {
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        cluster
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd.args(args).output().expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=on -c max_connections=60",
            self.port,
            self.data.to_string_lossy()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data.to_string_lossy(),
                "-l",
                &self.log.to_string_lossy(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server the way a crash does (`-m immediate`: no
    /// checkpoint, connections cut); what was committed survives.
    pub fn crash(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A URL for `user` on `database`.
    pub fn url(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{database}", self.port)
    }

    /// Points `storage` at this cluster's database with the three roles.
    pub fn configure(&self, storage: &mut tenantd::config::StorageConfig) {
        storage.backend = tenantd::config::Backend::Postgres;
        storage.url = Some(self.url("app", "tenantd"));
        storage.admin_url = Some(self.url("admin", "tenantd"));
        storage.migrate_url = Some(self.url("owner", "tenantd"));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data.to_string_lossy().into_owned();
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        };
    }
}
