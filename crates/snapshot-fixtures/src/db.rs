//! Database servers of their own for the writer hooks' tests and the bench: a PostgreSQL
//! cluster ([`PgServer`], `initdb` + `pg_ctl` as the `postgres` user) and a MariaDB server
//! ([`MariaServer`], `mariadbd` as a child dropping to `mysql`), each on a data directory the
//! caller names, with a private socket directory and no TCP listener; stopped on drop. Nothing
//! here talks to a system cluster.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::find_tool;

/// Newest `/usr/lib/postgresql/VERSION/bin` holding initdb, pg_ctl and postgres (Debian keeps
/// them off PATH).
pub fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|t| bin.join(t).is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

/// `(uid, gid)` of an OS user, from /etc/passwd.
pub fn os_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// Which server.
#[derive(Clone, Copy, Debug)]
pub enum Db {
    Postgres,
    Mariadb,
}

/// What this machine lacks to run `db`'s server (programs, OS user), or None.
pub fn missing(db: Db) -> Option<String> {
    let mut missing = Vec::new();
    let tools: &[&str] = match db {
        Db::Postgres => {
            if pg_bin().is_none() {
                missing.push("/usr/lib/postgresql/*/bin/initdb (package postgresql)".to_owned());
            }
            if os_user("postgres").is_none() {
                missing.push("OS user postgres".to_owned());
            }
            &["psql", "runuser"]
        }
        Db::Mariadb => {
            if os_user("mysql").is_none() {
                missing.push("OS user mysql".to_owned());
            }
            &["mariadb", "mariadbd", "mariadb-install-db"]
        }
    };
    missing.extend(
        tools
            .iter()
            .filter(|t| find_tool(t).is_none())
            .map(|t| t.to_string()),
    );
    (!missing.is_empty()).then(|| {
        format!(
            "missing {} (ci/install-deps.sh installs them)",
            missing.join(", ")
        )
    })
}

/// Runs a command (stdin /dev/null, from `/`); its stdout, or an error with its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates `dir` (and parents) and gives it to `user`.
pub fn dir_for(dir: &Path, user: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (uid, gid) = os_user(user).with_context(|| format!("no OS user {user}"))?;
    chown(dir, Some(uid), Some(gid)).with_context(|| format!("chown {}", dir.display()))
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL server fixture.

/// The port only names the socket file in our private socket directory (no TCP listener).
pub const PG_PORT: &str = "5432";

/// A PostgreSQL server of our own: `pg_ctl` as the `postgres` user, data in `data`, socket and
/// log in `sock`; stopped (`-m immediate`) on drop, killed by its recorded pid if that fails.
#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    name: String,
}

impl PgServer {
    /// initdb into `data` (created for postgres), then start.
    pub fn init(name: &str, data: &Path, sock: &Path) -> Result<Self> {
        let bin = pg_bin().context("no initdb")?;
        dir_for(data, "postgres")?;
        std::fs::set_permissions(data, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        output(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("initdb"))
                .arg("-D")
                .arg(data)
                .args(["-U", "postgres", "-A", "peer", "--auth-host=scram-sha-256"])
                .args(["-E", "UTF8", "--no-sync"]),
        )
        .context("initdb")?;
        Self::start(name, data, sock)
    }

    /// Starts a server on an existing data directory.
    pub fn start(name: &str, data: &Path, sock: &Path) -> Result<Self> {
        let bin = pg_bin().context("no pg_ctl")?;
        dir_for(sock, "postgres")?;
        let srv = PgServer {
            bin,
            data: data.to_owned(),
            sock: sock.to_owned(),
            name: name.to_owned(),
        };
        // From here on, Drop stops whatever did start.
        let opts = format!(
            "-k {} -p {PG_PORT} -c listen_addresses='' -c cluster_name={name} -c fsync=on",
            sock.display()
        );
        output(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(srv.bin.join("pg_ctl"))
                .arg("-D")
                .arg(data)
                .arg("-l")
                .arg(sock.join("server.log"))
                .args(["-w", "-t", "60", "-o", &opts, "start"]),
        )
        .with_context(|| {
            format!(
                "starting {name}: {}",
                std::fs::read_to_string(sock.join("server.log")).unwrap_or_default()
            )
        })?;
        Ok(srv)
    }

    pub fn psql_cmd(&self) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", "psql", "-X", "-q", "-A", "-t"])
            .args([
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                "postgres",
                "-p",
                PG_PORT,
                "-h",
            ])
            .arg(&self.sock)
            .current_dir("/");
        cmd
    }

    pub fn sql(&self, sql: &str) -> Result<String> {
        output(self.psql_cmd().arg("-c").arg(sql)).map(|o| o.trim().to_owned())
    }

    /// A query's one number.
    pub fn sql_u64(&self, sql: &str) -> Result<u64> {
        let out = self.sql(sql)?;
        out.parse()
            .with_context(|| format!("{sql}: not a number: {out:?}"))
    }

    /// A hook config file pointing at this server.
    pub fn hook_conf(&self, path: &Path) -> Result<PathBuf> {
        std::fs::write(
            path,
            format!("PGHOST={}\nPGPORT={PG_PORT}\n", self.sock.display()),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(path.to_owned())
    }

    /// The postmaster's pid, if its lock file names one that is running on our data directory.
    pub fn postmaster(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains(&*self.data.to_string_lossy())
            .then_some(pid)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.postmaster().is_none() {
            return;
        }
        let stop = output(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "-t", "30", "stop"]),
        );
        if let Err(e) = stop {
            eprintln!("fixture: stopping {}: {e:#}", self.name);
        }
        if let Some(pid) = self.postmaster() {
            eprintln!(
                "fixture: {} (pid {pid}) still running; killing it",
                self.name
            );
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MariaDB server fixture.

/// Options for both the bootstrap and the server: small, private, no networking.
pub const MARIADB_OPTS: &[&str] = &[
    "--innodb-log-file-size=8M",
    "--innodb-buffer-pool-size=32M",
    "--skip-networking",
    "--user=mysql",
];

/// A MariaDB server of our own (`mariadbd` as our child, dropping to `mysql`), data in `data`,
/// socket, pid file and error log in `sock`; TERM (then KILL) on drop.
#[derive(Debug)]
pub struct MariaServer {
    child: Option<Child>,
    sock: PathBuf,
    name: String,
}

impl MariaServer {
    /// mariadb-install-db into `data` (created for mysql), then start.
    pub fn init(name: &str, data: &Path, sock: &Path) -> Result<Self> {
        dir_for(data, "mysql")?;
        dir_for(sock, "mysql")?;
        output(
            Command::new(find_tool("mariadb-install-db").context("no mariadb-install-db")?)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                // A tmpdir of its own: a server starting meanwhile (another test) removes the
                // `#sql*` files it finds in its tmpdir, the bootstrap's temporary tables too.
                .arg(format!("--tmpdir={}", sock.display()))
                .args(["--auth-root-authentication-method=socket", "--skip-test-db"])
                .args(MARIADB_OPTS),
        )
        .context("mariadb-install-db")?;
        Self::start(name, data, sock)
    }

    pub fn start(name: &str, data: &Path, sock: &Path) -> Result<Self> {
        dir_for(sock, "mysql")?;
        let child = Command::new(find_tool("mariadbd").context("no mariadbd")?)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", sock.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", sock.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", sock.join("error.log").display()))
            .arg(format!("--tmpdir={}", sock.display()))
            .args(MARIADB_OPTS)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning mariadbd")?;
        let mut srv = MariaServer {
            child: Some(child),
            sock: sock.to_owned(),
            name: name.to_owned(),
        };
        let t = Instant::now();
        loop {
            if srv.sql("SELECT 1").is_ok() {
                return Ok(srv);
            }
            let exited = srv.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || t.elapsed() > Duration::from_secs(60) {
                bail!(
                    "{name}: mariadbd not ready ({exited:?}): {}",
                    std::fs::read_to_string(sock.join("error.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.sock.join("mysqld.sock")
    }

    pub fn client_cmd(&self) -> Command {
        let mut cmd = Command::new("mariadb");
        cmd.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["--user=root", "--batch", "--skip-column-names"])
            .current_dir("/");
        cmd
    }

    pub fn sql(&self, sql: &str) -> Result<String> {
        output(self.client_cmd().arg("-e").arg(sql)).map(|o| o.trim().to_owned())
    }

    /// A query's one number.
    pub fn sql_u64(&self, sql: &str) -> Result<u64> {
        let out = self.sql(sql)?;
        out.parse()
            .with_context(|| format!("{sql}: not a number: {out:?}"))
    }

    /// A hook config file pointing at this server; helper files in `run_dir`.
    pub fn hook_conf(&self, path: &Path, run_dir: &Path, watchdog_s: u32) -> Result<PathBuf> {
        std::fs::write(
            path,
            format!(
                "MARIADB_SOCKET={}\nMARIADB_RUN_DIR={}\nMARIADB_WATCHDOG={watchdog_s}\n",
                self.socket().display(),
                run_dir.display()
            ),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(path.to_owned())
    }
}

impl Drop for MariaServer {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("fixture: {} ignored TERM for 30 s; killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}
