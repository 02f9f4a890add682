//! The `segstream` command line. Thin: every subcommand calls into the library.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use segstream::generator::{generate, FunnelConfig};
use segstream_core::engine::{Engine, EngineConfig, ExplainError, Preview, DEFAULT_SAMPLE};
use segstream_core::event::InputFormat;
use segstream_core::segment::suggest::suggest;
use segstream_core::symbols::Symbols;
use segstream_core::time::{parse_duration, parse_rfc3339, Millis};

/// mimalloc: the engine allocates many small, short-lived buffers (event fields, profile
/// arenas); glibc malloc spent ~17% of the full path in its free-list management.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "segstream",
    version,
    about = "Real-time customer segmentation on Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: consume events from Kafka, produce transitions, serve HTTP.
    Run {
        /// Configuration file (TOML); `SEGSTREAM__SECTION__KEY` variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// The service against an embedded Kafka with simulated funnel traffic.
    Demo {
        /// Simulated customers.
        #[arg(long, default_value_t = 2000)]
        customers: usize,
        /// Where the HTTP API listens.
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: std::net::SocketAddr,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
        /// Print every transition, not only clicked-but-not-registered.
        #[arg(long)]
        verbose: bool,
        /// Segment definitions for the demo.
        #[arg(long, default_value = "segments/demo.toml")]
        segments: PathBuf,
    },
    /// Run the engine over a file of events and write the transitions it produces.
    Replay(ReplayArgs),
    /// Check a segment definitions file and list every error in it.
    Validate {
        /// The definitions file (TOML).
        #[arg(long, short)]
        segments: PathBuf,
    },
    /// Write the simulated reference funnel as JSON lines (for trying things out).
    Generate {
        #[arg(long, default_value_t = 1000)]
        customers: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Output file (`-` for stdout).
        #[arg(long, short, default_value = "-")]
        out: String,
    },
}

#[derive(Args)]
struct ReplayArgs {
    /// The segment definitions file (TOML).
    #[arg(long, short)]
    segments: PathBuf,
    /// Events, one JSON object per line (`-` for stdin).
    #[arg(long, short)]
    events: String,
    /// The events' format: `segstream` (segstream's own) or `segment` (the Segment Spec, as
    /// written by Twilio Segment, RudderStack and others; see docs/events.md).
    #[arg(long, value_parser = input_format, default_value = "segstream")]
    format: InputFormat,
    /// Where to write the transitions as JSON lines (`-` for stdout).
    #[arg(long, short)]
    transitions_out: String,
    /// Where to write the final profiles as JSON lines.
    #[arg(long)]
    profiles_out: Option<PathBuf>,
    /// How late an event may be and still count (e.g. 5m).
    #[arg(long, value_parser = duration, default_value = "5m")]
    allowed_lateness: Millis,
    /// Evict profiles without events for this long (`off` to keep them).
    #[arg(long, value_parser = duration_or_off, default_value = "400d")]
    profile_ttl: Ttl,
    /// After the last event, move time to this instant (RFC 3339) so that timers due by
    /// then fire; without it, time stops at the watermark of the last event.
    #[arg(long, value_parser = instant)]
    advance_to: Option<Millis>,
    /// "Now" for the future guard (RFC 3339; default: the wall clock): events stamped
    /// more than --max-future-skew after it are rejected as `future_timestamp`, as the
    /// live service rejects them. Set it for synthetic data dated in the future.
    #[arg(long, value_parser = instant)]
    now: Option<Millis>,
    /// How far ahead of "now" an event may be stamped (`off`: no limit).
    #[arg(long, value_parser = duration_or_off, default_value = "1h")]
    max_future_skew: Ttl,
    /// Keep at most this many profiles, evicting the least recently active (exits with
    /// cause `evicted`).
    #[arg(long)]
    max_profiles: Option<usize>,
    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    json_summary: bool,
    /// After the replay, preview this candidate segment (one `[segments.NAME]` table or a
    /// bare condition) over the final profiles and print the answer as JSON on stdout, as
    /// `POST /segments/preview` gives it. Nothing is activated.
    #[arg(long)]
    preview: Option<PathBuf>,
    /// After the replay, explain this customer's segments (any id of the person): each
    /// condition as a tree of values and results, and the customer's transitions of it,
    /// as pretty JSON on stdout (after the transitions, if they go to stdout too).
    #[arg(long, value_name = "ID")]
    explain: Option<String>,
    /// With --explain: only this segment (one JSON object instead of an array).
    #[arg(long = "segment", value_name = "NAME", requires = "explain")]
    explain_segment: Option<String>,
    /// Engines working in parallel, customers spread over them by id (a person's linked
    /// ids stay together). The transitions, profiles and summary are those of one worker,
    /// byte for byte. Default 1 (README, Performance). Always 1 with --max-profiles (the
    /// cap is over all profiles), --explain and --preview (they read one engine).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
}

/// How many workers a replay runs: as asked, else one; one with `--max-profiles` (the
/// cap counts every profile, so one engine must hold them all).
fn replay_workers(asked: Option<u16>, max_profiles: Option<usize>) -> usize {
    let workers = asked.map_or(1, usize::from);
    if workers > 1 && max_profiles.is_some() {
        eprintln!("note: --max-profiles caps all profiles together: replaying with one worker");
        return 1;
    }
    workers
}

fn duration(s: &str) -> Result<Millis, String> {
    parse_duration(s).ok_or_else(|| format!("invalid duration {s:?} (e.g. 30s, 5m, 24h, 30d)"))
}

/// A duration, or none (`off`).
#[derive(Clone, Copy)]
struct Ttl(Option<Millis>);

fn duration_or_off(s: &str) -> Result<Ttl, String> {
    if s == "off" {
        Ok(Ttl(None))
    } else {
        duration(s).map(|d| Ttl(Some(d)))
    }
}

fn input_format(s: &str) -> Result<InputFormat, String> {
    s.parse()
}

fn instant(s: &str) -> Result<Millis, String> {
    parse_rfc3339(s).ok_or_else(|| format!("invalid RFC 3339 time {s:?}"))
}

fn output(path: &str) -> io::Result<Box<dyn Write>> {
    Ok(if path == "-" {
        Box::new(BufWriter::new(io::stdout().lock()))
    } else {
        Box::new(BufWriter::new(File::create(path)?))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs to stderr, as text or JSON lines; `RUST_LOG` overrides the configured level.
fn init_logging(level: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on the first SIGTERM or SIGINT. A second signal exits at once; if draining
/// takes longer than `deadline`, the process exits with code 3. The handlers are installed
/// when this is called (not when first polled), so a signal during start-up is graceful too.
fn shutdown_signal(deadline: std::time::Duration) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received: draining (a second signal exits at once)");
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            eprintln!("second signal: exiting now");
            std::process::exit(130);
        });
        std::thread::spawn(move || {
            std::thread::sleep(deadline);
            eprintln!("shutdown deadline of {deadline:?} exceeded: exiting");
            std::process::exit(3);
        });
    }
}

fn serve(config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = match segstream::config::Config::load(config_path.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    init_logging(&config.log.level, &config.log.format);
    if let Err(e) = segstream::service::load_engine(&config) {
        eprintln!("{e:#}");
        return Ok(ExitCode::from(2));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let deadline = std::time::Duration::from_millis(config.shutdown_deadline as u64);
        let (tx, rx) = tokio::sync::oneshot::channel::<segstream::service::Running>();
        // SIGHUP reloads the segment definitions.
        tokio::spawn(async move {
            let Ok(running) = rx.await else { return };
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hup.recv().await.is_some() {
                match running.instance.reload().await {
                    Ok(r) => tracing::info!(version = %r.version, "reloaded on SIGHUP"),
                    Err(e) => tracing::error!("reload on SIGHUP rejected:\n{e}"),
                }
            }
        });
        let shutdown = shutdown_signal(deadline);
        segstream::service::run(config, shutdown, Some(tx)).await
    })?;
    Ok(ExitCode::SUCCESS)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config } => serve(config),
        Command::Demo {
            customers,
            listen,
            seconds,
            verbose,
            segments,
        } => {
            let mut config = segstream::config::Config::default();
            config.segments.file = segments;
            init_logging("warn,segstream=info", "text");
            segstream::demo::run(
                segstream::demo::DemoOptions {
                    customers,
                    listen,
                    duration: seconds.map(std::time::Duration::from_secs),
                    seed: 7,
                    verbose,
                },
                config,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { segments } => {
            let mut symbols = Symbols::new();
            match segstream::definitions::load(&segments, &mut symbols) {
                Ok(defs) => {
                    println!(
                        "{}: {} segments, version {}",
                        segments.display(),
                        defs.segments.len(),
                        defs.version
                    );
                    for s in &defs.segments {
                        println!("  {:<32} {}", s.name, s.version);
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(diags) => {
                    eprintln!("{diags}");
                    eprintln!("{} error(s)", diags.len());
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Generate {
            customers,
            seed,
            days,
            out,
        } => {
            let cfg = FunnelConfig {
                customers,
                seed,
                days,
                ..FunnelConfig::default()
            };
            let mut w = output(&out)?;
            for e in generate(&cfg) {
                w.write_all(e.json.as_bytes())?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(a) => {
            let mut symbols = Symbols::new();
            let defs = match segstream::definitions::load(&a.segments, &mut symbols) {
                Ok(d) => d,
                Err(diags) => {
                    eprintln!("{diags}");
                    eprintln!("{} error(s); nothing was replayed", diags.len());
                    return Ok(ExitCode::from(2));
                }
            };
            let config = EngineConfig {
                allowed_lateness: a.allowed_lateness,
                profile_ttl: a.profile_ttl.0,
                max_future_skew: a.max_future_skew.0,
                max_profiles: a.max_profiles,
                ..EngineConfig::default()
            };
            let workers = if a.explain.is_some() || a.preview.is_some() {
                1
            } else {
                replay_workers(a.workers, a.max_profiles)
            };
            let mut engines = vec![Engine::new(defs, symbols, config.clone())];
            while engines.len() < workers {
                let mut symbols = Symbols::new();
                let defs = segstream::definitions::load(&a.segments, &mut symbols)
                    .map_err(|d| anyhow::anyhow!("{d}"))?;
                engines.push(Engine::new(defs, symbols, config.clone()));
            }
            // The candidate is checked before the replay: an invalid one stops it early.
            let preview = match &a.preview {
                None => None,
                Some(_) if a.transitions_out == "-" => {
                    anyhow::bail!(
                        "--preview prints its answer on stdout: write the transitions to a \
                         file (--transitions-out FILE, or /dev/null)"
                    )
                }
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        anyhow::anyhow!("cannot read candidate {}: {e}", path.display())
                    })?;
                    let file = path.display().to_string();
                    match Preview::compile(&mut engines[0], &file, &text) {
                        Ok(p) => Some(p),
                        Err(diags) => {
                            eprintln!("{diags}");
                            eprintln!(
                                "{} error(s) in the candidate; nothing was replayed",
                                diags.len()
                            );
                            return Ok(ExitCode::from(2));
                        }
                    }
                }
            };
            // An unknown segment to explain stops before the replay.
            if let Some(name) = &a.explain_segment {
                let defs = engines[0].definitions();
                if defs.segment_index(name).is_none() {
                    let e = ExplainError::UnknownSegment {
                        name: name.clone(),
                        suggestion: suggest(name, defs.segments.iter().map(|s| &*s.name))
                            .map(str::to_string),
                    };
                    eprintln!("--segment: {e}");
                    return Ok(ExitCode::from(2));
                }
            }
            let input: Box<dyn io::BufRead> = if a.events == "-" {
                Box::new(BufReader::new(io::stdin().lock()))
            } else {
                Box::new(BufReader::new(File::open(&a.events).map_err(|e| {
                    anyhow::anyhow!("cannot open events file {}: {e}", a.events)
                })?))
            };
            let mut out = output(&a.transitions_out)?;
            let options = segstream::replay::ReplayOptions {
                advance_to: a.advance_to,
                now: Some(a.now.unwrap_or_else(segstream::clock::now_millis)),
                format: a.format,
            };
            let mut collected = a
                .explain
                .as_deref()
                .map(segstream::replay::CustomerTransitions::new);
            let summary = if let [engine] = &mut engines[..] {
                segstream::replay::replay_observed(engine, input, &mut out, options, &mut |t| {
                    if let Some(c) = &mut collected {
                        c.observe(t);
                    }
                })?
            } else {
                segstream::replay::replay_workers(&mut engines, input, &mut out, options)?
            };
            let engine = &engines[0];
            drop(out);
            if let Some(p) = &a.profiles_out {
                let mut w = BufWriter::new(File::create(p)?);
                segstream::replay::write_profiles_of(&engines, &mut w)?;
            }
            if a.json_summary {
                eprintln!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                eprint!("{}", summary.render());
            }
            if let Some(p) = &preview {
                let answer = segstream::replay::preview_answer(engine, p, DEFAULT_SAMPLE);
                println!("{}", serde_json::to_string_pretty(&answer)?);
            }
            if let Some(c) = &collected {
                let segment = a.explain_segment.as_deref();
                match segstream::replay::explanations(engine, c, segment) {
                    Ok(list) => {
                        let json = match (segment, list.first()) {
                            (Some(_), Some(one)) => serde_json::to_string_pretty(one)?,
                            _ => serde_json::to_string_pretty(&list)?,
                        };
                        let mut stdout = io::stdout().lock();
                        writeln!(stdout, "{json}")?;
                        stdout.flush()?;
                    }
                    Err(e) => {
                        eprintln!("--explain: {e}");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
