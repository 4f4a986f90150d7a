//! The IAM policies `infra/template.yaml` gives the Aurora worker and the
//! sweeper with `DatabaseProvider=aurora` allow every RDS call
//! `shared/aurora` makes (read from its source: each `client.<operation>()`),
//! by name, and nothing broader than `rds:<Action>`; and the two workers, one
//! per provider, differ only in what their provider needs.
use std::collections::BTreeSet;

use capydb_aws::testkit::{workspace_root, Template};
use serde_json::Value;

/// Every `rds:` string under `v`.
fn rds_actions(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) if s.starts_with("rds:") => {
            out.insert(s.clone());
        }
        Value::Array(items) => items.iter().for_each(|i| rds_actions(i, out)),
        Value::Object(map) => map.values().for_each(|i| rds_actions(i, out)),
        _ => {}
    }
}

/// `describe_db_clusters` → `rds:DescribeDBClusters`.
fn action_of(operation: &str) -> String {
    let words: String = operation
        .split('_')
        .map(|w| match w {
            "db" => "DB".to_string(),
            w => w[..1].to_ascii_uppercase() + &w[1..],
        })
        .collect();
    format!("rds:{words}")
}

/// The operations `shared/aurora/src/rds.rs` calls on its client.
fn called() -> BTreeSet<String> {
    let source = std::fs::read_to_string(workspace_root().join("shared/aurora/src/rds.rs")).expect("rds.rs");
    let mut found = BTreeSet::new();
    let mut rest = source.as_str();
    while let Some(i) = rest.find(".client") {
        rest = &rest[i + ".client".len()..];
        let after = rest.trim_start().strip_prefix('.').map(str::trim_start);
        if let Some(after) = after {
            let name: String = after.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !name.is_empty() && after[name.len()..].starts_with("()") {
                found.insert(action_of(&name));
            }
        }
    }
    found
}

#[test]
fn the_worker_and_sweeper_may_make_every_rds_call_the_aurora_provider_makes_and_no_more_than_named_actions() {
    let template = Template::load();
    let mut allowed = BTreeSet::new();
    for function in ["AuroraWorkerFunction", "SweeperFunction"] {
        rds_actions(&template.resource(function)["Properties"]["Policies"], &mut allowed);
    }
    let called = called();
    assert!(called.len() >= 12, "the scan found the calls: {called:?}");
    assert!(called.contains("rds:RestoreDBClusterToPointInTime") && called.contains("rds:DescribeDBClusters"));
    let missing: Vec<_> = called.difference(&allowed).collect();
    assert!(missing.is_empty(), "infra/template.yaml does not allow {missing:?}");
    // Tags on create are authorized as AddTagsToResource.
    assert!(allowed.contains("rds:AddTagsToResource"));
    for action in &allowed {
        assert!(!action.contains('*'), "{action}: name each action");
    }
    let unused: Vec<_> = allowed.iter().filter(|a| !called.contains(*a) && *a != "rds:AddTagsToResource").collect();
    assert!(unused.is_empty(), "allowed but never called: {unused:?}");
}

#[test]
fn operations_become_rds_action_names() {
    assert_eq!(action_of("describe_db_clusters"), "rds:DescribeDBClusters");
    assert_eq!(action_of("restore_db_cluster_to_point_in_time"), "rds:RestoreDBClusterToPointInTime");
    assert_eq!(action_of("create_db_cluster_snapshot"), "rds:CreateDBClusterSnapshot");
}

/// `worker` and `worker-aurora` are deployed one at a time (by
/// `DatabaseProvider`) from two copies of one definition: the copies may
/// differ in their condition, binary, description and provider policies only.
#[test]
fn the_two_workers_differ_only_in_their_provider() {
    let template = Template::load();
    let server = template.resource("WorkerFunction");
    let aurora = template.resource("AuroraWorkerFunction");
    assert_eq!(server["Condition"], "UsePostgresServer");
    assert_eq!(aurora["Condition"], "UseAurora");
    assert_eq!(server["Metadata"]["BuildProperties"]["Binary"], "worker");
    assert_eq!(aurora["Metadata"]["BuildProperties"]["Binary"], "worker-aurora");
    let mut server_rds = BTreeSet::new();
    rds_actions(&server["Properties"]["Policies"], &mut server_rds);
    assert!(server_rds.is_empty(), "the postgres-server worker may make no RDS call: {server_rds:?}");
    let ssm = |f: &Value| serde_json::to_string(&f["Properties"]["Policies"]).unwrap().contains("ssm:GetParameter");
    assert!(ssm(server) && !ssm(aurora), "only the postgres-server worker reads the admin password");

    // Everything else is the same; the policies only up to the provider's own.
    let common = |f: &Value| {
        let mut f = f.clone();
        for key in ["Condition", "Metadata"] {
            f.as_object_mut().unwrap().remove(key);
        }
        let props = f["Properties"].as_object_mut().unwrap();
        props.remove("Description");
        let policies = props.remove("Policies").unwrap();
        let plain: Vec<Value> = policies
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p.get("Version").is_none() && p.get("Fn::If").is_none())
            .cloned()
            .collect();
        props.insert("Policies".into(), Value::Array(plain));
        f
    };
    assert_eq!(common(server), common(aurora));
    assert!(common(server)["Properties"]["Events"]["JobsQueueMessages"].is_object());
}
