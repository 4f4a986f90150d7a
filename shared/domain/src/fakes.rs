//! A database provider kept in memory, for tests of the job state machine:
//! it behaves as a server would (roles with passwords, databases with
//! owners, dumps as files) and answers, per operation, the errors a test
//! plans for it before doing the work.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::model::{ConnectionInfo, Timestamp};
use crate::ports::{
    Clock, CloneResult, CloneStrategy, DatabaseEndpoint, DatabaseProvider, DedicatedServers, Egress, ProviderError,
    ProviderResult, ServerOwner, ServerSnapshot, ServerSnapshots, ServerSource, Slot,
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

    /// Another server holding the same roles and databases (a clone).
    pub fn copy(&self) -> FakeProvider {
        let s = self.lock();
        let copy = Server { roles: s.roles.clone(), databases: s.databases.clone(), ..Server::default() };
        FakeProvider { server: Mutex::new(copy) }
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

/// The servers of a dedicated deployment, kept in memory: each one a
/// [`FakeProvider`] of its own, its host derived from its resource's id (as
/// an RDS endpoint is from its identifier), admitting its admin only with
/// the password it was made with. Every operation finishes at once; wrap
/// it in [`SlowServers`] for the waits of a cloud provider.
#[derive(Default)]
pub struct FakeServers {
    state: Mutex<Servers>,
    /// When snapshots are taken; the system's clock when unset.
    clock: Option<Arc<dyn Clock>>,
}

/// A snapshot a [`FakeServers`] keeps.
struct Snapshot {
    server: Arc<FakeProvider>,
    backup_id: Option<String>,
    final_of: Option<String>,
    created_at: Timestamp,
}

#[derive(Default)]
struct Servers {
    snapshots: BTreeMap<String, Snapshot>,
    live: BTreeMap<String, Arc<FakeProvider>>,
    /// (resource, job) -> the replacement the job builds.
    replacements: BTreeMap<(String, String), Arc<FakeProvider>>,
    retired: BTreeMap<String, Arc<FakeProvider>>,
    /// resource -> the job whose replacement its live server is.
    swapped_by: BTreeMap<String, String>,
    /// host -> admin password
    admins: BTreeMap<String, String>,
    calls: Vec<String>,
    /// operation -> an error it answers once, after doing its work.
    fail_after: HashMap<&'static str, ProviderError>,
}

impl FakeServers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Snapshots taken at this clock's time.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        FakeServers { clock: Some(clock), ..Self::default() }
    }

    fn now(&self) -> Timestamp {
        self.clock.as_ref().map_or_else(chrono::Utc::now, |c| c.now())
    }

    /// The host of `resource`'s live server (and of a replacement once swapped in).
    pub fn host_of(resource: &str) -> String {
        format!("{}.servers.test", resource.replace('_', "-"))
    }

    /// The host of the replacement `job` builds, until it is swapped in.
    fn replacement_host(resource: &str, job: &str) -> String {
        format!("{}-next-{}.servers.test", resource.replace('_', "-"), job.replace('_', "-"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Servers> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `resource`'s live server.
    pub fn server(&self, resource: &str) -> Option<Arc<FakeProvider>> {
        self.lock().live.get(resource).cloned()
    }

    /// How many servers exist, live, replacements and retired.
    pub fn count(&self) -> usize {
        let s = self.lock();
        s.live.len() + s.replacements.len() + s.retired.len()
    }

    /// The resources whose server left a final snapshot when removed (and
    /// it is still kept).
    pub fn final_snapshots(&self) -> Vec<String> {
        self.lock().snapshots.values().filter_map(|s| s.final_of.clone()).collect()
    }

    /// The data of the backup `backup_id`'s snapshot.
    pub fn snapshot_of(&self, backup_id: &str) -> Option<Arc<FakeProvider>> {
        self.lock().snapshots.get(&format!("snap-{backup_id}")).map(|s| s.server.clone())
    }

    /// Every call so far, as `operation(resource)`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// The next `operation` (`make`, `swap`, `revert`, `remove_spares`,
    /// `remove`, `snapshot`) does its work, then answers `error`: the work
    /// done and its answer lost, as when a worker dies between the two.
    pub fn fail_after(&self, operation: &'static str, error: ProviderError) {
        self.lock().fail_after.insert(operation, error);
    }

    fn after(&self, operation: &'static str) -> ProviderResult<()> {
        self.lock().fail_after.remove(operation).map_or(Ok(()), Err)
    }
}

#[async_trait]
impl DedicatedServers for FakeServers {
    async fn make(
        &self,
        owner: ServerOwner<'_>,
        slot: Slot<'_>,
        source: ServerSource<'_>,
        admin_password: &str,
    ) -> ProviderResult<String> {
        let mut s = self.lock();
        s.calls.push(format!("make({})", owner.resource_id));
        let resource = owner.resource_id.to_string();
        let exists = match slot {
            Slot::Live => s.live.contains_key(&resource),
            Slot::Replacement(job) => s.replacements.contains_key(&(resource.clone(), job.to_string())),
        };
        if !exists {
            let server = match source {
                ServerSource::Empty => FakeProvider::new(),
                ServerSource::CloneOf(project) => s.live.get(project).ok_or_else(|| missing("server", project))?.copy(),
                ServerSource::Snapshot(backup) => {
                    let id = format!("snap-{backup}");
                    s.snapshots.get(&id).ok_or_else(|| missing("snapshot", &id))?.server.copy()
                }
            };
            let server = Arc::new(server);
            match slot {
                Slot::Live => {
                    s.live.insert(resource.clone(), server);
                }
                Slot::Replacement(job) => {
                    s.replacements.insert((resource.clone(), job.to_string()), server);
                }
            }
        }
        let host = match slot {
            Slot::Live => Self::host_of(&resource),
            Slot::Replacement(job) => Self::replacement_host(&resource, job),
        };
        s.admins.insert(host.clone(), admin_password.to_string());
        drop(s);
        self.after("make")?;
        Ok(host)
    }

    async fn swap(&self, owner: ServerOwner<'_>, job: &str) -> ProviderResult<String> {
        let mut s = self.lock();
        s.calls.push(format!("swap({})", owner.resource_id));
        let resource = owner.resource_id.to_string();
        if let Some(next) = s.replacements.remove(&(resource.clone(), job.to_string())) {
            if let Some(old) = s.live.insert(resource.clone(), next) {
                s.retired.insert(resource.clone(), old);
            }
            s.swapped_by.insert(resource.clone(), job.to_string());
        } else if !s.live.contains_key(&resource) {
            return Err(missing("server", &resource));
        }
        drop(s);
        self.after("swap")?;
        Ok(Self::host_of(&resource))
    }

    async fn revert(&self, owner: ServerOwner<'_>, job: &str) -> ProviderResult<String> {
        let mut s = self.lock();
        s.calls.push(format!("revert({})", owner.resource_id));
        let resource = owner.resource_id.to_string();
        s.replacements.remove(&(resource.clone(), job.to_string()));
        if s.swapped_by.get(&resource).map(String::as_str) == Some(job) {
            if let Some(previous) = s.retired.remove(&resource) {
                s.live.insert(resource.clone(), previous);
            }
            s.swapped_by.remove(&resource);
        }
        if !s.live.contains_key(&resource) {
            return Err(missing("server", &resource));
        }
        drop(s);
        self.after("revert")?;
        Ok(Self::host_of(&resource))
    }

    async fn remove_spares(&self, owner: ServerOwner<'_>) -> ProviderResult<()> {
        let mut s = self.lock();
        s.calls.push(format!("remove_spares({})", owner.resource_id));
        s.retired.remove(owner.resource_id);
        s.replacements.retain(|(r, _), _| r != owner.resource_id);
        drop(s);
        self.after("remove_spares")
    }

    async fn remove(&self, owner: ServerOwner<'_>, final_snapshot: bool) -> ProviderResult<()> {
        let mut s = self.lock();
        s.calls.push(format!("remove({})", owner.resource_id));
        let resource = owner.resource_id.to_string();
        let now = self.now();
        if let Some(server) = s.live.remove(&resource).filter(|_| final_snapshot) {
            let last = Snapshot { server, backup_id: None, final_of: Some(resource.clone()), created_at: now };
            s.snapshots.insert(format!("final-{resource}"), last);
        }
        s.retired.remove(&resource);
        s.replacements.retain(|(r, _), _| *r != resource);
        s.admins.remove(&Self::host_of(&resource));
        drop(s);
        self.after("remove")
    }

    async fn admin(&self, host: &str, admin_password: &str) -> ProviderResult<Arc<dyn DatabaseProvider>> {
        let s = self.lock();
        match s.admins.get(host) {
            Some(p) if p == admin_password => {}
            Some(_) => return Err(ProviderError::Permanent("password authentication failed for the admin".into())),
            None => return Err(ProviderError::Retryable(format!("no server answers at {host}"))),
        }
        let live = s.live.iter().find(|(r, _)| Self::host_of(r) == host);
        let next = s.replacements.iter().find(|((r, job), _)| Self::replacement_host(r, job) == host);
        let server = live.map(|(_, p)| p.clone()).or_else(|| next.map(|(_, p)| p.clone()));
        server.map(|p| p as Arc<dyn DatabaseProvider>).ok_or_else(|| missing("server", host))
    }

    async fn snapshot(&self, owner: ServerOwner<'_>, backup_id: &str) -> ProviderResult<()> {
        let now = self.now();
        let mut s = self.lock();
        s.calls.push(format!("snapshot({})", owner.resource_id));
        let id = format!("snap-{backup_id}");
        if !s.snapshots.contains_key(&id) {
            let live = s.live.get(owner.resource_id).ok_or_else(|| missing("server", owner.resource_id))?;
            let taken = Snapshot {
                server: Arc::new(live.copy()),
                backup_id: Some(backup_id.to_string()),
                final_of: None,
                created_at: now,
            };
            s.snapshots.insert(id, taken);
        }
        drop(s);
        self.after("snapshot")
    }
}

#[async_trait]
impl ServerSnapshots for FakeServers {
    async fn snapshots(&self) -> ProviderResult<Vec<ServerSnapshot>> {
        let s = self.lock();
        let listed = s.snapshots.iter().map(|(id, snap)| ServerSnapshot {
            id: id.clone(),
            backup_id: snap.backup_id.clone(),
            final_of: snap.final_of.clone(),
            created_at: Some(snap.created_at),
        });
        Ok(listed.collect())
    }

    async fn delete_snapshot(&self, id: &str) -> ProviderResult<()> {
        let mut s = self.lock();
        s.calls.push(format!("delete_snapshot({id})"));
        s.snapshots.remove(id);
        Ok(())
    }
}

/// A wrapper reporting what a cloud provider reports while it works: each
/// `make`, `swap` and `remove` of a resource starts at its first call but
/// answers "not yet" (`ProviderError::NotYet` of `check_again`) for `polls`
/// calls before it answers what the wrapped servers do.
pub struct SlowServers {
    inner: Arc<dyn DedicatedServers>,
    polls: u32,
    /// `polls` for `remove`, when it differs.
    remove_polls: Option<u32>,
    /// What `make` answers once it started (a quota met half-way).
    make_fails: Option<ProviderError>,
    check_again: std::time::Duration,
    seen: Mutex<HashMap<String, u32>>,
}

impl SlowServers {
    pub fn new(inner: Arc<dyn DedicatedServers>, polls: u32, check_again: std::time::Duration) -> Self {
        SlowServers {
            inner,
            polls,
            remove_polls: None,
            make_fails: None,
            check_again,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `make` starts, then answers `error` (e.g. a cluster made, its writer
    /// refused by the account's instance quota).
    pub fn failing_make(self, error: ProviderError) -> Self {
        SlowServers { make_fails: Some(error), ..self }
    }

    /// `remove` answers "not yet" `polls` times instead.
    pub fn removing_after(self, polls: u32) -> Self {
        SlowServers { remove_polls: Some(polls), ..self }
    }

    /// The operation `key` as a cloud provider runs it: `run` starts it at
    /// the first call, which then answers "not yet" as do the next calls,
    /// up to `polls` of them; after those, each call answers what `run` does.
    async fn slowly<T, F, Fut>(&self, key: String, polls: u32, run: F) -> ProviderResult<T>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ProviderResult<T>>,
    {
        let calls = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let n = seen.entry(key).or_insert(0);
            *n += 1;
            *n
        };
        let busy = calls <= polls;
        if calls == 1 || !busy {
            let answer = run().await?;
            if !busy {
                return Ok(answer);
            }
        }
        Err(self.not_yet())
    }

    fn not_yet(&self) -> ProviderError {
        ProviderError::NotYet(self.check_again)
    }
}

#[async_trait]
impl DedicatedServers for SlowServers {
    async fn make(
        &self,
        owner: ServerOwner<'_>,
        slot: Slot<'_>,
        source: ServerSource<'_>,
        admin_password: &str,
    ) -> ProviderResult<String> {
        let key = format!("make {} {slot:?}", owner.resource_id);
        self.slowly(key, self.polls, || async {
            let host = self.inner.make(owner, slot, source, admin_password).await?;
            match &self.make_fails {
                Some(e) => Err(e.clone()),
                None => Ok(host),
            }
        })
        .await
    }

    async fn swap(&self, owner: ServerOwner<'_>, job: &str) -> ProviderResult<String> {
        let key = format!("swap {} {job}", owner.resource_id);
        self.slowly(key, self.polls, || self.inner.swap(owner, job)).await
    }

    async fn revert(&self, owner: ServerOwner<'_>, job: &str) -> ProviderResult<String> {
        self.inner.revert(owner, job).await
    }

    async fn remove_spares(&self, owner: ServerOwner<'_>) -> ProviderResult<()> {
        self.inner.remove_spares(owner).await
    }

    async fn remove(&self, owner: ServerOwner<'_>, final_snapshot: bool) -> ProviderResult<()> {
        let (key, polls) = (format!("remove {}", owner.resource_id), self.remove_polls.unwrap_or(self.polls));
        self.slowly(key, polls, || self.inner.remove(owner, final_snapshot)).await
    }

    async fn admin(&self, host: &str, admin_password: &str) -> ProviderResult<Arc<dyn DatabaseProvider>> {
        self.inner.admin(host, admin_password).await
    }

    async fn snapshot(&self, owner: ServerOwner<'_>, backup_id: &str) -> ProviderResult<()> {
        self.slowly(format!("snapshot {backup_id}"), self.polls, || self.inner.snapshot(owner, backup_id)).await
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
