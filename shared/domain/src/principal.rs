//! Who is calling, and the authorization rules that follow from it. Every use
//! case starts by asking the principal; nothing else decides access.
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{DomainError, DomainResult};
use crate::model::{ApiKey, Organization};
use crate::scopes::Scope;

#[derive(Debug, Clone, PartialEq)]
pub enum Credential {
    ApiKey(ApiKey),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub credential: Credential,
    pub organization: Organization,
    pub scopes: Vec<Scope>,
    /// Set for a project-scoped key: the one project it may act on.
    pub project_id: Option<String>,
}

impl Principal {
    pub fn org_id(&self) -> &str {
        &self.organization.id
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// 403 naming the missing scope.
    pub fn require(&self, scope: Scope) -> DomainResult<()> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(DomainError::Forbidden(format!("this credential lacks the scope {scope}")))
        }
    }

    /// Actions that need the organization admin role when called with a
    /// session. API keys are authorized by their scopes alone.
    pub fn require_admin(&self, _action: &str) -> DomainResult<()> {
        match self.credential {
            Credential::ApiKey(_) => Ok(()),
        }
    }

    /// Another organization's resources do not exist for this caller: 404,
    /// the same answer as for an id that exists nowhere.
    pub fn check_org(&self, org_id: &str, what: &str, id: &str) -> DomainResult<()> {
        if org_id == self.org_id() {
            Ok(())
        } else {
            Err(DomainError::not_found(what, id))
        }
    }

    /// A resource belonging to `project_id` in `org_id`: 404 across
    /// organizations, 403 for a sibling project of a project-scoped key.
    pub fn check_project(&self, org_id: &str, project_id: Option<&str>, what: &str, id: &str) -> DomainResult<()> {
        self.check_org(org_id, what, id)?;
        match (&self.project_id, project_id) {
            (Some(mine), Some(theirs)) if mine == theirs => Ok(()),
            (Some(mine), _) => Err(DomainError::Forbidden(format!("this credential is restricted to project {mine}"))),
            (None, _) => Ok(()),
        }
    }

    /// Organization-wide actions (org settings, API keys) are not for project-scoped keys.
    pub fn require_org_wide(&self) -> DomainResult<()> {
        match &self.project_id {
            None => Ok(()),
            Some(p) => Err(DomainError::Forbidden(format!(
                "this credential is restricted to project {p} and cannot act on the organization"
            ))),
        }
    }

    pub fn view(&self) -> PrincipalView {
        let Credential::ApiKey(key) = &self.credential;
        PrincipalView {
            kind: "api_key".into(),
            key: Some(key.clone()),
            organization: self.organization.clone(),
            role: None,
            scopes: self.scopes.clone(),
            project_id: self.project_id.clone(),
        }
    }
}

/// `GET /v1/me`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PrincipalView {
    /// `api_key` (sessions come later).
    pub kind: String,
    /// The API key used, when `kind` is `api_key`.
    pub key: Option<ApiKey>,
    pub organization: Organization,
    /// The organization role of a session; null for API keys.
    pub role: Option<String>,
    pub scopes: Vec<Scope>,
    pub project_id: Option<String>,
}
