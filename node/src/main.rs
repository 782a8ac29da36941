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
                let shutdown = evlog::app::shutdown_signal()?;
                // Chaos-test builds only: arm the crash points named in `FAILPOINTS`, and cut
                // the store's power on SIGUSR1 (every write since its last sync is lost).
                #[cfg(feature = "failpoints")]
                let _failpoints = fail::FailScenario::setup();
                #[cfg(feature = "failpoints")]
                power_loss_on_sigusr1()?;
                evlog::telemetry::init(args.log_format);
                let config = args.config().map_err(anyhow::Error::msg)?;
                let listeners = evlog::app::Listeners::bind(&config).await?;
                evlog::app::run(config, listeners, shutdown).await
            }
            CliCommand::Bench(args) => evlog::bench::run(args).await,
            client => evlog::cli::run_client(client).await,
        }
    })
}

/// Failpoints builds: SIGUSR1 cuts the store's power at its next sync, when everything the
/// commit being made durable wrote is lost with the rest since the last sync (or after 200 ms
/// if no sync comes; see `evlog_raft_store::testing`), then aborts the process. The chaos
/// campaign sends it to every node at once (`power-loss-all`).
#[cfg(feature = "failpoints")]
fn power_loss_on_sigusr1() -> anyhow::Result<()> {
    use tokio::signal::unix::SignalKind;
    use tokio::signal::unix::signal;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    tokio::spawn(async move {
        if usr1.recv().await.is_some() {
            evlog_raft_store::testing::lose_power_at_next_sync_and_abort(
                "SIGUSR1",
                std::time::Duration::from_millis(200),
            );
        }
    });
    Ok(())
}
