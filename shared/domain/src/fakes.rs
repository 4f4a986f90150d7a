//! A database provider kept in memory, for tests of the job state machine:
//! it behaves as a server would (roles with passwords, databases with
//! owners, dumps as files) and answers, per operation, the errors a test
//! plans for it before doing the work.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::model::{ConnectionInfo, Timestamp};
use crate::ports::{
    Clock, CloneResult, CloneStrategy, DatabaseEndpoint, DatabaseProvider, Egress, ProviderError, ProviderResult,
};

/// The operations whose answers a test can plan (the `DatabaseProvider`
/// method names).
pub const OPERATIONS: &[&str] = &[
    "ensure_role",
    "ensure_database",
    "clone_database",
    "dump_database",
    "restore_database",
    "import_database",
    "replace_database",
    "check_connection",
    "drop_database",
    "drop_role",
];

#[derive(Default)]
struct Server {
    /// role -> password
    roles: BTreeMap<String, String>,
    /// database -> (owner, content)
    databases: BTreeMap<String, (String, String)>,
    planned: HashMap<&'static str, VecDeque<ProviderError>>,
    calls: Vec<String>,
}

#[derive(Default)]
pub struct FakeProvider {
    server: Mutex<Server>,
}

impl FakeProvider {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next calls of `operation` answer these errors, in order, without
    /// doing anything; later calls work.
    pub fn plan(&self, operation: &'static str, errors: impl IntoIterator<Item = ProviderError>) {
        assert!(OPERATIONS.contains(&operation), "no operation {operation}");
        self.lock().planned.entry(operation).or_default().extend(errors);
    }

    /// Every call so far, as `operation(first argument)`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// How many times `operation` was called.
    pub fn count(&self, operation: &str) -> usize {
        self.lock().calls.iter().filter(|c| c.starts_with(&format!("{operation}("))).count()
    }

    pub fn database(&self, name: &str) -> Option<(String, String)> {
        self.lock().databases.get(name).cloned()
    }

    pub fn role_password(&self, role: &str) -> Option<String> {
        self.lock().roles.get(role).cloned()
    }

    /// Puts rows into a database, as a client would.
    pub fn write(&self, database: &str, content: &str) {
        if let Some(db) = self.lock().databases.get_mut(database) {
            db.1 = content.to_string();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Server> {
        self.server.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the call and answers its planned error, if any.
    fn call(&self, operation: &'static str, arg: &str) -> ProviderResult<std::sync::MutexGuard<'_, Server>> {
        let mut s = self.lock();
        s.calls.push(format!("{operation}({arg})"));
        match s.planned.get_mut(operation).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(s),
        }
    }
}

fn missing(what: &str, name: &str) -> ProviderError {
    ProviderError::Permanent(format!("{what} {name} does not exist"))
}

impl DatabaseEndpoint for FakeProvider {
    fn region(&self) -> String {
        "test".into()
    }

    fn pg_versions(&self) -> Vec<String> {
        vec!["15".into()]
    }

    fn connection_info(&self, database: &str, role: &str, password: &str) -> ConnectionInfo {
        self.connection_info_on("127.0.0.1", database, role, password)
    }

    fn connection_info_on(&self, host: &str, database: &str, role: &str, password: &str) -> ConnectionInfo {
        ConnectionInfo {
            role: role.into(),
            host: host.into(),
            port: 5432,
            database: database.into(),
            user: role.into(),
            password: password.into(),
            sslmode: "disable".into(),
            uri: format!("postgres://{role}:{password}@{host}:5432/{database}"),
        }
    }
}

#[async_trait]
impl DatabaseProvider for FakeProvider {
    async fn ensure_role(&self, role: &str, password: &str) -> ProviderResult<()> {
        self.call("ensure_role", role)?.roles.insert(role.into(), password.into());
        Ok(())
    }

    async fn ensure_database(&self, database: &str, owner: &str) -> ProviderResult<()> {
        let mut s = self.call("ensure_database", database)?;
        if !s.roles.contains_key(owner) {
            return Err(missing("role", owner));
        }
        s.databases.entry(database.into()).or_insert_with(|| (owner.into(), String::new()));
        Ok(())
    }

    async fn clone_database(&self, source: &str, _: &str, target: &str, owner: &str) -> CloneResult {
        let mut s = self.call("clone_database", target)?;
        let content = s.databases.get(source).ok_or_else(|| missing("database", source))?.1.clone();
        s.databases.insert(target.into(), (owner.into(), content));
        Ok(CloneStrategy::Template)
    }

    async fn dump_database(&self, database: &str, dest: &Path) -> ProviderResult<()> {
        let s = self.call("dump_database", database)?;
        let content = s.databases.get(database).ok_or_else(|| missing("database", database))?.1.clone();
        std::fs::write(dest, content).map_err(|e| ProviderError::Retryable(format!("could not write the dump: {e}")))
    }

    async fn restore_database(&self, dump: &Path, target: &str, owner: &str) -> ProviderResult<()> {
        let mut s = self.call("restore_database", target)?;
        let content = std::fs::read_to_string(dump).map_err(|e| ProviderError::Permanent(format!("no dump: {e}")))?;
        s.databases.insert(target.into(), (owner.into(), content));
        Ok(())
    }

    async fn import_database(&self, source_url: &str, target: &str, owner: &str) -> ProviderResult<()> {
        let mut s = self.call("import_database", target)?;
        s.databases.insert(target.into(), (owner.into(), format!("imported from {}", source_url.len())));
        Ok(())
    }

    async fn replace_database(&self, live: &str, replacement: &str) -> ProviderResult<()> {
        let mut s = self.call("replace_database", live)?;
        match s.databases.remove(replacement) {
            Some(db) => {
                s.databases.insert(live.into(), db);
                Ok(())
            }
            // Swapped already by an earlier run of the step.
            None if s.databases.contains_key(live) => Ok(()),
            None => Err(missing("database", replacement)),
        }
    }

    async fn check_connection(&self, database: &str, role: &str, password: &str) -> ProviderResult<()> {
        let s = self.call("check_connection", database)?;
        if s.roles.get(role).map(String::as_str) != Some(password) {
            return Err(ProviderError::Permanent(format!("password authentication failed for {role}")));
        }
        match s.databases.get(database) {
            Some((owner, _)) if owner == role => Ok(()),
            Some(_) => Err(ProviderError::Permanent(format!("{role} does not own {database}"))),
            None => Err(missing("database", database)),
        }
    }

    async fn drop_database(&self, database: &str) -> ProviderResult<()> {
        self.call("drop_database", database)?.databases.remove(database);
        Ok(())
    }

    async fn drop_role(&self, role: &str) -> ProviderResult<()> {
        self.call("drop_role", role)?.roles.remove(role);
        Ok(())
    }

    async fn database_exists(&self, database: &str) -> ProviderResult<bool> {
        Ok(self.lock().databases.contains_key(database))
    }

    async fn role_exists(&self, role: &str) -> ProviderResult<bool> {
        Ok(self.lock().roles.contains_key(role))
    }

    async fn ping(&self) -> ProviderResult<()> {
        Ok(())
    }
}

/// Jobs as stored before the typed job model (see the file's `about`).
pub const STORED_JOBS_V1: &str = include_str!("../fixtures/stored-jobs-v1.json");

/// One job of [`STORED_JOBS_V1`].
#[derive(Debug, Clone, serde::Deserialize)]
pub struct StoredJob {
    pub kind: String,
    pub resource_kind: String,
    pub resource_id: String,
    pub step: u32,
    pub params: String,
}

/// The stored jobs of [`STORED_JOBS_V1`] and the body of their queue message.
pub fn stored_jobs_v1() -> (String, Vec<StoredJob>) {
    #[derive(serde::Deserialize)]
    struct File {
        message: String,
        jobs: Vec<StoredJob>,
    }
    let f: File = serde_json::from_str(STORED_JOBS_V1).expect("the fixture is JSON");
    (f.message, f.jobs)
}

/// `text` with each `$NAME` of `values` replaced, longest names first.
pub fn fill(text: &str, values: &[(&str, &str)]) -> String {
    let mut values = values.to_vec();
    values.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    let mut out = text.to_string();
    for (k, v) in values {
        out = out.replace(&format!("${k}"), v);
    }
    out
}

/// A clock a test moves by hand.
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(now: Timestamp) -> Self {
        ManualClock(Mutex::new(now))
    }

    pub fn advance(&self, d: chrono::Duration) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An egress policy that allows every target, for tests whose provider
/// connects nowhere (`FakeProvider`).
pub struct AnyWhere;

#[async_trait]
impl Egress for AnyWhere {
    async fn check_url(&self, _: &url::Url) -> Result<(), String> {
        Ok(())
    }
}
