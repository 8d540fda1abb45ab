//! The `fulcrum` command line: run, check, origin, demo. Logic lives in the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use fulcrum::config::{self, Config};
use fulcrum::{daemon, demo, origin};

#[derive(Parser)]
#[command(
    name = "fulcrum",
    version,
    about = "An L4/L7 load balancer configured by one TOML file"
)]
struct Cli {
    /// Config file (runs the daemon when no subcommand is given).
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run,
    /// Validate the config: print a summary and exit 0, or every error and exit 1.
    Check,
    /// Run a small test origin (HTTP by default, TCP echo with --tcp).
    Origin {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        name: String,
        /// Echo TCP bytes instead of answering HTTP.
        #[arg(long)]
        tcp: bool,
        /// Hold every answer back this long ("150ms", "2s").
        #[arg(long, value_parser = parse_duration, default_value = "0")]
        delay: Duration,
        /// Probability (0..=1) that a request (tcp: a connection) gets a TCP reset.
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
        /// HTTP status to answer with.
        #[arg(long, default_value_t = 200)]
        status: u16,
    },
    /// Start three origins and the daemon on config/demo.toml, and print what to try.
    Demo,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::units::parse_duration(s)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd.unwrap_or(Cmd::Run) {
        Cmd::Run => {
            let path = cli.config.context("missing -c FILE")?;
            let cfg = load_or_exit(&path);
            init_logging(&cfg);
            run(cfg, None)
        }
        Cmd::Check => {
            let path = cli.config.context("missing -c FILE")?;
            let cfg = load_or_exit(&path);
            print!("{}", cfg.summary());
            if let Some(w) = fulcrum::fdlimit::maxconn_warning(&cfg, fulcrum::fdlimit::current().1)
            {
                eprintln!("{w}");
            }
            Ok(())
        }
        Cmd::Origin {
            listen,
            name,
            tcp,
            delay,
            fail_rate,
            status,
        } => {
            if !(0.0..=1.0).contains(&fail_rate) {
                bail!("--fail-rate must be between 0 and 1");
            }
            init_logging_level("info");
            let opts = origin::OriginOpts {
                name,
                tcp,
                delay,
                fail_rate,
                status,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let stop = stop_signal()?;
                let o = origin::spawn(listen, opts).await?;
                println!("origin listening on {}", o.addr);
                stop.await;
                anyhow::Ok(())
            })
        }
        Cmd::Demo => {
            let cfg = match demo::load(cli.config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            };
            init_logging(&cfg);
            run(cfg, Some(()))
        }
    }
}

fn load_or_exit(path: &Path) -> Config {
    match config::load(path) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("{}:{}:{}: warning: {}", w.file, w.line, w.col, w.message);
            }
            c
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{}: {} error(s)", path.display(), e.0.len());
            std::process::exit(1);
        }
    }
}

fn init_logging(cfg: &Config) {
    init_logging_level(&cfg.global.log_level);
}

fn init_logging_level(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Run the daemon until SIGTERM or SIGINT, then stop gracefully. With `demo`, start
/// the demo origins first.
fn run(cfg: Config, demo: Option<()>) -> Result<()> {
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    control.block_on(async move {
        let stop = stop_signal()?;
        if demo.is_some() {
            let origins = demo::start_origins(&cfg)
                .await
                .context("cannot start the demo origins")?;
            for (name, addr) in &origins {
                println!("origin {name} listening on {addr}");
            }
        }
        let running = daemon::start(cfg)?;
        let fronts: Vec<(String, Vec<SocketAddr>)> = running.listening().to_vec();
        for (name, addrs) in &fronts {
            for a in addrs {
                println!("frontend {name} listening on {a}");
            }
        }
        if demo.is_some() {
            for (_, addrs) in &fronts {
                for a in addrs {
                    println!(
                        "try: curl -s http://{a}/hello   (repeat it: 70 % a and b in turn, 30 % the v2 canary)"
                    );
                    println!("     curl -s http://{a}/api/users   (the api backend)");
                    println!("     curl -s -b group=beta http://{a}/hello   (beta testers: always v2)");
                }
            }
            println!("Ctrl-C stops the demo.");
        }
        stop.await;
        tracing::info!("stopping: no new connections, open ones may finish");
        let stopped = running.shutdown().await;
        tracing::info!(drained = stopped.drained, "stopped");
        anyhow::Ok(())
    })
}

/// Install the SIGTERM/SIGINT handlers now; the returned future completes on the
/// first of them. Installed before anything is announced, so a signal sent as soon
/// as the listeners are printed is never the default (fatal) action.
fn stop_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
