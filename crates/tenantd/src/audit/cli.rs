//! `tenantd audit verify [--tenant T]`: walks the hash chains of a data
//! directory and reports the first break of each. Exit status 1 when any
//! chain is broken, so it can gate a cron job or a backup.

use anyhow::Context as _;
use clap::Subcommand;
use tenancy::TenantId;

use super::{AuditRepo, ChainReport};
use crate::config::Config;
use crate::store::{DataUpgrades, Store};

/// `tenantd audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chains (all, or one tenant's) and print a JSON
    /// report per chain.
    Verify {
        /// Only this tenant's chain.
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Runs an audit verb. `Ok(false)` when a chain is broken.
pub async fn run_audit(config: &Config, command: AuditCommand) -> anyhow::Result<bool> {
    // A one-shot verb leaves pending data upgrades to the server.
    let store = Store::open(
        &config.storage,
        1,
        crate::clock::Clock::system(),
        DataUpgrades::none(),
    )
    .await?;
    let admin = store.admin();
    let AuditCommand::Verify { tenant } = command;
    let chains = match tenant {
        Some(t) => {
            let id = TenantId::new(&t).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
            vec![id.as_str().to_owned()]
        }
        None => admin.db().chains().await.context("listing audit chains")?,
    };
    let mut intact = true;
    let mut reports: Vec<ChainReport> = Vec::with_capacity(chains.len());
    for chain in chains {
        let report = admin
            .db()
            .verify_chain(&chain)
            .await
            .with_context(|| format!("verifying the chain of {chain:?}"))?;
        if let Some(problem) = &report.problem {
            intact = false;
            let name = if chain.is_empty() {
                "(system)"
            } else {
                chain.as_str()
            };
            eprintln!("audit chain {name}: {problem}");
        }
        reports.push(report);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({ "intact": intact, "chains": reports }))?
    );
    store.close().await;
    Ok(intact)
}
