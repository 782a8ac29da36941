//! The `evlog` binary: parse arguments, start telemetry, run the command.

use clap::Parser;
use evlog::cli::Cli;
use evlog::cli::CliCommand;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            CliCommand::Serve(args) => {
                let shutdown = shutdown_signal()?;
                // Chaos-test builds only: arm the crash points named in `FAILPOINTS`.
                #[cfg(feature = "failpoints")]
                let _failpoints = fail::FailScenario::setup();
                evlog::telemetry::init();
                let config = args.config().map_err(anyhow::Error::msg)?;
                let listener = tokio::net::TcpListener::bind(config.listen_addr)
                    .await
                    .map_err(|error| {
                        anyhow::anyhow!("cannot listen on {}: {error}", config.listen_addr)
                    })?;
                evlog::app::run(config, listener, shutdown).await
            }
            CliCommand::Append(args) => evlog::cli::append(args).await,
            CliCommand::Read(args) => evlog::cli::read(args).await,
            CliCommand::Status(args) => evlog::cli::status(args).await,
            CliCommand::Streams(args) => evlog::cli::streams(args).await,
            CliCommand::Bench(args) => evlog::bench::run(args).await,
        }
    })
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are registered before this returns, so a
/// signal that arrives while the node is still opening its store is not lost (the default
/// action would end the process at once).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::SignalKind;
    use tokio::signal::unix::signal;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
