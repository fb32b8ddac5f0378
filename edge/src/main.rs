//! The `edge` command: `edge serve --config FILE`, `edge demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use edge::config::Config;
use tokio_util::sync::CancellationToken;

/// HLS/DASH segment edge: HTTP/1.1 over TLS with sendfile and kernel TLS offload.
#[derive(Parser)]
#[command(name = "edge", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve according to a configuration file (see edge.example.toml).
    Serve {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Validate the configuration and exit.
        #[arg(long)]
        check: bool,
    },
    /// Serve the bundled demo clip (HLS TS, HLS fMP4, DASH) and player on loopback.
    Demo {
        /// TLS listen address.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Optional plain-HTTP listen address.
        #[arg(long)]
        http_listen: Option<SocketAddr>,
        /// Admin (metrics) listen address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
        /// Directory to serve instead of the bundled one.
        #[arg(long)]
        root: Option<PathBuf>,
        /// Where the generated certificate and admin token are kept
        /// [default: $XDG_STATE_HOME/edge-demo or ~/.local/state/edge-demo].
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (config, demo) = match cli.command {
        Command::Serve { config, check } => {
            let c = Config::load(&config)?;
            if check {
                // Configured certificate and key: read them and check the suites
                // against the key, as start-up would.
                if let Some(ck) = &c.tls.cert_and_key {
                    let (_, key) = edge::tls::load_or_generate(Some(ck), &c.state_dir)?;
                    edge::tls::check_suites_for_key(&key, c.tls.cipher_suites.as_deref()).map_err(
                        |e| edge::config::ConfigError::Invalid {
                            file: config.clone(),
                            key: "tls.cipher_suites",
                            message: e.to_string(),
                        },
                    )?;
                }
                println!("{}: configuration OK", config.display());
                return Ok(());
            }
            (c, false)
        }
        Command::Demo {
            listen,
            http_listen,
            admin_listen,
            root,
            state_dir,
        } => {
            let root = root.unwrap_or_else(edge::demo::bundled_root);
            let state_dir = state_dir.unwrap_or_else(edge::demo::default_state_dir);
            (
                edge::demo::config(listen, http_listen, admin_listen, &root, &state_dir)?,
                true,
            )
        }
    };
    // EDGE_WORKER_THREADS overrides server.worker_threads (benchmarks pin it).
    let threads = std::env::var("EDGE_WORKER_THREADS")
        .ok()
        .map(|v| {
            v.parse::<usize>()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .context("EDGE_WORKER_THREADS must be 1..=1024")
        })
        .transpose()?
        .or(config.worker_threads.map(|n| n.get()))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // The main thread is worker 0 (it also runs the admin plane and signal handling);
    // each further worker gets its own thread, single-threaded runtime and
    // SO_REUSEPORT listeners (see edge::server).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let root = config.content_root.clone();
        let state_dir = config.state_dir.clone();
        let running = edge::server::start(config, shutdown.clone()).await?;
        running.spawn_workers(threads - 1)?;
        tracing::info!(threads, "serving");
        println!("{}", running.listening_line());
        if demo {
            println!(
                "{}",
                edge::demo::banner(running.tls_addr, running.admin_addr, &root, &state_dir)
            );
        }
        tokio::spawn(wait_for_signals(shutdown));
        running.wait().await;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn wait_for_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::warn!("SIGHUP: reloading certificates and ticket keys is not implemented yet; ignoring");
            }
        }
    }
    tracing::info!("shutting down: draining connections");
    shutdown.cancel();
}
