//! The explicit scopes an API key carries. A scope outside this list cannot exist.
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Scope {
    #[serde(rename = "projects:read")]
    ProjectsRead,
    #[serde(rename = "projects:write")]
    ProjectsWrite,
    #[serde(rename = "credentials:read")]
    CredentialsRead,
    #[serde(rename = "backups:read")]
    BackupsRead,
    #[serde(rename = "backups:write")]
    BackupsWrite,
    #[serde(rename = "jobs:read")]
    JobsRead,
    #[serde(rename = "organizations:read")]
    OrganizationsRead,
    #[serde(rename = "organizations:write")]
    OrganizationsWrite,
    #[serde(rename = "api_keys:read")]
    ApiKeysRead,
    #[serde(rename = "api_keys:write")]
    ApiKeysWrite,
}

impl Scope {
    pub const ALL: [Scope; 10] = [
        Scope::ProjectsRead,
        Scope::ProjectsWrite,
        Scope::CredentialsRead,
        Scope::BackupsRead,
        Scope::BackupsWrite,
        Scope::JobsRead,
        Scope::OrganizationsRead,
        Scope::OrganizationsWrite,
        Scope::ApiKeysRead,
        Scope::ApiKeysWrite,
    ];

    /// Scopes a project-scoped key may never carry: they act on the whole organization.
    pub const ORG_MANAGEMENT: [Scope; 3] = [Scope::OrganizationsWrite, Scope::ApiKeysRead, Scope::ApiKeysWrite];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ProjectsRead => "projects:read",
            Scope::ProjectsWrite => "projects:write",
            Scope::CredentialsRead => "credentials:read",
            Scope::BackupsRead => "backups:read",
            Scope::BackupsWrite => "backups:write",
            Scope::JobsRead => "jobs:read",
            Scope::OrganizationsRead => "organizations:read",
            Scope::OrganizationsWrite => "organizations:write",
            Scope::ApiKeysRead => "api_keys:read",
            Scope::ApiKeysWrite => "api_keys:write",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|sc| sc.as_str() == s)
    }

    pub fn is_org_management(self) -> bool {
        Scope::ORG_MANAGEMENT.contains(&self)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a comma- or space-separated list ("projects:read,jobs:read"); `*` means every scope.
pub fn parse_scope_list(s: &str) -> Result<Vec<Scope>, String> {
    let mut out = Vec::new();
    for part in s.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty()) {
        if part == "*" {
            out.extend(Scope::ALL);
            continue;
        }
        out.push(Scope::parse(part).ok_or_else(|| format!("unknown scope {part:?}"))?);
    }
    out.sort();
    out.dedup();
    Ok(out)
}
