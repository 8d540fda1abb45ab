//! The `fulcrum` command line: run, check, origin, demo. Logic lives in the library.
//!
//! Exit codes: 0 stopped cleanly; 1 configuration or start error; 2 usage error;
//! 3 stopped, but connections still open at the end of the grace period (or at
//! a second stop signal) were cut.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};
use fulcrum::config::{self, Config};
use fulcrum::{daemon, demo, origin};

/// Stopped cleanly.
const EXIT_OK: u8 = 0;
/// A configuration or start error (bad file, address in use, ...).
const EXIT_CONFIG: u8 = 1;
/// A usage error (clap exits with 2 itself for bad arguments).
const EXIT_USAGE: u8 = 2;
/// Stopped, with connections cut at the end of the grace period.
const EXIT_CUT: u8 = 3;

#[derive(Parser)]
#[command(
    name = "fulcrum",
    version,
    about = "An L4/L7 load balancer configured by one TOML file",
    after_help = "Exit codes: 0 stopped cleanly, 1 configuration or start error, 2 usage error, \
                  3 stopped with connections cut at the end of the grace period.\n\
                  Signals: SIGTERM/SIGINT stop gracefully (a second one stops at once); \
                  SIGHUP reloads the config file; SIGUSR1 reopens the access log file (for logrotate)."
)]
struct Cli {
    /// Config file: `fulcrum -c FILE` is `fulcrum run -c FILE`.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon in the foreground.
    Run {
        /// Config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate the config: print a summary and exit 0, or every error and exit 1.
    Check {
        /// Config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run a small test origin (HTTP by default, TCP echo with --tcp).
    Origin {
        /// Address to listen on (IP:PORT).
        #[arg(long, value_name = "IP:PORT")]
        listen: SocketAddr,
        /// Name it answers with (`x-server` header and body; TCP: ignored).
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
    /// Reload a running daemon's configuration through its admin socket and
    /// print the outcome (exit 1 when the file was refused).
    Reload {
        /// Config file (its `[admin] socket` is used).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The admin socket, if not the config's.
        #[arg(short, long, value_name = "SOCKET")]
        socket: Option<PathBuf>,
    },
    /// Send a command to a running daemon's admin socket and print the answer
    /// (exit 1 on an error answer); with no command, an interactive session.
    Admin {
        /// The admin socket (default: the `[admin] socket` of the config file).
        #[arg(short, long, value_name = "SOCKET")]
        socket: Option<PathBuf>,
        /// Config file to find the socket in.
        #[arg(
            short,
            long,
            value_name = "FILE",
            default_value = "/etc/fulcrum/fulcrum.toml"
        )]
        config: PathBuf,
        /// The command, like `show servers state` or `set server app/a state drain`.
        command: Vec<String>,
    },
    /// Start one test origin per server of the demo config (four, built in) and
    /// the daemon in front of them, and print what to try.
    Demo {
        /// Another config to demo (its servers' addresses get test origins).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// `fulcrum admin`: one command (its answer printed; exit 1 when it is an
/// error), or an interactive session when there is none.
fn admin_client(
    socket: Option<PathBuf>,
    config: &std::path::Path,
    command: &[String],
) -> Result<u8> {
    use std::io::{BufRead as _, Read as _, Write as _};
    let socket = match socket {
        Some(s) => s,
        None => {
            let cfg = config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
            cfg.admin.socket.with_context(|| {
                format!(
                    "{}: no [admin] socket configured (or give one with -s SOCKET)",
                    config.display()
                )
            })?
        }
    };
    let mut s = std::os::unix::net::UnixStream::connect(&socket)
        .with_context(|| format!("cannot connect to the admin socket {}", socket.display()))?;
    if !command.is_empty() {
        s.write_all(format!("{}\n", command.join(" ")).as_bytes())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        print!("{answer}");
        let error = answer.lines().any(|l| l.starts_with("error: "));
        return Ok(if error { EXIT_CONFIG } else { EXIT_OK });
    }
    // Interactive: the socket's prompt mode, lines from stdin, answers printed
    // as they come, until `quit` or the end of input.
    s.write_all(b"prompt\n")?;
    let mut reader = s.try_clone()?;
    let printer = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
        }
    });
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if s.write_all(format!("{line}\n").as_bytes()).is_err() {
            break;
        }
    }
    let _ = s.write_all(b"quit\n");
    let _ = printer.join();
    Ok(EXIT_OK)
}

/// Tell systemd (`Type=notify`) about the daemon's state, when it runs us:
/// a datagram to `$NOTIFY_SOCKET` (a path, or an abstract name after `@`).
fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
        }
        None => sock.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// CLOCK_MONOTONIC in microseconds (what systemd's RELOADING=1 wants).
fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::units::parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cmd = match (cli.cmd, cli.config) {
        (Some(cmd), _) => cmd,
        (None, Some(config)) => Cmd::Run { config },
        (None, None) => {
            let _ = Cli::command().print_help();
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Ordinary errors are one line, whatever RUST_BACKTRACE says: backtraces
    // are for bugs (panics), not for a port in use.
    match dispatch(cmd) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("fulcrum: {e:#}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn dispatch(cmd: Cmd) -> Result<u8> {
    match cmd {
        Cmd::Admin {
            socket,
            config,
            command,
        } => admin_client(socket, &config, &command),
        Cmd::Reload { config, socket } => admin_client(socket, &config, &["reload".to_string()]),
        Cmd::Run { config } => {
            let Some(cfg) = load(&config) else {
                return Ok(EXIT_CONFIG);
            };
            init_logging(&cfg);
            run(cfg, Hints::None)
        }
        Cmd::Check { config } => {
            let Some(cfg) = load(&config) else {
                return Ok(EXIT_CONFIG);
            };
            print!("{}", cfg.summary());
            if let Some(w) = fulcrum::fdlimit::maxconn_warning(&cfg, fulcrum::fdlimit::current().1)
            {
                eprintln!("{w}");
            }
            Ok(EXIT_OK)
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
                let mut signals = Signals::install()?;
                let o = origin::spawn(listen, opts)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                println!("origin listening on {}", o.addr);
                signals.stop().await;
                anyhow::Ok(EXIT_OK)
            })
        }
        Cmd::Demo { config } => {
            let Some(cfg) = print_errors(demo::load(config.as_deref()), config.as_deref()) else {
                return Ok(EXIT_CONFIG);
            };
            init_logging(&cfg);
            let hints = if config.is_some() {
                Hints::Generic
            } else {
                Hints::Demo
            };
            run(cfg, hints)
        }
    }
}

/// Load a config, printing its warnings, or its errors (then `None`).
fn load(path: &Path) -> Option<Config> {
    print_errors(config::load(path), Some(path))
}

fn print_errors(r: Result<Config, config::ConfigErrors>, path: Option<&Path>) -> Option<Config> {
    match r {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("{}:{}:{}: warning: {}", w.file, w.line, w.col, w.message);
            }
            Some(c)
        }
        Err(e) => {
            eprintln!("{e}");
            let name = path.map_or_else(|| "config/demo.toml".into(), |p| p.display().to_string());
            eprintln!("{name}: {} error(s)", e.0.len());
            None
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

/// What `demo` prints once the daemon listens.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hints {
    None,
    /// The built-in demo: its routes.
    Demo,
    /// Another file: one line per http frontend.
    Generic,
}

/// Run the daemon until SIGTERM or SIGINT, then stop gracefully (a second
/// signal cuts the grace period short). With demo hints, start the demo
/// origins first.
fn run(cfg: Config, hints: Hints) -> Result<u8> {
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    control.block_on(async move {
        let mut signals = Signals::install()?;
        if hints != Hints::None {
            let origins = demo::start_origins(&cfg)
                .await
                .context("cannot start the demo origins")?;
            for (name, addr) in &origins {
                println!("origin {name} listening on {addr}");
            }
        }
        let http: Vec<String> = cfg
            .frontends
            .iter()
            .filter(|f| f.mode == config::Mode::Http)
            .map(|f| f.name.clone())
            .collect();
        let running = daemon::start(cfg)?;
        signals.log = running.access_log();
        signals.reload = Some(running.ctl());
        let fronts: Vec<(String, Vec<SocketAddr>)> = running.listening().to_vec();
        for (name, addrs) in &fronts {
            for a in addrs {
                println!("frontend {name} listening on {a}");
            }
        }
        if let Some(a) = running.stats_addr() {
            println!("stats page on http://{a}/");
        }
        print_hints(hints, &fronts, &http);
        sd_notify("READY=1");
        signals.stop().await;
        sd_notify("STOPPING=1");
        tracing::info!(
            open = running.open_connections(),
            "stopping: no new connections, open ones may finish"
        );
        let stopped = running.shutdown_or(signals.stop()).await;
        tracing::info!(drained = stopped.drained, "stopped");
        anyhow::Ok(if stopped.drained { EXIT_OK } else { EXIT_CUT })
    })
}

fn print_hints(hints: Hints, fronts: &[(String, Vec<SocketAddr>)], http: &[String]) {
    match hints {
        Hints::None => return,
        Hints::Demo => {
            for (_, addrs) in fronts {
                for a in addrs {
                    println!(
                        "try: curl -s http://{a}/hello   (repeat it: 70 % a and b in turn, 30 % the v2 canary)"
                    );
                    println!("     curl -s http://{a}/api/users   (the api backend)");
                    println!(
                        "     curl -s -b group=beta http://{a}/hello   (beta testers: always v2)"
                    );
                }
            }
        }
        Hints::Generic => {
            for (name, addrs) in fronts.iter().filter(|(n, _)| http.contains(n)) {
                for a in addrs {
                    println!("try: curl -s http://{a}/   (frontend {name})");
                }
            }
        }
    }
    println!("Ctrl-C stops the demo.");
}

/// The signals the daemon handles. Installed before anything is announced, so
/// a signal sent as soon as the listeners are printed never takes its default
/// (fatal) action. SIGHUP reloads the config file (`systemctl reload` sends
/// it); SIGUSR1 reopens the access log's file.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    /// The access log, once the daemon runs.
    log: Option<std::sync::Arc<fulcrum::stats::access::AccessLog>>,
    /// What reloads the config file, once the daemon runs.
    reload: Option<std::sync::Arc<fulcrum::admin::Ctl>>,
}

impl Signals {
    fn install() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
            usr1: signal(SignalKind::user_defined1()).context("cannot handle SIGUSR1")?,
            log: None,
            reload: None,
        })
    }

    /// The next SIGTERM or SIGINT (SIGHUP and SIGUSR1 meanwhile are logged).
    async fn stop(&mut self) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => match &self.reload {
                    Some(ctl) => {
                        tracing::info!("SIGHUP received: reloading the configuration");
                        sd_notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
                        match ctl.reload() {
                            Ok(done) => tracing::info!("{}", done.trim_end()),
                            Err(e) => tracing::warn!("{e}"),
                        }
                        sd_notify("READY=1");
                    }
                    None => tracing::info!("SIGHUP received before the daemon runs; ignored"),
                },
                _ = self.usr1.recv() => match &self.log {
                    Some(log) => {
                        tracing::info!("SIGUSR1 received: reopening the access log");
                        log.reopen();
                    }
                    None => tracing::info!("SIGUSR1 received: no access log to reopen; ignored"),
                },
            }
        }
    }
}
