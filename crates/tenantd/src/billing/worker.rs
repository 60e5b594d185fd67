//! Closing months and delivering the outbox.

use std::sync::Arc;
use std::time::Duration;

use crate::task::OwnedTask;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tenancy::TenantId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{BillingEvent, CloseReport, EVENT_TYPE, NewBillingEvent};
use crate::clock::{Clock, month_of_ms, previous_month, rfc3339_from_ms};
use crate::config::BillingConfig;
use crate::store::{AdminStore, StoreError};
use crate::tenants::TenantFilter;
use crate::tenants::registry::Registry;
use crate::usage::month_report;

/// Events fetched per delivery round.
const BATCH: u32 = 64;
/// How long into a new month the previous one is closed automatically.
const AUTO_CLOSE_GRACE_MS: i64 = 15 * 60 * 1_000;
/// Tenants read per page when closing a month.
const PAGE: u64 = 1_000;

/// `YYYY-MM-01T00:00:00` of the month after `month` (RFC 3339 prefix, so it
/// compares with stored UTC times as text).
fn next_month_start(month: &str) -> Option<String> {
    let (year, m) = crate::clock::parse_month(month)?;
    let (year, m) = if m == 12 {
        (year + 1, 1)
    } else {
        (year, m + 1)
    };
    Some(format!("{year:04}-{m:02}-01T00:00:00"))
}

/// `X-Tenantd-Signature` value for `body` sent at unix second `t`:
/// `t=<t>,v1=<hex HMAC-SHA-256(secret, "<t>.<body>")>`.
pub fn sign(secret: &str, t: i64, body: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Month closing and webhook delivery (cheap to clone).
#[derive(Clone)]
pub struct BillingWorker {
    store: AdminStore,
    registry: Arc<Registry>,
    config: BillingConfig,
    client: reqwest::Client,
    wake: Arc<Notify>,
    /// Month boundaries, event times, delivery deadlines and signatures.
    clock: Clock,
}

impl std::fmt::Debug for BillingWorker {
    // The webhook secret stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingWorker")
            .field("webhook_url", &self.config.webhook_url)
            .finish_non_exhaustive()
    }
}

impl BillingWorker {
    /// A worker over `store`; tenants and their plans come from `registry`,
    /// the time from `clock`.
    pub fn new(
        store: AdminStore,
        registry: Arc<Registry>,
        config: BillingConfig,
        clock: Clock,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms.max(1)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            store,
            registry,
            config,
            client,
            wake: Arc::new(Notify::new()),
            clock,
        }
    }

    /// Writes one event per tenant for `month` (tenants in the registry
    /// and any tenant with usage in that month) and wakes the delivery
    /// loop. Closing again adds events only for tenants that had none.
    pub async fn close(&self, month: &str) -> Result<CloseReport, StoreError> {
        let now = self.clock.now_ms();
        let tenants = self.tenants_to_bill(month).await?;
        let total = tenants.len();
        let created = self.write_events(month, &tenants, now).await?;
        tracing::info!(month, created, tenants = total, "billing month closed");
        self.wake.notify_one();
        Ok(CloseReport {
            month: month.to_owned(),
            created,
            existing: u64::try_from(total)
                .unwrap_or(u64::MAX)
                .saturating_sub(created),
        })
    }

    /// The tenants billed for `month`, with their plans: those that existed
    /// before the month ended (a tenant created later has nothing to bill
    /// for it), plus any tenant with usage in it (header-only tenants, or
    /// tenants since deleted), on the unregistered plan.
    async fn tenants_to_bill(&self, month: &str) -> Result<Vec<(TenantId, String)>, StoreError> {
        let month_end = next_month_start(month);
        let mut tenants: Vec<(TenantId, String)> = Vec::new();
        let mut filter = TenantFilter {
            limit: PAGE,
            ..TenantFilter::default()
        };
        loop {
            let page = self.store.tenants().list_tenants(&filter).await?;
            let last = page.last().map(|row| row.id.clone());
            tenants.extend(
                page.into_iter()
                    .filter(|row| {
                        month_end
                            .as_deref()
                            .is_none_or(|end| row.created_at.as_str() < end)
                    })
                    .map(|row| (row.id, row.plan)),
            );
            match last {
                Some(id) => filter.after = Some(id),
                None => break,
            }
        }
        let unregistered = self.registry.plans().unregistered().plan.to_string();
        let known: std::collections::HashSet<TenantId> =
            tenants.iter().map(|(t, _)| t.clone()).collect();
        for id in self.store.usage().tenants_with_usage(month).await? {
            if !known.contains(&id) {
                tenants.push((id, unregistered.clone()));
            }
        }
        Ok(tenants)
    }

    /// Writes the events of `tenants` a page at a time, so 100,000 tenants
    /// never mean 100,000 payloads in memory; the month is marked closed
    /// with the last page. A close cut short is completed by the next one
    /// (the inserts are idempotent). Returns the events created.
    async fn write_events(
        &self,
        month: &str,
        tenants: &[(TenantId, String)],
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut created = 0;
        let mut pages = tenants
            .chunks(usize::try_from(PAGE).unwrap_or(1_000))
            .peekable();
        if pages.peek().is_none() {
            self.store
                .billing()
                .close_month(month, &[], now, true)
                .await?;
        }
        while let Some(page) = pages.next() {
            let mut events = Vec::with_capacity(page.len());
            for (tenant, plan) in page {
                events.push(self.event(month, tenant, plan, now).await?);
            }
            let last = pages.peek().is_none();
            created += self
                .store
                .billing()
                .close_month(month, &events, now, last)
                .await?;
        }
        Ok(created)
    }

    /// The event of `tenant` for `month`: its usage report on `plan`.
    async fn event(
        &self,
        month: &str,
        tenant: &TenantId,
        plan: &str,
        now: i64,
    ) -> Result<NewBillingEvent, StoreError> {
        let report = month_report(&self.store, self.registry.plans(), tenant, plan, month).await?;
        let id = format!("evt_{}", ulid::Ulid::new());
        let payload = serde_json::json!({
            "id": id,
            "type": EVENT_TYPE,
            "created_at": rfc3339_from_ms(now),
            "tenant_id": tenant.as_str(),
            "month": month,
            "usage": report,
        });
        Ok(NewBillingEvent {
            tenant: tenant.clone(),
            id,
            payload: payload.to_string(),
        })
    }

    /// Starts the loop: auto-closes the previous month once it has ended
    /// (when `billing.auto_close`) and delivers due events.
    pub fn start(&self) -> OwnedTask {
        let worker = self.clone();
        OwnedTask::spawn("billing worker", move |token| worker.run(token))
    }

    async fn run(self, cancel: CancellationToken) {
        let poll = Duration::from_millis(self.config.poll_ms.max(10));
        loop {
            if self.config.auto_close
                && let Err(e) = self.auto_close().await
            {
                tracing::warn!(error = %e, "closing the previous billing month failed; will retry");
            }
            if let Err(e) = self.deliver_due(&cancel).await {
                tracing::warn!(error = %e, "billing outbox could not be read; will retry");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    async fn auto_close(&self) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let current = month_of_ms(now);
        // Wait out the grace after midnight, so requests of the old month
        // still in flight or in an instance's usage batch are written
        // before its events are.
        if month_of_ms(now - AUTO_CLOSE_GRACE_MS) != current {
            return Ok(());
        }
        let Some(previous) = previous_month(&current) else {
            return Ok(());
        };
        if !self.store.billing().month_closed(&previous).await? {
            self.close(&previous).await?;
        }
        Ok(())
    }

    /// Delivers every due event (in rounds of [`BATCH`]).
    async fn deliver_due(&self, cancel: &CancellationToken) -> Result<(), StoreError> {
        let Some(url) = self.config.webhook_url.as_deref() else {
            return Ok(());
        };
        loop {
            let due = self
                .store
                .billing()
                .due_events(self.clock.now_ms(), BATCH)
                .await?;
            if due.is_empty() {
                return Ok(());
            }
            for event in due {
                if cancel.is_cancelled() {
                    return Ok(());
                }
                self.attempt(url, event).await?;
            }
        }
    }

    async fn attempt(&self, url: &str, event: BillingEvent) -> Result<(), StoreError> {
        let attempts = event.attempts.saturating_add(1);
        let t = self.clock.now_ms() / 1_000;
        let mut request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("idempotency-key", &event.id)
            .header("x-tenantd-event", EVENT_TYPE);
        if let Some(secret) = &self.config.webhook_secret {
            request = request.header("x-tenantd-signature", sign(secret, t, &event.payload));
        }
        let outcome = match request.body(event.payload.clone()).send().await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("webhook answered {}", resp.status().as_u16())),
            // Without the URL: it may carry credentials.
            Err(e) => Err(format!("webhook unreachable: {}", e.without_url())),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(event = %event.id, tenant = %event.tenant_id, month = %event.month, attempts, "billing event delivered");
                self.store
                    .billing()
                    .mark_delivered(event.tenant_id.as_str(), &event.id, attempts)
                    .await
            }
            Err(error) => {
                let next = (attempts < self.config.max_attempts).then(|| {
                    self.clock
                        .now_ms()
                        .saturating_add(self.backoff_ms(attempts))
                });
                tracing::warn!(event = %event.id, attempts, gave_up = next.is_none(), %error, "billing delivery failed");
                self.store
                    .billing()
                    .mark_attempt_failed(
                        event.tenant_id.as_str(),
                        &event.id,
                        attempts,
                        next,
                        &error,
                    )
                    .await
            }
        }
    }

    /// Delay before attempt `attempts + 1`.
    fn backoff_ms(&self, attempts: u32) -> i64 {
        let factor = 1_u64 << attempts.saturating_sub(1).min(30);
        let ms = self
            .config
            .retry_base_ms
            .saturating_mul(factor)
            .min(self.config.retry_max_ms);
        i64::try_from(ms).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::sign;

    #[test]
    fn next_month_start_rolls_the_year() {
        assert_eq!(
            super::next_month_start("2026-12").as_deref(),
            Some("2027-01-01T00:00:00")
        );
        assert_eq!(
            super::next_month_start("2026-02").as_deref(),
            Some("2026-03-01T00:00:00")
        );
        assert_eq!(super::next_month_start("nope"), None);
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently with Python:
        // hmac.new(b"secret", b"1700000000.{}", hashlib.sha256).hexdigest()
        assert_eq!(
            sign("secret", 1_700_000_000, "{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }
}
