//! Running the controller: validate the config, bind, open the store, bootstrap,
//! write the client files, serve until shutdown. Shared by `kiln-controller serve`
//! and `kiln-node up`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::app::{app, AppState};
use crate::client_files::{self, ClientFiles};
use crate::config::Config;
use crate::identity::bootstrap::BootstrapOutcome;
use crate::identity::catalog::Catalog;
use crate::identity::password::generate_password;
use crate::identity::{Identity, IdentitySettings};
use crate::store::RedbStore;

/// The state file inside the data dir.
pub const STATE_FILE: &str = "state.redb";

/// A bound, bootstrapped controller, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    pub local_addr: SocketAddr,
    /// The base URL the catalog advertises (no trailing slash).
    pub public_url: String,
    pub data_dir: PathBuf,
    pub state: AppState,
    pub bootstrap: BootstrapOutcome,
    /// The bootstrap admin password as kept in `admin-password`, if known.
    pub admin_password: Option<String>,
}

impl Server {
    /// Binds first (so port 0 resolves to a real port used everywhere), then opens
    /// the state and bootstraps it on first start.
    pub async fn bind(config: &Config) -> anyhow::Result<Server> {
        let valid = config.validate()?;
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let listener = TcpListener::bind(valid.listen)
            .await
            .with_context(|| format!("cannot listen on {}", valid.listen))?;
        let local_addr = listener.local_addr()?;
        let public_url = match &config.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let mut shown = local_addr;
                if shown.ip().is_unspecified() {
                    shown.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{shown}")
            }
        };
        let store = RedbStore::open(&data_dir.join(STATE_FILE))
            .with_context(|| format!("cannot open {}", data_dir.join(STATE_FILE).display()))?;
        let settings = IdentitySettings {
            compliance: valid.compliance.clone(),
            hash_cost: config.password_hashing,
            token_ttl_secs: config.token_ttl,
        };
        let identity = Arc::new(Identity::open(Arc::new(store), settings)?);
        let password_file = data_dir.join(client_files::ADMIN_PASSWORD);
        let kept = std::fs::read_to_string(&password_file)
            .ok()
            .map(|s| s.trim_end_matches('\n').to_string())
            .filter(|s| !s.is_empty());
        let candidate = config
            .bootstrap_admin_password
            .clone()
            .or_else(|| kept.clone())
            .unwrap_or_else(generate_password);
        let id2 = identity.clone();
        let pw2 = candidate.clone();
        let bootstrap = tokio::task::spawn_blocking(move || id2.bootstrap(&pw2))
            .await?
            .context("bootstrap failed")?;
        let admin_password = if bootstrap.created {
            client_files::write_private(&password_file, &format!("{candidate}\n"))
                .with_context(|| format!("cannot write {}", password_file.display()))?;
            Some(candidate)
        } else {
            kept
        };
        let state = AppState::new(identity, Catalog::new(&public_url), &data_dir)
            .map_err(|e| anyhow::anyhow!("cannot open the services: {e}"))?;
        state
            .services
            .compute
            .set_reclaim_interval(config.reclaim_instance_interval);
        Ok(Server {
            listener,
            local_addr,
            public_url,
            data_dir,
            state,
            bootstrap,
            admin_password,
        })
    }

    /// `{public_url}/v3`, what `OS_AUTH_URL` holds.
    pub fn auth_url(&self) -> String {
        format!("{}/v3", self.public_url)
    }

    /// Rewrites `openrc` and `clouds.yaml` with the current URL. Returns the paths
    /// and whether the admin changed its password since (then the files hold the
    /// bootstrap password, which no longer works).
    pub async fn write_client_files(&self) -> anyhow::Result<Option<(ClientFiles, bool)>> {
        let Some(pw) = self.admin_password.clone() else {
            return Ok(None);
        };
        let files = client_files::write_all(&self.data_dir, &self.auth_url(), &pw)
            .with_context(|| format!("cannot write client files in {}", self.data_dir.display()))?;
        let identity = self.state.identity.clone();
        let still = tokio::task::spawn_blocking(move || identity.admin_password_is(&pw)).await??;
        Ok(Some((files, !still)))
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests and closes
    /// the store.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let reclaimer = crate::compute::servers::soft_delete::spawn_reclaimer(
            self.state.services.compute.clone(),
            self.state.nodes.clone(),
        );
        let router = app(self.state);
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("server failed")?;
        if let Some(r) = reclaimer {
            r.abort();
        }
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

/// Prints where the client files are (and a note if they are stale).
pub fn announce_client_files(result: &Option<(ClientFiles, bool)>) {
    match result {
        Some((files, changed)) => {
            println!("kiln: wrote {}", files.openrc.display());
            println!("kiln: wrote {}", files.clouds_yaml.display());
            if *changed {
                println!(
                    "kiln: note: the admin password was changed since bootstrap; these files hold the bootstrap password"
                );
            }
        }
        None => println!(
            "kiln: note: the bootstrap admin password is unknown (no admin-password file); client files not written"
        ),
    }
}

/// `kiln-controller serve`: bind, write client files, print the ready line, serve
/// until `shutdown`.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let server = Server::bind(&config).await?;
    let files = server.write_client_files().await?;
    announce_client_files(&files);
    println!("kiln: listening on {}", server.local_addr);
    ready(&server.auth_url());
    server.run(shutdown).await
}

/// The one ready line tests wait for, flushed.
pub fn ready(auth_url: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "kiln: ready at {auth_url}");
    let _ = out.flush();
}
