use super::*;
use crate::model::{JobKind, ResourceKind, ResourceRef};
use crate::ports::Hosting;

/// A stored job keeps the index of its next step, so a kind's plan may only
/// grow at its end: these are the plans jobs have been stored with.
#[test]
fn the_plans_keep_the_step_order_stored_jobs_index() {
    let stored: [(JobKind, ResourceKind, serde_json::Value, &[&str]); 10] = [
        (
            JobKind::Provision,
            ResourceKind::Project,
            serde_json::json!(null),
            &["create_role", "create_database", "verify_connection"],
        ),
        (
            JobKind::DeleteProject,
            ResourceKind::Project,
            serde_json::json!(null),
            &["drop_previews", "drop_database", "drop_role"],
        ),
        (
            JobKind::RotateCredentials,
            ResourceKind::Project,
            serde_json::json!({ "new_password_sealed": "v1:x" }),
            &["set_password", "verify_connection"],
        ),
        (
            JobKind::CreatePreview,
            ResourceKind::Preview,
            serde_json::json!(null),
            &["create_role", "copy_data", "verify_connection"],
        ),
        (JobKind::ResetPreview, ResourceKind::Preview, serde_json::json!(null), &["copy_data", "verify_connection"]),
        (JobKind::DeletePreview, ResourceKind::Preview, serde_json::json!(null), &["drop_database", "drop_role"]),
        (JobKind::CreateBackup, ResourceKind::Backup, serde_json::json!(null), &["dump"]),
        (
            JobKind::Restore,
            ResourceKind::Project,
            serde_json::json!({ "restore_id": "r", "backup_id": "b", "safety_backup_id": "s" }),
            &["prepare", "copy_data", "swap_database", "verify_connection"],
        ),
        (
            JobKind::Restore,
            ResourceKind::Preview,
            serde_json::json!({ "restore_id": "r", "backup_id": "b" }),
            &["prepare", "copy_data", "swap_database", "verify_connection"],
        ),
        (
            JobKind::Import,
            ResourceKind::Project,
            serde_json::json!({ "import_id": "i", "safety_backup_id": "s", "source_url_sealed": "v1:u" }),
            &["prepare", "copy_data", "swap_database", "verify_connection"],
        ),
    ];
    for (kind, resource, params, steps) in stored {
        let spec = JobSpec::decode(kind, &ResourceRef { kind: resource, id: "x".into() }, &params).unwrap();
        assert_eq!(step_names(&spec, Hosting::Shared), steps, "{kind:?}");
    }
}

#[test]
fn a_step_says_what_it_was_doing_in_a_users_words() {
    let into_preview = JobSpec::Restore {
        restore: "r".into(),
        source: "b".into(),
        into: crate::model::RestoreInto::Preview("p".into()),
    };
    let over_project = JobSpec::Import {
        import: "i".into(),
        source_url: crate::model::Sealed::new("v1:u".into()),
        safety_backup: "s".into(),
    };
    assert_eq!(task(&into_preview, Hosting::Shared, 0).unwrap().purpose(), "the preview's role could not be created");
    assert_eq!(
        task(&over_project, Hosting::Shared, 0).unwrap().purpose(),
        "the safety backup before the import could not be taken"
    );
    assert_eq!(task(&over_project, Hosting::Shared, 1).unwrap().purpose(), "the source database could not be imported");
    assert!(task(&over_project, Hosting::Shared, 4).is_none());
}

/// A dedicated deployment's plans: the server first, and what undoes a
/// creation past its deadline.
#[test]
fn a_dedicated_deployment_makes_the_server_first() {
    let d = Hosting::Dedicated;
    let preview = || crate::ids::PreviewId::from("pvw_x");
    assert_eq!(
        step_names(&JobSpec::Provision, d),
        ["create_server", "create_role", "create_database", "verify_connection"]
    );
    assert_eq!(
        step_names(&JobSpec::CreatePreview { preview: preview() }, d),
        ["create_server", "create_role", "copy_data", "verify_connection"]
    );
    assert_eq!(
        step_names(&JobSpec::ResetPreview { preview: preview() }, d),
        ["create_server", "create_role", "copy_data", "swap_server", "verify_connection", "remove_old_server"]
    );
    assert_eq!(step_names(&JobSpec::DeletePreview { preview: preview() }, d), ["remove_server"]);
    assert_eq!(step_names(&JobSpec::DeleteProject { dropped_previews: vec![] }, d), ["drop_previews", "remove_server"]);
    assert_eq!(step_names(&JobSpec::CreateBackup { backup: "bkp_x".into() }, d), ["snapshot"]);
    let restore = |into| JobSpec::Restore { restore: "rst_x".into(), source: "bkp_x".into(), into };
    let over = restore(crate::model::RestoreInto::Project { safety_backup: "bkp_s".into() });
    let into_preview = restore(crate::model::RestoreInto::Preview(preview()));
    assert_eq!(
        step_names(&over, d),
        ["prepare", "create_server", "set_password", "swap_server", "verify_connection", "remove_spare_servers"]
    );
    assert_eq!(
        step_names(&into_preview, d),
        ["create_server", "prepare", "copy_data", "swap_database", "verify_connection"]
    );
    let undo = |spec: &JobSpec, h| (0..).map_while(|i| undo_task(spec, h, i)).map(Task::name).collect::<Vec<_>>();
    assert_eq!(undo(&over, d), ["revert_server"]);
    assert_eq!(undo(&into_preview, d), ["remove_server"]);
    assert!(undo(&over, Hosting::Shared).is_empty());
    assert_eq!(undo(&JobSpec::Provision, d), ["remove_server"]);
    assert_eq!(undo(&JobSpec::Provision, Hosting::Shared), ["drop_database", "drop_role"]);
    assert_eq!(undo(&JobSpec::CreatePreview { preview: preview() }, d), ["remove_server"]);
    assert!(undo(&JobSpec::CreateBackup { backup: "bkp_x".into() }, d).is_empty());
    assert_eq!(task(&JobSpec::Provision, d, UNDO_FROM as usize).unwrap().name(), "remove_server");
}
