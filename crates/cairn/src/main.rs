//! The cairn server binary: etcd's flags, `ETCD_*` environment variables and `--config-file`,
//! JSON logs, and a clean shutdown on SIGTERM/SIGINT.

mod flags;
mod logging;

use clap::Parser as _;
use flags::Flags;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut flags = match Flags::from_process() {
        Ok(f) => f,
        Err(e) => return fail_early(&format!("{e:#}")),
    };
    if flags.version {
        println!(
            "etcd Version: {}\ncairn Version: {}\nGit SHA: not provided\n",
            cairn_server::config::ETCD_COMPAT_VERSION,
            cairn_server::config::CAIRN_VERSION
        );
        return ExitCode::SUCCESS;
    }
    if let Some(path) = flags.config_file.clone() {
        // As in etcd, a config file replaces every other flag and variable.
        let args = match flags::config_file_args(&path) {
            Ok(a) => a,
            Err(e) => return fail_early(&format!("{e:#}")),
        };
        for (k, _) in std::env::vars() {
            if k.starts_with("ETCD_") {
                std::env::remove_var(k);
            }
        }
        flags = match Flags::try_parse_from(args) {
            Ok(f) => f,
            Err(e) => return fail_early(&format!("--config-file {}: {e}", path.display())),
        };
    }
    let level = if flags.debug {
        "debug".to_string()
    } else {
        flags.log_level.clone()
    };
    if let Err(e) = logging::init(&level, &flags.log_outputs) {
        return fail_early(&format!("{e:#}"));
    }
    let cfg = match flags.into_config() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail_early(&format!("starting the async runtime: {e}")),
    };
    runtime.block_on(run(cfg))
}

/// Resolves on SIGINT or SIGTERM, logging which.
async fn stop_signal() {
    let sigterm = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "received signal; shutting down"),
        () = sigterm => tracing::info!(signal = "SIGTERM", "received signal; shutting down"),
    }
}

/// Before logging is set up, errors go to stderr as a JSON line of the same shape.
fn fail_early(msg: &str) -> ExitCode {
    eprintln!("{}", serde_json::json!({"level": "fatal", "msg": msg}));
    ExitCode::FAILURE
}

async fn run(cfg: cairn_server::ServerConfig) -> ExitCode {
    tracing::info!(
        etcd_version = cairn_server::config::ETCD_COMPAT_VERSION,
        cairn_version = cairn_server::config::CAIRN_VERSION,
        "starting cairn"
    );
    // A member of a cluster waits in start until it has joined; a signal must still stop it.
    let mut signals = std::pin::pin!(stop_signal());
    let started = tokio::select! {
        s = cairn_server::start(cfg) => s,
        () = &mut signals => return ExitCode::SUCCESS,
    };
    let mut server = match started {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return if matches!(e, cairn_server::server::ServerError::Removed) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    };
    tokio::select! {
        () = &mut signals => {}
        e = server.wait_fatal() => {
            tracing::error!("{e}");
            let removed = matches!(e, cairn_server::server::ServerError::Removed);
            // A removed member stops cleanly (etcd exits with status 0 then).
            if !removed {
                return ExitCode::FAILURE;
            }
        }
    }
    match server.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("shutdown: {e}");
            ExitCode::FAILURE
        }
    }
}
