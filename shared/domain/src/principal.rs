//! Who is calling, and the authorization rules that follow from it. Every use
//! case starts by asking the principal; nothing else decides access.
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{DomainError, DomainResult};
use crate::model::{ApiKey, Organization};
use crate::ports::OrgRole;
use crate::scopes::Scope;

#[allow(clippy::large_enum_variant)] // one per request, moved, never in a collection
#[derive(Debug, Clone, PartialEq)]
pub enum Credential {
    ApiKey(ApiKey),
    /// A person signed in with Clerk, acting in their active organization.
    Session(Session),
}

/// A verified human session in an organization.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Clerk's user id.
    pub user_id: String,
    /// Clerk's session id, when the token names one.
    pub session_id: Option<String>,
    pub clerk_org_id: String,
    pub role: OrgRole,
    /// Set when the credential is a CLI token (`capy_cli_...`) standing for
    /// this person's session: the CLI session's id.
    pub cli_session_id: Option<String>,
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

    /// Which credential this is, for records kept per credential
    /// (`Idempotency-Key`): `api_key:<key id>`.
    pub fn credential_id(&self) -> String {
        match &self.credential {
            Credential::ApiKey(key) => format!("api_key:{}", key.id),
            // One person in one organization: a retry after the session's
            // token was refreshed is still the same caller.
            Credential::Session(s) => format!("session:{}:{}", s.user_id, self.organization.id),
        }
    }

    /// Who made something, as a record says it (`created_by`): a session's
    /// user id, or an API key's id.
    pub fn creator_id(&self) -> String {
        match &self.credential {
            Credential::ApiKey(key) => key.id.clone(),
            Credential::Session(s) => s.user_id.clone(),
        }
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
    pub fn require_admin(&self, action: &str) -> DomainResult<()> {
        match &self.credential {
            Credential::ApiKey(_) => Ok(()),
            Credential::Session(Session { role: OrgRole::Admin, .. }) => Ok(()),
            Credential::Session(Session { role: OrgRole::Member, .. }) => Err(DomainError::Forbidden(format!(
                "only an organization admin (Clerk role org:admin) may {action}; this session's role is member"
            ))),
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
        let (kind, key, user_id, role) = match &self.credential {
            Credential::ApiKey(key) => ("api_key", Some(key.clone()), None, None),
            Credential::Session(s) => {
                let kind = if s.cli_session_id.is_some() { "cli_session" } else { "session" };
                (kind, None, Some(s.user_id.clone()), Some(s.role))
            }
        };
        PrincipalView {
            kind: kind.into(),
            key,
            user_id,
            organization: Some(self.organization.clone()),
            role,
            scopes: self.scopes.clone(),
            project_id: self.project_id.clone(),
        }
    }
}

/// `GET /v1/me`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PrincipalView {
    /// `api_key`, `session` (a browser session) or `cli_session` (a CLI
    /// token, acting as the person's session).
    pub kind: String,
    /// The API key used, when `kind` is `api_key`.
    pub key: Option<ApiKey>,
    /// The signed-in person's Clerk user id, when `kind` is `session`.
    pub user_id: Option<String>,
    /// The organization the credential acts in; null for a session with
    /// no active organization (which may only call `GET /v1/me`).
    pub organization: Option<Organization>,
    /// The organization role of a session; null for API keys.
    pub role: Option<OrgRole>,
    pub scopes: Vec<Scope>,
    pub project_id: Option<String>,
}

impl PrincipalView {
    /// A session with no active organization: who it is, and nothing it may act on.
    pub fn session_without_organization(user_id: String) -> PrincipalView {
        PrincipalView {
            kind: "session".into(),
            key: None,
            user_id: Some(user_id),
            organization: None,
            role: None,
            scopes: Vec::new(),
            project_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn principal(scopes: &[Scope], project_id: Option<&str>) -> Principal {
        let now = Utc::now();
        let org = Organization { id: "org_a".into(), name: "a".into(), created_at: now, updated_at: now };
        let key = ApiKey {
            id: "key_a".into(),
            organization_id: org.id.clone(),
            name: "k".into(),
            prefix: "capy_live_".into(),
            last4: "abcd".into(),
            scopes: scopes.to_vec(),
            project_id: project_id.map(str::to_string),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            last_used_ip: None,
            created_at: now,
            created_by: None,
            hash: String::new(),
        };
        Principal {
            credential: Credential::ApiKey(key),
            organization: org,
            scopes: scopes.to_vec(),
            project_id: project_id.map(str::to_string),
        }
    }

    #[test]
    fn missing_scope_is_forbidden_and_named() {
        let p = principal(&[Scope::ProjectsRead], None);
        assert!(p.require(Scope::ProjectsRead).is_ok());
        let err = p.require(Scope::ProjectsWrite).unwrap_err();
        assert_eq!(err, DomainError::Forbidden("this credential lacks the scope projects:write".into()));
    }

    #[test]
    fn other_organization_is_not_found_for_everyone() {
        for p in [principal(&Scope::ALL, None), principal(&[Scope::ProjectsRead], Some("prj_1"))] {
            let err = p.check_project("org_b", Some("prj_1"), "project", "prj_1").unwrap_err();
            assert!(matches!(err, DomainError::NotFound(_)), "{err:?}");
        }
    }

    #[test]
    fn project_scoped_key_is_forbidden_on_siblings_and_org_actions() {
        let p = principal(&[Scope::ProjectsRead], Some("prj_1"));
        assert!(p.check_project("org_a", Some("prj_1"), "project", "prj_1").is_ok());
        assert!(matches!(p.check_project("org_a", Some("prj_2"), "project", "prj_2"), Err(DomainError::Forbidden(_))));
        assert!(matches!(p.check_project("org_a", None, "job", "job_1"), Err(DomainError::Forbidden(_))));
        assert!(matches!(p.require_org_wide(), Err(DomainError::Forbidden(_))));
        let org_key = principal(&[Scope::ProjectsRead], None);
        assert!(org_key.check_project("org_a", Some("prj_2"), "project", "prj_2").is_ok());
        assert!(org_key.require_org_wide().is_ok());
    }
}
