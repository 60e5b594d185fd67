//! The `tenantd` command: `serve`, `tenants …`, `keys …`, `audit verify`
//! and `config check`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tenantd::audit::cli::{AuditCommand, run_audit};
use tenantd::config::{Config, LogFormat};
use tenantd::server::{Server, shutdown_signal};
use tenantd::tenants::cli::{KeysCommand, TenantsCommand, run_keys, run_tenants};
use tenantd::tenants::statics::config_from_env;

/// tenantd: a multi-tenant API server on embedded SQLite.
#[derive(Debug, Parser)]
#[command(name = "tenantd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve {
        /// YAML configuration file (environment variables override it).
        #[arg(long, env = "TENANTD_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to listen on (overrides server.bind).
        #[arg(long, value_name = "ADDR")]
        bind: Option<SocketAddr>,
        /// Data directory (overrides storage.data_dir).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Log format (overrides log.format).
        #[arg(long, value_enum, value_name = "FORMAT")]
        log_format: Option<CliLogFormat>,
    },
    /// Manage tenants on the data directory (JSON output).
    Tenants {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Manage API keys on the data directory (JSON output).
    Keys {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Check the audit log's hash chains (exit status 1 if one is broken).
    Audit {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// Which configuration and data directory an admin verb works on.
#[derive(Debug, clap::Args)]
struct Target {
    /// YAML configuration file (environment variables override it).
    #[arg(long, env = "TENANTD_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Data directory (overrides storage.data_dir).
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
}

impl Target {
    fn load(self) -> Result<Config, ExitCode> {
        let mut cfg = config_from_env(self.config.as_deref()).map_err(|errors| {
            eprintln!("{errors}");
            ExitCode::from(2)
        })?;
        if let Some(dir) = self.data_dir {
            cfg.storage.data_dir = dir;
        }
        Ok(cfg)
    }
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate FILE (with the environment layered over it) and print the
    /// effective configuration, secrets masked. Exit status 2 if invalid.
    Check {
        /// YAML configuration file.
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CliLogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match config_from_env(Some(&file)) {
            Ok(config) => {
                print!("{}", config.to_masked_yaml());
                eprintln!("configuration {} is valid", file.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(2)
            }
        },
        Command::Serve {
            config,
            bind,
            data_dir,
            log_format,
        } => {
            let mut cfg = match config_from_env(config.as_deref()) {
                Ok(cfg) => cfg,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(2);
                }
            };
            if let Some(bind) = bind {
                cfg.server.bind = bind;
            }
            if let Some(dir) = data_dir {
                cfg.storage.data_dir = dir;
            }
            if let Some(format) = log_format {
                cfg.log.format = match format {
                    CliLogFormat::Text => LogFormat::Text,
                    CliLogFormat::Json => LogFormat::Json,
                };
            }
            serve(cfg)
        }
        Command::Tenants { target, command } => match target.load() {
            Ok(cfg) => admin_verb(async move { run_tenants(&cfg, command).await }),
            Err(code) => code,
        },
        Command::Keys { target, command } => match target.load() {
            Ok(cfg) => admin_verb(async move { run_keys(&cfg, command).await }),
            Err(code) => code,
        },
        Command::Audit { target, command } => match target.load() {
            Ok(cfg) => {
                let mut intact = true;
                let code = admin_verb(async {
                    intact = run_audit(&cfg, command).await?;
                    Ok(())
                });
                if code == ExitCode::SUCCESS && !intact {
                    ExitCode::FAILURE
                } else {
                    code
                }
            }
            Err(code) => code,
        },
    }
}

/// Runs `work` to completion on a tokio runtime (multi-threaded for the
/// server, one thread for admin verbs); an error goes to stderr (and the
/// log), exit status 1.
fn run_to_end(
    multi_thread: bool,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tenantd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn admin_verb(verb: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    run_to_end(false, verb)
}

fn serve(config: Config) -> ExitCode {
    tenantd::telemetry::init(&config.log);
    run_to_end(true, async move {
        let server = Server::build(config, None).await?;
        server.run(shutdown_signal()).await
    })
}
