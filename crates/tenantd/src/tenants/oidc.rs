//! The OIDC binding rule: an (issuer, client id) pair belongs to exactly
//! one tenant.
//!
//! A token of a tenant's issuer carries no trustworthy tenant of its own:
//! the tenant is the one whose binding matches the token's `iss` and `aud`.
//! Were a pair bound twice, tokens minted for one tenant's users would be
//! accepted as the other's, so the pair is unique across tenants. Two
//! tenants may share an issuer (one identity provider, several
//! applications) as long as their client ids differ, because the client id
//! is the audience the provider puts in each token; a tenant always has a
//! client id (validation requires one), so no binding claims a whole
//! issuer.
//!
//! The rule is checked where a binding is written, inside the registry
//! lock of the writing transaction (create, update, static configuration,
//! import: [`holder`] over every stored binding), and the
//! in-memory map refuses tokens for a pair that is bound twice anyway
//! (rows written before the rule existed) instead of picking one.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};
use tenancy::TenantId;

use super::model::{Oidc, TenantRow};

/// The `detail` of a refused create, update or import. It names neither
/// the other tenant nor its id: which issuer another tenant uses is that
/// tenant's business.
pub const TAKEN: &str = "OIDC issuer and client id (token audience) are already bound to another \
                         tenant; each issuer and client id pair can belong to one tenant only";

/// A binding in the form two bindings are compared in: the issuer without
/// trailing slashes and in lower case (so `https://Login.example.com/` and
/// `https://login.example.com` are one issuer), the client id trimmed
/// (otherwise compared exactly, as audiences are).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PairKey {
    /// Canonical issuer ([`canonical_issuer`]).
    pub issuer: String,
    /// Client id, trimmed.
    pub client_id: String,
}

impl PairKey {
    /// The key of a stored or proposed binding.
    pub fn new(issuer: &str, client_id: &str) -> Self {
        Self {
            issuer: canonical_issuer(issuer),
            client_id: client_id.trim().to_owned(),
        }
    }

    /// The key of a tenant's OIDC settings.
    pub fn of(oidc: &Oidc) -> Self {
        Self::new(&oidc.issuer, &oidc.client_id)
    }
}

/// The issuer as bindings and the registry compare it. Deliberately
/// coarser than the exact `iss` comparison a token passes afterwards: two
/// spellings of one provider can never be bound to two tenants.
pub fn canonical_issuer(issuer: &str) -> String {
    issuer.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// A binding as stored: (tenant, issuer, client id).
pub type Stored = (TenantId, String, String);

/// The tenant other than `me` that already holds `want` among `stored`
/// (every stored binding, `me`'s own included), if any: the write is then
/// refused. With `keep_own`, a pair `me` already holds is not judged again,
/// so editing other fields of a tenant whose pair was bound twice before
/// the rule existed still works (its tokens stay refused until one side
/// changes).
pub fn holder(
    me: &TenantId,
    want: &PairKey,
    stored: &[Stored],
    keep_own: bool,
) -> Option<TenantId> {
    let same = |(_, issuer, client): &&Stored| PairKey::new(issuer, client) == *want;
    if keep_own
        && stored
            .iter()
            .filter(|(id, _, _)| id == me)
            .any(|s| same(&s))
    {
        return None;
    }
    stored
        .iter()
        .filter(|(id, _, _)| id != me)
        .find(same)
        .map(|(id, _, _)| id.clone())
}

/// The OIDC pair of a dump's `tenants` row (its `spec` column), read
/// without requiring the rest of the spec to parse, so a dump cannot slip
/// a binding past the check with an otherwise odd spec.
pub fn in_dump(rows: &[(String, Map<String, Value>)]) -> Option<PairKey> {
    let (_, data) = rows.iter().find(|(table, _)| table == "tenants")?;
    let spec: Value = serde_json::from_str(data.get("spec")?.as_str()?).ok()?;
    let oidc = spec.get("oidc")?;
    Some(PairKey::new(
        oidc.get("issuer")?.as_str()?,
        oidc.get("client_id")?.as_str().unwrap_or_default(),
    ))
}

/// Why static tenants cannot be stored: a pair bound twice among them, or
/// one already held by a tenant created through the API. `stored` is every
/// binding in the store; the static tenants' own stored rows are about to
/// be overwritten, so only the others count.
pub fn static_clashes(rows: &[TenantRow], stored: &[Stored]) -> Vec<String> {
    let statics: HashSet<&TenantId> = rows.iter().map(|r| &r.id).collect();
    let others: Vec<Stored> = stored
        .iter()
        .filter(|(id, _, _)| !statics.contains(id))
        .cloned()
        .collect();
    let mut problems = duplicates(rows.iter().filter_map(|r| {
        let oidc = r.spec.oidc.as_ref()?;
        Some((
            format!("static tenant {}", r.id),
            oidc.issuer.clone(),
            oidc.client_id.clone(),
        ))
    }));
    for row in rows {
        let Some(oidc) = &row.spec.oidc else { continue };
        if let Some(other) = holder(&row.id, &PairKey::of(oidc), &others, false) {
            problems.push(format!(
                "static tenant {}: OIDC issuer {} with client id {} is already bound to tenant \
                 {other}; each issuer and client id pair can belong to one tenant only",
                row.id, oidc.issuer, oidc.client_id
            ));
        }
    }
    problems
}

/// Every pair bound by more than one entry of `bindings` (a label such as
/// `tenants[2] (initech)`, issuer, client id), one problem per repeat
/// naming both entries: static configuration is the operator's own, so
/// both tenants are named.
pub fn duplicates<I>(bindings: I) -> Vec<String>
where
    I: IntoIterator<Item = (String, String, String)>,
{
    let mut first: HashMap<PairKey, String> = HashMap::new();
    let mut problems = Vec::new();
    for (label, issuer, client) in bindings {
        match first.entry(PairKey::new(&issuer, &client)) {
            std::collections::hash_map::Entry::Occupied(e) => problems.push(format!(
                "{label}: OIDC issuer {issuer} with client id {client} is already bound to {}; \
                 each issuer and client id pair can belong to one tenant only",
                e.get()
            )),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(label);
            }
        }
    }
    problems
}

/// One tenant's OIDC binding, as tokens are checked against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The tenant.
    pub tenant: TenantId,
    /// The issuer as configured: a token's `iss` must be exactly this.
    pub issuer: String,
    /// The client id: a token's `aud` must contain it.
    pub client_id: String,
}

/// What a token's issuer and one of its audiences find in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No tenant binds this pair.
    Unbound,
    /// The one tenant that binds it.
    Bound(Binding),
    /// More than one tenant binds it (rows written before the rule): the
    /// pair's tokens are refused rather than given to either.
    Ambiguous,
}

/// The registry's OIDC bindings: by tenant, and by canonical issuer and
/// client id for the request path. Never overwrites: a pair met twice is
/// kept with both holders and answers [`Lookup::Ambiguous`].
#[derive(Debug, Default)]
pub struct BindingMap {
    by_tenant: HashMap<TenantId, Binding>,
    /// Canonical issuer → client id → the tenants holding the pair.
    by_issuer: HashMap<String, HashMap<String, Vec<TenantId>>>,
}

impl BindingMap {
    /// Sets `tenant`'s binding (`None`: it has none).
    pub fn set(&mut self, tenant: &TenantId, binding: Option<(String, String)>) {
        self.remove(tenant);
        let Some((issuer, client_id)) = binding else {
            return;
        };
        let key = PairKey::new(&issuer, &client_id);
        let holders = self
            .by_issuer
            .entry(key.issuer)
            .or_default()
            .entry(key.client_id)
            .or_default();
        holders.push(tenant.clone());
        if holders.len() > 1 {
            let tenants: Vec<&str> = holders.iter().map(TenantId::as_str).collect();
            tracing::error!(
                issuer = %issuer, client_id = %client_id, tenants = ?tenants,
                "OIDC issuer and client id are bound to more than one tenant (stored before \
                 bindings were unique); their tokens are refused until only one tenant keeps the pair"
            );
        }
        self.by_tenant.insert(
            tenant.clone(),
            Binding {
                tenant: tenant.clone(),
                issuer,
                client_id,
            },
        );
    }

    fn remove(&mut self, tenant: &TenantId) {
        let Some(old) = self.by_tenant.remove(tenant) else {
            return;
        };
        let key = PairKey::new(&old.issuer, &old.client_id);
        if let Some(clients) = self.by_issuer.get_mut(&key.issuer) {
            if let Some(holders) = clients.get_mut(&key.client_id) {
                holders.retain(|t| t != tenant);
                if holders.is_empty() {
                    clients.remove(&key.client_id);
                }
            }
            if clients.is_empty() {
                self.by_issuer.remove(&key.issuer);
            }
        }
    }

    /// Whether any tenant binds `issuer`.
    pub fn knows(&self, issuer: &str) -> bool {
        self.by_issuer.contains_key(&canonical_issuer(issuer))
    }

    /// The tenant bound to `issuer` with client id `audience`.
    pub fn lookup(&self, issuer: &str, audience: &str) -> Lookup {
        let holders = self
            .by_issuer
            .get(&canonical_issuer(issuer))
            .and_then(|clients| clients.get(audience.trim()));
        match holders.map(Vec::as_slice) {
            None | Some([]) => Lookup::Unbound,
            Some([one]) => self
                .by_tenant
                .get(one)
                .cloned()
                .map_or(Lookup::Unbound, Lookup::Bound),
            Some(_) => Lookup::Ambiguous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc(issuer: &str, client: &str) -> Oidc {
        Oidc {
            issuer: issuer.into(),
            client_id: client.into(),
            client_secret: Some("s".into()),
            redirect_url: "https://api.test/cb".into(),
            scopes: "openid".into(),
        }
    }

    fn id(s: &str) -> TenantId {
        TenantId::new(s).expect("id")
    }

    #[test]
    fn a_pair_clashes_in_any_spelling_of_the_issuer() {
        let (acme, initech) = (id("acme"), id("initech"));
        let stored: Vec<Stored> = vec![(
            acme.clone(),
            "https://Login.example.com/".into(),
            "shared-app".into(),
        )];
        let mine = PairKey::of(&oidc("https://login.example.com", "shared-app"));
        assert_eq!(holder(&initech, &mine, &stored, false), Some(acme.clone()));
        // Its own binding is no clash; another client id on the issuer is
        // another pair.
        assert_eq!(holder(&acme, &mine, &stored, false), None);
        let other_client = PairKey::new("https://login.example.com", "initech-app");
        assert_eq!(holder(&initech, &other_client, &stored, false), None);
    }

    #[test]
    fn keep_own_leaves_a_pre_rule_duplicate_alone() {
        let (acme, initech) = (id("acme"), id("initech"));
        let stored: Vec<Stored> = vec![
            (acme.clone(), "https://i.test".into(), "c".into()),
            (initech.clone(), "https://i.test".into(), "c".into()),
        ];
        let pair = PairKey::new("https://i.test", "c");
        assert_eq!(holder(&initech, &pair, &stored, true), None);
        assert_eq!(holder(&initech, &pair, &stored, false), Some(acme));
    }

    #[test]
    fn a_dumps_pair_is_read_from_its_spec_text() {
        let mut data = Map::new();
        data.insert(
            "spec".into(),
            Value::String(
                r#"{"oidc":{"issuer":"https://i.test/","client_id":"c"},"odd":1}"#.into(),
            ),
        );
        let rows = vec![("tenants".to_owned(), data)];
        assert_eq!(in_dump(&rows), Some(PairKey::new("https://i.test", "c")));
    }

    #[test]
    fn the_map_refuses_a_pair_held_twice_and_recovers_when_one_lets_go() {
        let (acme, initech) = (id("acme"), id("initech"));
        let pair = || Some(("https://i.test/".to_owned(), "shared-app".to_owned()));
        let mut map = BindingMap::default();
        map.set(&acme, pair());
        assert!(
            matches!(map.lookup("https://i.test", "shared-app"), Lookup::Bound(b) if b.tenant == acme)
        );
        map.set(&initech, pair());
        assert_eq!(
            map.lookup("https://i.test", "shared-app"),
            Lookup::Ambiguous
        );
        assert_eq!(map.lookup("https://i.test", "other-app"), Lookup::Unbound);
        map.set(&initech, None);
        assert!(
            matches!(map.lookup("https://I.test/", "shared-app"), Lookup::Bound(b) if b.tenant == acme)
        );
        map.set(&acme, None);
        assert!(!map.knows("https://i.test"));
    }

    #[test]
    fn duplicates_name_both_entries() {
        let problems = duplicates([
            (
                "tenants[0] (acme)".into(),
                "https://i.test".into(),
                "c".into(),
            ),
            (
                "tenants[1] (globex)".into(),
                "https://i.test".into(),
                "d".into(),
            ),
            (
                "tenants[2] (initech)".into(),
                "https://I.test/".into(),
                "c".into(),
            ),
        ]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("tenants[2] (initech):"));
        assert!(problems[0].contains("already bound to tenants[0] (acme)"));
    }
}
