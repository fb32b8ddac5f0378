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
    /// Build a stream description from a packaged folder (HLS master playlist or DASH
    /// MPD), checking every segment; prints it as JSON (or writes it to --out).
    Ingest {
        /// The packaged folder.
        dir: PathBuf,
        /// The stream's name [default: the folder's name].
        #[arg(long)]
        name: Option<String>,
        /// Write the JSON description here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print a signed URL path for a stream (`manifests.keys_file` format).
    Sign {
        /// The key file (`KEYID HEX-SECRET` lines; the first key signs).
        #[arg(long)]
        keys: PathBuf,
        /// The stream's name.
        #[arg(long)]
        stream: String,
        /// Seconds the token stays valid.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// The path inside the stream to print.
        #[arg(long, default_value = "master.m3u8")]
        path: String,
    },
    /// Serve the bundled demo clip (HLS TS, HLS fMP4, DASH) and player on loopback:
    /// an origin, and an edge filling its cache from it.
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
        /// Where the generated certificate, admin token and the edge's cache are kept
        /// [default: $XDG_STATE_HOME/edge-demo or ~/.local/state/edge-demo].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The origin's plain-HTTP address (the edge fills from it); port 0 picks one.
        #[arg(long, default_value = "127.0.0.1:0")]
        origin_listen: SocketAddr,
        /// Size of the edge's cache container, MiB.
        #[arg(long, default_value_t = 256)]
        cache_mib: u64,
    },
}

/// What `edge demo` was asked for beyond the origin's configuration.
struct Demo {
    root: PathBuf,
    state_dir: PathBuf,
    tls: SocketAddr,
    http: Option<SocketAddr>,
    admin: SocketAddr,
    cache_mib: u64,
}

fn main() -> ExitCode {
    // A reload signal during start-up is a no-op, not a kill (see the function).
    let _ = edge::sys::ignore_sighup_until_handled();
    let cli = Cli::parse();
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        // The log-storm guard first: it drops repeated lines before they are
        // formatted (see edge::logging).
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with(edge::logging::LogStormGuard)
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config_path = None;
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
                if let Some(f) = &c.tls.ticket_keys_file {
                    edge::tickets::FileTicketer::load(f, 60)?;
                }
                if let Some(cache) = &c.cache {
                    // What opening the cache would refuse, without creating anything.
                    for (i, d) in cache.storage.disks.iter().enumerate() {
                        if !d.path.is_dir() {
                            anyhow::bail!(
                                "{}: storage.disks[{i}].path `{}` is not an existing directory",
                                config.display(),
                                d.path.display()
                            );
                        }
                    }
                }
                let catalog = edge::streams::Catalog::build(&c)?;
                if !catalog.is_empty() {
                    println!(
                        "{}: streams OK: {}",
                        config.display(),
                        catalog.names().join(", ")
                    );
                }
                println!("{}: configuration OK", config.display());
                return Ok(());
            }
            config_path = Some(config);
            (c, None)
        }
        Command::Ingest { dir, name, out } => {
            let name = name.unwrap_or_else(|| {
                let d = dir.canonicalize().unwrap_or_else(|_| dir.clone());
                d.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "stream".into())
            });
            let stream = edge::ingest::ingest(&dir, &name)?;
            let json = serde_json::to_string_pretty(&stream)?;
            let p = stream.primary();
            let total_us = p.ticks_to_us(p.segments.iter().map(|s| s.duration).sum());
            eprintln!(
                "edge ingest: stream `{}`: {:?}, {} rendition(s), {} segments, {:.3} s",
                stream.name,
                stream.container,
                stream.renditions.len(),
                stream.segment_count(),
                total_us as f64 / 1e6
            );
            match out {
                Some(f) => std::fs::write(&f, json + "\n")
                    .with_context(|| format!("writing {}", f.display()))?,
                None => println!("{json}"),
            }
            return Ok(());
        }
        Command::Sign {
            keys,
            stream,
            ttl,
            path,
        } => {
            let text = std::fs::read_to_string(&keys)
                .with_context(|| format!("reading {}", keys.display()))?;
            let k = manifest::token::SigningKeys::parse(&text)
                .with_context(|| format!("{}", keys.display()))?;
            let expires = edge::streams::now_ms() / 1000 + ttl;
            let token = k.sign(&format!("/streams/{stream}/"), expires);
            println!("/s/{token}/streams/{stream}/{path}");
            return Ok(());
        }
        Command::Demo {
            listen,
            http_listen,
            admin_listen,
            root,
            state_dir,
            origin_listen,
            cache_mib,
        } => {
            let root = root.unwrap_or_else(edge::demo::bundled_root);
            let state_dir = state_dir.unwrap_or_else(edge::demo::default_state_dir);
            edge::demo::ensure_keys(&state_dir)?;
            let epoch = (edge::streams::now_ms() / 1000).saturating_sub(3600) / 60 * 60;
            let origin = edge::demo::origin_config(origin_listen, &root, &state_dir, epoch)?;
            (
                origin,
                Some(Demo {
                    root,
                    state_dir,
                    tls: listen,
                    http: http_listen,
                    admin: admin_listen,
                    cache_mib,
                }),
            )
        }
    };
    // Before the workers start: an idle connection keeps a few KB on the heap, and
    // with transparent huge pages `always` those would hold whole 2 MiB pages.
    if !config.transparent_huge_pages {
        if let Err(e) = edge::sys::disable_transparent_huge_pages() {
            tracing::warn!(error = %e, "cannot opt out of transparent huge pages (server.transparent_huge_pages)");
        }
    }
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
    // The main thread is worker 0 (it also runs signal handling; the admin plane has
    // its own thread, see edge::server);
    // each further worker gets its own thread, single-threaded runtime and
    // SO_REUSEPORT listeners (see edge::server).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let Some(demo) = demo else {
            let running = edge::server::start(config, shutdown.clone()).await?;
            running.spawn_workers(threads - 1)?;
            tracing::info!(threads, "serving");
            println!("{}", running.listening_line());
            tokio::spawn(wait_for_signals(
                shutdown,
                Some(running.reloader()),
                config_path,
            ));
            running.wait().await;
            tracing::info!("stopped");
            return Ok(());
        };
        // The demo: the origin first (on this thread only), then the edge in front.
        let origin = edge::server::start(config, shutdown.clone()).await?;
        let origin_http = origin
            .http_addr
            .context("the demo origin has no HTTP listener")?;
        let edge_config = edge::demo::edge_config(
            demo.tls,
            demo.http,
            demo.admin,
            origin_http,
            &demo.state_dir,
            demo.cache_mib,
        )?;
        // A fresh admin token for every demo run (printed in the banner).
        let _ = std::fs::remove_file(demo.state_dir.join("admin.token"));
        let running = edge::server::start(edge_config, shutdown.clone()).await?;
        running.spawn_workers(threads - 1)?;
        tracing::info!(threads, "serving");
        println!("{}", running.listening_line());
        let (root, state_dir) = (demo.root, demo.state_dir);
        {
            let keys = std::fs::read_to_string(edge::demo::keys_file(&state_dir))?;
            let keys = manifest::token::SigningKeys::parse(&keys)?;
            // A day's validity: the page can be reloaded all session.
            let expires = edge::streams::now_ms() / 1000 + 86_400;
            let token = keys.sign("/streams/signed/", expires);
            let signed = format!("/s/{token}/streams/signed/master.m3u8");
            println!(
                "{}",
                edge::demo::banner(
                    running.tls_addr,
                    running.admin_addr,
                    origin_http,
                    &root,
                    &state_dir,
                    &signed,
                    std::fs::read_to_string(state_dir.join("admin.token"))?.trim(),
                )
            );
        }
        tokio::spawn(wait_for_signals(shutdown, Some(running.reloader()), None));
        running.wait().await;
        origin.wait().await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// SIGHUP: re-reads `config_path` (or, without one, the files behind the running
/// config) and applies what can change live; a config that does not load, or that
/// changes a restart-only key, is refused with a log line and the running config
/// stays.
fn reload_on_hup(reloader: &edge::server::Reloader, config_path: Option<&std::path::Path>) {
    let new = match config_path {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                reloader.count_failed();
                tracing::error!(error = %e, "SIGHUP: the config does not load; running config kept");
                return;
            }
        },
        None => reloader.config(),
    };
    match reloader.reload(new) {
        Ok(applied) => tracing::info!(
            changed = ?applied.live_keys_changed,
            fleet_ticket_keys = applied.ticket_keys_file,
            "SIGHUP: reloaded certificates, ticket keys and live settings"
        ),
        Err(e) => tracing::error!(error = %e, "SIGHUP: reload refused; running config kept"),
    }
}

async fn wait_for_signals(
    shutdown: CancellationToken,
    reloader: Option<edge::server::Reloader>,
    config_path: Option<std::path::PathBuf>,
) {
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
                if let Some(r) = &reloader {
                    // Reading files: off the event loop.
                    let (r, p) = (r.clone(), config_path.clone());
                    let _ = tokio::task::spawn_blocking(move || reload_on_hup(&r, p.as_deref())).await;
                }
            }
        }
    }
    tracing::info!("shutting down: draining connections");
    shutdown.cancel();
}
