//! The AWS emulator: moto's server from `.venv` (installed from PyPI when
//! missing), on a free loopback port, stopped when dropped. When an endpoint
//! is given (`AWS_ENDPOINT_URL`: LocalStack, or real AWS), nothing is started.

use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A running emulator (or a borrowed endpoint).
pub struct Emulator {
    pub endpoint: String,
    child: Option<Child>,
}

static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The moto server of the repository's `.venv`, installed when missing.
pub async fn moto_server(repo_root: &Path) -> Result<PathBuf> {
    let venv = repo_root.join(".venv");
    let server = venv.join("bin").join("moto_server");
    let _guard = INSTALL.lock().await;
    if server.exists() {
        return Ok(server);
    }
    eprintln!("installing the AWS emulator (moto[server]) into {}", venv.display());
    if !venv.join("bin").join("python").exists() {
        let status = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .await
            .context("run python3 -m venv (is python3 installed?)")?;
        if !status.success() {
            bail!("python3 -m venv {} failed", venv.display());
        }
    }
    let status = Command::new(venv.join("bin").join("pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "moto[server]>=5.1,<6",
        ])
        .status()
        .await
        .context("run pip")?;
    if !status.success() || !server.exists() {
        bail!("pip install 'moto[server]' failed; PyPI must be reachable");
    }
    Ok(server)
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(listener.local_addr()?.port())
}

impl Emulator {
    /// Uses `endpoint` when given, otherwise starts moto on a free port.
    pub async fn start(repo_root: &Path, endpoint: Option<String>) -> Result<Self> {
        if let Some(endpoint) = endpoint {
            return Ok(Self {
                endpoint: endpoint.trim_end_matches('/').to_string(),
                child: None,
            });
        }
        let server = moto_server(repo_root).await?;
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            let mut child = Command::new(&server)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("start {}", server.display()))?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = Some(format!("moto exited with {status}"));
                    break;
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return Ok(Self {
                        endpoint: format!("http://127.0.0.1:{port}"),
                        child: Some(child),
                    });
                }
                if tokio::time::Instant::now() > deadline {
                    last_error = Some("moto did not start within 60 s".into());
                    let _ = child.kill().await;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        bail!("cannot start the AWS emulator: {}", last_error.unwrap_or_default())
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
