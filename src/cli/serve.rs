//! `segwatch serve`, `segwatch migrate` and `segwatch keys`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use tracing::info;

use crate::config::Config;
use crate::store::{Role, Store};
use crate::telemetry;

/// Where the configuration comes from.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// TOML configuration file; `SEGWATCH_*` environment variables override it.
    #[arg(long, env = "SEGWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of the embedded store, used when no database_url is set
    /// [default: segwatch-data in the working directory]; overrides
    /// SEGWATCH_DATA_DIR and the configuration file.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref(), |name| std::env::var(name).ok())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }
}

/// Opens the configured store for a command and says where it is.
async fn command_store(config: &Config) -> anyhow::Result<Store> {
    let store = config.store(2)?;
    store.check().await?;
    Ok(store)
}

#[derive(Debug, Args)]
#[command(after_help = environment_help())]
pub struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Do not apply migrations at start.
    #[arg(long)]
    no_migrate: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its token (shown once, stored hashed).
    Create {
        #[command(flatten)]
        config: ConfigArgs,
        /// The site an ingest key may write and read.
        #[arg(long)]
        site: Option<String>,
        #[arg(long, value_parser = role())]
        role: Role,
        /// A note on what the key is for.
        #[arg(long)]
        label: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Revoke a key by its id.
    Revoke {
        #[command(flatten)]
        config: ConfigArgs,
        id: String,
    },
}

/// The environment variables `serve` reads, for `--help`.
fn environment_help() -> String {
    let mut help = String::from(
        "Environment variables (they override the configuration file; docs/operations.md):\n",
    );
    for (name, setting) in crate::config::ENV_VARS {
        help.push_str(&format!("  {name:<40} {setting}\n"));
    }
    help
}

/// `--role`: the store's role names, listed in `--help`.
fn role() -> impl clap::builder::TypedValueParser<Value = Role> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Role::NAMES)
        .map(|name| Role::parse(&name).expect("a listed role"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Applies the migrations.
pub fn migrate(args: ConfigArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    runtime()?.block_on(async {
        let store = command_store(&config).await?;
        store.migrate().await?;
        eprintln!("segwatch: migrations applied to the {}", store.location());
        Ok(())
    })
}

/// Manages keys.
pub fn keys(command: KeysCommand) -> anyhow::Result<()> {
    let config = match &command {
        KeysCommand::Create { config, .. }
        | KeysCommand::List { config }
        | KeysCommand::Revoke { config, .. } => config.load()?,
    };
    runtime()?.block_on(async {
        let store = command_store(&config).await?;
        // Keys can be created before the first `serve`: the schema comes first
        // (unless migrations are left to the operator, as for `serve`).
        if config.migrate {
            store.migrate().await?;
        }
        match command {
            KeysCommand::Create {
                site, role, label, ..
            } => {
                if role == Role::Ingest && site.is_none() {
                    anyhow::bail!("an ingest key needs --site");
                }
                if let Some(site) = &site {
                    crate::ids::check("site", site)?;
                }
                let token = store
                    .create_key(role, site.as_deref(), label.as_deref())
                    .await?;
                super::print_out(&format!("{token}\n"))?;
            }
            KeysCommand::List { .. } => {
                let mut table = String::from("id\trole\tsite\tcreated\tlabel\n");
                for key in store.list_keys().await? {
                    table += &format!(
                        "{}\t{}\t{}\t{}\t{}{}\n",
                        key.id,
                        key.role.as_str(),
                        key.site.unwrap_or_else(|| "*".into()),
                        key.created_at.to_rfc3339(),
                        key.label.unwrap_or_default(),
                        key.revoked_at
                            .map(|t| format!("\trevoked {}", t.to_rfc3339()))
                            .unwrap_or_default()
                    );
                }
                super::print_out(&table)?;
            }
            KeysCommand::Revoke { id, .. } => {
                if !store.revoke_key(&id).await? {
                    anyhow::bail!("no active key {id}");
                }
                eprintln!("segwatch: key {id} revoked");
            }
        }
        Ok(())
    })
}

/// Runs the service until SIGINT or SIGTERM. The port opens at once; while the
/// database is unreachable or missing `/readyz` answers 503 and the migrations
/// are applied as soon as it is there.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = args.config.load()?;
    if args.no_migrate {
        config.migrate = false;
    }
    telemetry::init_logging(&config.log_format, "info");
    let config = Arc::new(config);
    runtime()?.block_on(async move {
        // Bound first: a port in use is reported before any database work.
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let router = crate::service::launch(config.clone()).await?;
        info!(address = %config.listen, threads = config.threads(), "segwatch serving");
        let header_timeout = Duration::from_secs(config.limits.header_read_timeout_secs);
        serve_http1(listener, router, header_timeout, shutdown()).await;
        Ok(())
    })
}

/// Serves HTTP/1.1 until `shutdown`, then waits for requests in flight. A
/// client gets `header_timeout` to send a request's headers, then its
/// connection is closed. Written on hyper's connection builder because
/// `axum::serve` cannot set a header-read timeout (slow clients held their
/// connections forever).
pub(super) async fn serve_http1(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    // Each connection holds a receiver; shutdown is announced by sending, and
    // finished once every receiver is gone.
    let (closing, connections) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone().map_request(
            |request: axum::http::Request<hyper::body::Incoming>| {
                request.map(axum::body::Body::new)
            },
        ));
        let mut close = connections.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = close.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(close);
        });
    }
    drop(connections);
    let _ = closing.send(true);
    closing.closed().await;
}

pub(super) async fn shutdown() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    info!("shutting down");
}
