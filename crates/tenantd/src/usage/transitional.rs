//! TRANSITIONAL: the counter helpers as the per-engine jobs and records
//! repositories still call them, inside their own sqlx transactions. Once
//! those features are written once on `Db` they use [`super::count_in`]
//! and [`super::counter_in`] and this file goes.

/// For the SQLite repositories.
pub(crate) mod sqlite {
    use sqlx::{Sqlite, Transaction};
    use tenancy::TenantId;

    use super::super::{as_i64, as_u64};
    use crate::clock::{month_of_ms, now_ms};
    use crate::store::StoreError;
    use crate::store::sqlite_support::map_sqlx;

    const ADD_COUNTER: &str = "INSERT INTO usage_counters (tenant_id, month, metric, value) \
     VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (tenant_id, month, metric) DO UPDATE SET value = value + excluded.value";

    /// Adds `by` to this month's `metric` of `tenant`, inside a write's own
    /// transaction (the figure a quota reads is the figure billed).
    pub(crate) async fn count_in_tx(
        tx: &mut Transaction<'static, Sqlite>,
        tenant: &TenantId,
        metric: &str,
        by: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(ADD_COUNTER)
            .bind(tenant.as_str())
            .bind(month_of_ms(now_ms()))
            .bind(metric)
            .bind(as_i64(by))
            .execute(&mut **tx)
            .await
            .map_err(map_sqlx)?;
        Ok(())
    }

    /// This month's `metric` of `tenant`, read inside a write's transaction.
    pub(crate) async fn counter_in_tx(
        tx: &mut Transaction<'static, Sqlite>,
        tenant: &TenantId,
        metric: &str,
    ) -> Result<u64, StoreError> {
        let value: Option<i64> = sqlx::query_scalar(
            "SELECT value FROM usage_counters WHERE tenant_id = ?1 AND month = ?2 AND metric = ?3",
        )
        .bind(tenant.as_str())
        .bind(month_of_ms(now_ms()))
        .bind(metric)
        .fetch_optional(&mut **tx)
        .await
        .map_err(map_sqlx)?;
        Ok(value.map_or(0, as_u64))
    }
}

/// For the PostgreSQL repositories.
pub(crate) mod postgres {
    use sqlx::{Postgres, Transaction};
    use tenancy::TenantId;

    use super::super::{as_i64, as_u64};
    use crate::clock::{month_of_ms, now_ms};
    use crate::store::StoreError;
    use crate::store::pg_support::map_pg;

    /// Adds `$4` to counter (`$1`, `$2`, `$3`).
    const ADD_COUNTER: &str = "INSERT INTO usage_counters AS u (tenant_id, month, metric, value) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (tenant_id, month, metric) DO UPDATE SET value = u.value + excluded.value";

    /// Adds `by` to this month's `metric` of `tenant`, inside a write's own
    /// transaction (the figure a quota reads is the figure billed). The
    /// counter row stays locked until that transaction ends.
    pub(crate) async fn count_in_tx(
        tx: &mut Transaction<'static, Postgres>,
        tenant: &TenantId,
        metric: &str,
        by: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(ADD_COUNTER)
            .bind(tenant.as_str())
            .bind(month_of_ms(now_ms()))
            .bind(metric)
            .bind(as_i64(by))
            .execute(&mut **tx)
            .await
            .map_err(map_pg)?;
        Ok(())
    }

    /// This month's `metric` of `tenant`, read inside a write's transaction
    /// with the counter row locked (created at 0 when missing) until that
    /// transaction ends: concurrent quota-checked writes of the tenant queue
    /// here, and each reads the count the previous one committed.
    pub(crate) async fn counter_in_tx(
        tx: &mut Transaction<'static, Postgres>,
        tenant: &TenantId,
        metric: &str,
    ) -> Result<u64, StoreError> {
        let month = month_of_ms(now_ms());
        sqlx::query(
            "INSERT INTO usage_counters (tenant_id, month, metric, value) VALUES ($1, $2, $3, 0) \
         ON CONFLICT (tenant_id, month, metric) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(&month)
        .bind(metric)
        .execute(&mut **tx)
        .await
        .map_err(map_pg)?;
        let value: i64 = sqlx::query_scalar(
            "SELECT value FROM usage_counters WHERE tenant_id = $1 AND month = $2 AND metric = $3 \
         FOR UPDATE",
        )
        .bind(tenant.as_str())
        .bind(&month)
        .bind(metric)
        .fetch_one(&mut **tx)
        .await
        .map_err(map_pg)?;
        Ok(as_u64(value))
    }
}
