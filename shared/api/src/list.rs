//! List responses: a bare JSON array, and a `Link: <...>; rel="next"` header
//! when another page exists.
use axum::http::{header, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::extract::encode_cursor;

/// Anything listed has an id; the last id on a page is the next cursor.
pub trait HasId {
    fn id(&self) -> &str;
}

macro_rules! has_id {
    ($($t:ty),*) => { $(impl HasId for $t { fn id(&self) -> &str { &self.id } })* };
}
has_id!(
    capydb_domain::cli_login::CliSession,
    capydb_domain::model::Project,
    capydb_domain::model::WebhookEndpoint,
    capydb_domain::model::Delivery,
    capydb_domain::model::Preview,
    capydb_domain::model::Backup,
    capydb_domain::model::Job,
    capydb_domain::model::ApiKey,
    capydb_domain::model::Organization
);

pub struct ListResponse<T> {
    items: Vec<T>,
    next: Option<String>,
}

impl<T: Serialize + HasId> ListResponse<T> {
    /// `items` were fetched with a limit of `limit + 1` (see
    /// `Pagination::overfetch`): the extra item only tells that a next page exists.
    pub fn new(mut items: Vec<T>, limit: usize, uri: &Uri) -> Self {
        let more = items.len() > limit;
        items.truncate(limit);
        let next = (more && limit > 0).then(|| {
            let cursor = encode_cursor(items[items.len() - 1].id());
            format!("<{}?limit={limit}&cursor={cursor}>; rel=\"next\"", uri.path())
        });
        ListResponse { items, next }
    }
}

impl<T: Serialize> IntoResponse for ListResponse<T> {
    fn into_response(self) -> Response {
        let mut res = crate::bodies::Json(self.items).into_response();
        if let Some(link) = self.next.and_then(|l| HeaderValue::from_str(&l).ok()) {
            res.headers_mut().insert(header::LINK, link);
        }
        res
    }
}
