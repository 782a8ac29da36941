//! The `evlog` binary: parse arguments, start telemetry, run the command.

use clap::Parser;
use evlog::cli::Cli;
use evlog::cli::CliCommand;

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
                evlog::telemetry::init();
                let config = args.config().map_err(anyhow::Error::msg)?;
                let listener = tokio::net::TcpListener::bind(config.listen_addr)
                    .await
                    .map_err(|error| {
                        anyhow::anyhow!("cannot listen on {}: {error}", config.listen_addr)
                    })?;
                evlog::app::run(config, listener, shutdown_signal()).await
            }
            CliCommand::Append(args) => evlog::cli::append(args).await,
            CliCommand::Read(args) => evlog::cli::read(args).await,
            CliCommand::Status(args) => evlog::cli::status(args).await,
        }
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {error}");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!("cannot listen for SIGTERM: {error}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
