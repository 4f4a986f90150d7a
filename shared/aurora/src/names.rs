//! Every RDS identifier CapyDB makes is derived from a resource id, so a step
//! that runs again after a crash finds what an earlier attempt made instead
//! of making a second one, and an operator reading the RDS console knows what
//! each cluster is.
//!
//! RDS identifiers: 1 to 63 letters, digits and hyphens, starting with a
//! letter, lowercase as RDS stores them, no two hyphens in a row, no hyphen at
//! the end. Resource ids (`prj_` + 26 lowercase base32 characters) become
//! `capydb-prj-…`: 37 characters, room for the suffixes below.

/// Every identifier starts with this: the IAM policy's resource patterns
/// (`cluster:capydb-*`) and an operator's filter rely on it.
pub const PREFIX: &str = "capydb-";

/// The cluster that holds the database of `resource` (a project or preview id).
pub fn cluster(resource: &str) -> String {
    format!("{PREFIX}{}", slug(resource))
}

/// The writer instance of the cluster whose `DbClusterResourceId` is
/// `cluster_resource_id` (`cluster-ABC…`): derived from what never changes
/// about the cluster, so a cluster keeps naming its writer after it is
/// renamed (a replacement taking the live identifier), and a new cluster
/// under an old identifier names a new one.
pub fn writer(cluster_resource_id: &str) -> String {
    format!("{PREFIX}w-{}", slug(cluster_resource_id))
}

/// Where a replacement of `resource`'s cluster is built (a preview reset, an
/// overwrite restore) before it takes the live identifier.
pub fn replacement(resource: &str) -> String {
    format!("{}-next", cluster(resource))
}

/// What the live cluster is renamed to while its replacement takes its
/// identifier, until it is deleted.
pub fn retired(resource: &str) -> String {
    format!("{}-old", cluster(resource))
}

/// The cluster snapshot of a backup (`bkp_…`).
pub fn backup_snapshot(backup: &str) -> String {
    format!("{PREFIX}{}", slug(backup))
}

/// The snapshot taken of `resource`'s cluster before an overwrite restore
/// replaces it, named after the job that takes it.
pub fn safety_snapshot(job: &str) -> String {
    format!("{PREFIX}{}-safety", slug(job))
}

/// The snapshot a project's cluster leaves when the project is deleted.
pub fn final_snapshot(resource: &str) -> String {
    format!("{}-final", cluster(resource))
}

/// The resource id a cluster identifier was derived from, for an identifier
/// `cluster` made (`capydb-prj-…` → `prj_…`); `None` for anything else.
pub fn resource_of(cluster_id: &str) -> Option<String> {
    let rest = cluster_id.strip_prefix(PREFIX)?;
    let (kind, id) = rest.split_once('-')?;
    let valid = kind.len() == 3
        && kind.bytes().all(|b| b.is_ascii_lowercase())
        && id.len() == 26
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    valid.then(|| format!("{kind}_{id}"))
}

/// `prj_01h…` → `prj-01h…`: lowercase, hyphens for anything RDS refuses.
fn slug(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for c in id.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// Whether RDS takes `id` as a DB cluster, instance or snapshot identifier.
pub fn is_valid(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.ends_with('-')
        && !id.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROJECT: &str = "prj_01jdz8x9m2k4q6r8t0v2w4y6a8";
    const BACKUP: &str = "bkp_01jdz8x9m2k4q6r8t0v2w4y6a9";
    const JOB: &str = "job_01jdz8x9m2k4q6r8t0v2w4y6b0";

    #[test]
    fn every_identifier_is_one_rds_takes_and_is_derived_from_the_resource() {
        let c = cluster(PROJECT);
        assert_eq!(c, "capydb-prj-01jdz8x9m2k4q6r8t0v2w4y6a8");
        for id in [
            c.clone(),
            writer("cluster-D8N1SRQ8QHJUGPBKB64DD8LUGN"),
            backup_snapshot(BACKUP),
            safety_snapshot(JOB),
            final_snapshot(PROJECT),
        ] {
            assert!(is_valid(&id), "{id}");
            assert!(id.starts_with(PREFIX), "{id}");
        }
        // The same resource, the same names: what a retry looks for.
        assert_eq!(cluster(PROJECT), cluster(PROJECT));
        assert_ne!(cluster(PROJECT), cluster("prj_01jdz8x9m2k4q6r8t0v2w4y6a7"));
        assert_eq!(resource_of(&c).as_deref(), Some(PROJECT));
    }

    #[test]
    fn temporary_and_retired_clusters_are_not_taken_for_a_resource() {
        assert_eq!(resource_of(&replacement(PROJECT)), None);
        assert_eq!(resource_of(&retired(PROJECT)), None);
        assert_eq!(resource_of("someone-elses-cluster"), None);
        assert_eq!(resource_of("capydb-prj-short"), None);
    }

    #[test]
    fn rds_identifier_rules() {
        for bad in ["", "1abc", "abc-", "a--b", "Abc", "a_b", &"a".repeat(64)] {
            assert!(!is_valid(bad), "{bad:?}");
        }
        assert!(is_valid("a"));
        assert!(is_valid(&"a".repeat(63)));
        assert_eq!(slug("PRJ__x-"), "prj-x");
    }
}
