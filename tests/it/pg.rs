//! A throwaway PostgreSQL server for the tests that need one: `initdb` and `pg_ctl` from
//! Debian's `postgresql` package, run as the `postgres` user when the tests run as root
//! (the server refuses root), in a temporary directory, on a free loopback port. The
//! server is stopped and its directory removed when the handle drops.
//!
//! In CI (`CI=true`) a missing PostgreSQL fails the test; elsewhere the test says that it
//! skipped and why.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The password of the `ncp_watchd` role the tests connect as.
pub const PASSWORD: &str = "pg-test-password-7f3a91";

/// A running server.
pub struct PgServer {
    /// Holds the data directory, the socket, the log and the certificates.
    dir: tempfile::TempDir,
    /// The directory of `initdb`, `pg_ctl` and `psql`.
    bin: PathBuf,
    /// The loopback port it listens on.
    pub port: u16,
    /// The CA that signed the server's certificate, when started with TLS.
    pub ca: Option<PathBuf>,
}

/// Starts a server, or says why it cannot (and fails the test in CI).
pub fn start(tls: bool) -> Option<PgServer> {
    let Some(bin) = bin_dir() else {
        let why = "PostgreSQL is not installed (apt-get install postgresql)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{why}: CI installs it, so this is a failure"
        );
        eprintln!("SKIPPED: {why}");
        return None;
    };
    Some(PgServer::start(bin, tls))
}

fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program args…` as the `postgres` user when we are root, else as ourselves.
fn as_postgres(program: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).env_remove("PGPASSWORD");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn chown_postgres(path: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "chown {}", path.display());
    }
}

/// A CA and a server certificate for `localhost` and 127.0.0.1, signed by it.
fn make_certificates(dir: &Path) -> PathBuf {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=ncp-watchd test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    dir.join("ca.pem")
}

impl PgServer {
    fn start(bin: PathBuf, tls: bool) -> Self {
        let dir = tempfile::Builder::new().prefix("ncpw-pg-").tempdir().unwrap();
        let root = dir.path();
        std::process::Command::new("chmod")
            .arg("755")
            .arg(root)
            .status()
            .unwrap();
        let ca = tls.then(|| make_certificates(root));
        chown_postgres(root);
        if tls {
            std::process::Command::new("chmod")
                .arg("600")
                .arg(root.join("server.key"))
                .status()
                .unwrap();
        }
        let data = root.join("data");
        ok(
            as_postgres(
                &bin.join("initdb"),
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
            ),
            "initdb",
        );
        let port = free_port();
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c max_connections=200",
            root.display()
        );
        if tls {
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                root.join("server.crt").display(),
                root.join("server.key").display()
            ));
        }
        let log = root.join("server.log");
        ok(
            as_postgres(
                &bin.join("pg_ctl"),
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-l",
                    log.to_str().unwrap(),
                    "-o",
                    &options,
                    "-w",
                    "-t",
                    "30",
                    "start",
                ],
            ),
            "pg_ctl start",
        );
        let server = Self { dir, bin, port, ca };
        server.sql(&format!("CREATE ROLE ncp_watchd LOGIN PASSWORD '{PASSWORD}'"));
        server.sql("CREATE DATABASE ncp_watchd OWNER ncp_watchd");
        server
    }

    /// Runs SQL as the superuser over the server's socket; returns what `psql` printed.
    pub fn sql(&self, sql: &str) -> String {
        self.sql_in("postgres", sql)
    }

    /// Runs SQL in `db` as the superuser, unaligned and without headers.
    pub fn sql_in(&self, db: &str, sql: &str) -> String {
        let socket = self.dir.path().to_str().unwrap().to_string();
        let port = self.port.to_string();
        ok(
            as_postgres(
                &self.bin.join("psql"),
                &[
                    "-h",
                    &socket,
                    "-p",
                    &port,
                    "-U",
                    "postgres",
                    "-d",
                    db,
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-At",
                    "-c",
                    sql,
                ],
            ),
            "psql",
        )
    }

    /// A URL for the `ncp_watchd` role and database, with `params` as its query.
    pub fn url(&self, params: &str) -> String {
        format!("postgres://ncp_watchd@127.0.0.1:{}/ncp_watchd?{params}", self.port)
    }

    /// The `[state]` table of a daemon on this server, its password in a file of the
    /// server's directory.
    pub fn state_toml(&self) -> String {
        let file = self.dir.path().join("db_password");
        std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
        format!(
            "[state]\nurl = \"{}\"\npassword_file = \"{}\"\n",
            self.url("sslmode=disable"),
            file.display()
        )
    }

    /// The validated store config of this server, as the library takes it.
    pub fn state_config(&self, params: &str) -> ncp_watchd::config::StateConfig {
        let file = self.dir.path().join("db_password");
        std::fs::write(&file, PASSWORD).unwrap();
        ncp_watchd::config::StateConfig::Postgres(ncp_watchd::config::PostgresConfig {
            url: self.url(params),
            password: Some(ncp_watchd::config::SecretSource::File(file)),
            base_dir: self.dir.path().to_path_buf(),
        })
    }
}

impl PgServer {
    /// Sends `signal` (`STOP`, `CONT`) to the server and every backend: `STOP` makes a
    /// server that keeps its connections open and never answers.
    pub fn signal_all(&self, signal: &str) {
        let pid_file = self.dir.path().join("data").join("postmaster.pid");
        let pid = std::fs::read_to_string(pid_file).unwrap_or_default();
        let pid = pid.lines().next().unwrap_or_default().trim().to_string();
        assert!(!pid.is_empty(), "no postmaster pid");
        let _ = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status();
        let _ = std::process::Command::new("pkill")
            .args([&format!("-{signal}"), "-P", &pid])
            .status();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // A server left stopped by a failed test could not be shut down.
        self.signal_all("CONT");
        let data = self.dir.path().join("data");
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", data.to_str().unwrap_or_default(), "-m", "immediate", "-w", "stop"],
        );
    }
}
