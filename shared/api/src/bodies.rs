//! Response envelopes: a single resource is wrapped by its type name.
use capydb_domain::model::{ApiKey, Backup, Delivery, Import, Job, Preview, Project, Restore, WebhookEndpoint};
use capydb_domain::organizations::OrganizationDetails;
use capydb_domain::principal::PrincipalView;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct PrincipalBody {
    pub principal: PrincipalView,
}

#[derive(Serialize, ToSchema)]
pub struct OrganizationBody {
    pub organization: OrganizationDetails,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyBody {
    pub api_key: ApiKey,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectBody {
    pub project: Project,
}

#[derive(Serialize, ToSchema)]
pub struct JobBody {
    pub job: Job,
}

#[derive(Serialize, ToSchema)]
pub struct PreviewBody {
    pub preview: Preview,
}

#[derive(Serialize, ToSchema)]
pub struct BackupBody {
    pub backup: Backup,
}

#[derive(Serialize, ToSchema)]
pub struct RestoreBody {
    pub restore: Restore,
}

#[derive(Serialize, ToSchema)]
pub struct ImportBody {
    pub import: Import,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookBody {
    pub webhook: WebhookEndpoint,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryBody {
    pub delivery: Delivery,
}
