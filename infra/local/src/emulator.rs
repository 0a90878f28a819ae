//! The AWS emulator: moto's server from `<repo>/.venv` (installed from PyPI
//! when missing), on a loopback port of its own, stopped when dropped. When an
//! endpoint is given (`AWS_ENDPOINT_URL`: LocalStack, a moto kept running, or
//! real AWS), nothing is started.
//!
//! moto binds port 0 and prints the port it got, so parallel stacks (tests in
//! several processes) never race for a "free" port.

use anyhow::{Context as _, Result, bail};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What pip installs (the Makefile pins the same range).
pub const MOTO_REQUIREMENT: &str = "moto[server]>=5.1,<6";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// A running emulator (or a borrowed endpoint).
pub struct Emulator {
    pub endpoint: String,
    child: Option<Child>,
}

/// One install at a time in this process (the lock file covers other processes).
static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A lock file held while pip installs, so parallel test processes install once.
struct InstallLock(PathBuf);

impl InstallLock {
    async fn acquire(path: PathBuf, done: &Path) -> Result<Option<Self>> {
        let deadline = tokio::time::Instant::now() + INSTALL_TIMEOUT;
        loop {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Ok(Some(Self(path))),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if done.exists() {
                        return Ok(None);
                    }
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > INSTALL_TIMEOUT);
                    if stale {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if tokio::time::Instant::now() > deadline {
                        bail!(
                            "another process has been installing moto for too long ({})",
                            path.display()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("create {}", path.display())),
            }
        }
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The moto server of the repository's `.venv`, installed when missing.
pub async fn moto_server(repo_root: &Path) -> Result<PathBuf> {
    let venv = repo_root.join(".venv");
    let server = venv.join("bin").join("moto_server");
    if server.exists() {
        return Ok(server);
    }
    let _guard = INSTALL.lock().await;
    let Some(_lock) = InstallLock::acquire(repo_root.join(".venv-install.lock"), &server).await? else {
        return Ok(server);
    };
    if server.exists() {
        return Ok(server);
    }
    eprintln!(
        "installing the AWS emulator ({MOTO_REQUIREMENT}) into {}",
        venv.display()
    );
    if !venv.join("bin").join("python").exists() {
        let status = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .await
            .context("run python3 -m venv (python3 3.9+ is needed for the AWS emulator)")?;
        if !status.success() {
            bail!("python3 -m venv {} failed", venv.display());
        }
    }
    let status = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", MOTO_REQUIREMENT])
        .status()
        .await
        .context("run pip")?;
    if !status.success() || !server.exists() {
        bail!("pip install '{MOTO_REQUIREMENT}' failed; PyPI must be reachable once");
    }
    Ok(server)
}

/// The port in moto's (werkzeug's) banner: ` * Running on http://127.0.0.1:PORT`.
fn banner_port(line: &str) -> Option<u16> {
    let rest = line.split("Running on http://").nth(1)?;
    let port: String = rest
        .rsplit_once(':')?
        .1
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    port.parse().ok()
}

impl Emulator {
    /// Uses `endpoint` when given, otherwise starts moto on a loopback port.
    pub async fn start(repo_root: &Path, endpoint: Option<String>) -> Result<Self> {
        if let Some(endpoint) = endpoint {
            return Ok(Self {
                endpoint: endpoint.trim_end_matches('/').to_string(),
                child: None,
            });
        }
        let server = moto_server(repo_root).await?;
        let mut child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", server.display()))?;
        let stderr = child.stderr.take().context("moto's stderr")?;
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let log = tail.clone();
        // Reads the banner, then keeps draining (moto logs every request) so moto never blocks on a full pipe.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut port_tx = Some(port_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                match (banner_port(&line), port_tx.take()) {
                    (Some(port), Some(tx)) => {
                        let _ = tx.send(port);
                    }
                    (_, tx) => port_tx = tx,
                }
                if let Ok(mut tail) = log.lock() {
                    if tail.len() >= 40 {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
        });
        let port = tokio::select! {
            port = port_rx => port.ok(),
            _ = tokio::time::sleep(START_TIMEOUT) => None,
        };
        let Some(port) = port else {
            let _ = child.kill().await;
            let output = tail.lock().map(|t| Vec::from(t.clone()).join("\n")).unwrap_or_default();
            bail!(
                "the AWS emulator ({}) did not start within {START_TIMEOUT:?}:\n{output}",
                server.display()
            );
        };
        // The banner comes as the socket listens; wait until it accepts.
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill().await;
                bail!("the AWS emulator printed port {port} but does not accept connections");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            child: Some(child),
        })
    }

    /// Whether this emulator was started here (and will be stopped here).
    pub fn owned(&self) -> bool {
        self.child.is_some()
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_read_from_moto_s_banner() {
        assert_eq!(banner_port(" * Running on http://127.0.0.1:34245"), Some(34245));
        assert_eq!(
            banner_port("\u{1b}[33m * Running on http://127.0.0.1:80\u{1b}[0m"),
            Some(80)
        );
        assert_eq!(banner_port("Press CTRL+C to quit"), None);
    }
}
