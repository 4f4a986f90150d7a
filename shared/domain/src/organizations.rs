//! Organizations: a credential sees exactly its own.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::{App, QuotaSettings};
use crate::error::{DomainError, DomainResult};
use crate::fields::Name;
use crate::model::{ApiKey, Organization, Timestamp};
use crate::ports::Store;
use crate::principal::Principal;
use crate::scopes::Scope;
use crate::{apikey, ids};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrganization {
    #[schema(inline)]
    pub name: Option<OrganizationName>,
}

/// An organization with its limits and what it uses of them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrganizationDetails {
    #[serde(flatten)]
    pub organization: Organization,
    /// Per-organization limits; over one, a create answers `403` naming it.
    pub limits: QuotaSettings,
    pub usage: OrganizationUsage,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct OrganizationUsage {
    /// Projects not deleted.
    pub projects: u64,
    /// Webhook endpoints.
    pub webhooks: u64,
}

impl App {
    async fn details(&self, organization: Organization) -> DomainResult<OrganizationDetails> {
        let usage = self.store.usage(&organization.id).await?;
        Ok(OrganizationDetails {
            organization,
            limits: self.settings.quotas,
            usage: OrganizationUsage { projects: usage.projects, webhooks: usage.webhooks },
        })
    }

    pub async fn list_organizations(&self, p: &Principal) -> DomainResult<Vec<Organization>> {
        p.require(Scope::OrganizationsRead)?;
        Ok(self.store.get_organization(p.org_id()).await?.into_iter().collect())
    }

    pub async fn get_organization(&self, p: &Principal, org_id: &str) -> DomainResult<OrganizationDetails> {
        p.require(Scope::OrganizationsRead)?;
        p.check_org(org_id, "organization", org_id)?;
        let org =
            self.store.get_organization(org_id).await?.ok_or_else(|| DomainError::not_found("organization", org_id))?;
        self.details(org).await
    }

    pub async fn update_organization(
        &self,
        p: &Principal,
        org_id: &str,
        req: UpdateOrganization,
    ) -> DomainResult<OrganizationDetails> {
        p.require(Scope::OrganizationsWrite)?;
        p.check_org(org_id, "organization", org_id)?;
        p.require_org_wide()?;
        let mut org = self.get_organization(p, org_id).await?;
        if let Some(name) = req.name {
            org.organization.name = name.into_inner();
            org.organization.updated_at = self.now();
            self.store.update_organization(&org.organization).await?;
        }
        Ok(org)
    }

    /// First start on an empty store: one organization and an admin key with
    /// every scope. `preset` (from `CAPYDB_BOOTSTRAP_API_KEY`) is used as the
    /// key when given. Returns `None` when the store was already bootstrapped.
    pub async fn bootstrap(&self, preset: Option<&str>) -> DomainResult<Option<(Organization, String)>> {
        if self.store.has_organizations().await? {
            return Ok(None);
        }
        create_organization(self.store.as_ref(), self.now(), "Default organization", preset).await.map(Some)
    }
}

/// A new organization's name, by the rule `create_organization` applies:
/// the deployed shape's bootstrap checks it before it writes anything.
/// `field` names the input in the error.
pub fn parse_organization_name(field: &str, raw: &str) -> DomainResult<String> {
    OrganizationName::parse(field, raw).map(Name::into_inner)
}

/// An organization's name, in a request body and wherever one is made.
pub type OrganizationName = Name<100>;

/// Creates an organization with an admin API key holding every scope, and
/// returns the key's plaintext. `preset` is used as the key when given.
pub async fn create_organization(
    store: &dyn Store,
    now: Timestamp,
    name: &str,
    preset: Option<&str>,
) -> DomainResult<(Organization, String)> {
    let name = parse_organization_name("name", name)?;
    let plaintext =
        match preset {
            Some(k) if apikey::is_well_formed(apikey::LIVE_PREFIX, k) => k.to_string(),
            Some(_) => return Err(DomainError::invalid(
                "CAPYDB_BOOTSTRAP_API_KEY is not a well-formed capy_live_ key (wrong length, characters or checksum)",
            )),
            None => apikey::generate(apikey::LIVE_PREFIX),
        };
    let org = Organization { id: ids::new_id(ids::ORG), name, created_at: now, updated_at: now };
    let key = ApiKey {
        id: ids::new_id(ids::API_KEY),
        organization_id: org.id.clone(),
        name: "admin key".into(),
        prefix: apikey::LIVE_PREFIX.into(),
        last4: apikey::last4(&plaintext),
        scopes: Scope::ALL.to_vec(),
        project_id: None,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        last_used_ip: None,
        created_at: now,
        created_by: None,
        hash: apikey::hash(&plaintext),
    };
    store.create_organization(&org, &key).await?;
    Ok((org, plaintext))
}
