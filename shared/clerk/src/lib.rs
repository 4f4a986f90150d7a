//! Clerk session JWTs: the [`SessionVerifier`](capydb_domain::ports::SessionVerifier)
//! of both shapes.
//!
//! A browser session's token is a Clerk session JWT. [`ClerkVerifier`]
//! accepts it only when:
//!
//! - its header says `RS256`. The header is read here, before any key is
//!   touched, and every other algorithm (`none`, `HS256` — including an
//!   HMAC made with the public key's PEM as the secret —, `RS384`, `ES256`,
//!   ...) is refused by name; the library is never asked to pick one;
//! - its signature verifies with the configured key: a PEM public key
//!   (`CAPYDB_CLERK_JWT_KEY`, no network needed), or else the key of the
//!   token's `kid` in the JWKS at `CAPYDB_CLERK_JWKS_URL`. The key set is
//!   cached; an unknown `kid` refetches it, at most once a minute whatever
//!   the tokens say, with a 5 s deadline, through the egress policy;
//! - `exp` has not passed and `nbf` (and `iat`) are not in the future, with
//!   5 s of skew either way, judged at the `now` the caller passes;
//! - `iss` is the configured issuer exactly, when one is configured;
//! - `azp`, when the token has one, is one of the configured authorized
//!   parties (`CAPYDB_CLERK_AUTHORIZED_PARTIES`). With none configured, a
//!   token that names an `azp` is refused: Clerk puts the requesting origin
//!   there and recommends checking it, so a deployment has to say which
//!   origins are its own. Tokens without `azp` (back-end or locally minted
//!   ones) are not affected;
//! - it names its user (`sub`).
//!
//! Where the key set comes from is a [`JwksSource`]: [`HttpJwksSource`] in
//! both shapes, any other (a test's, a cache's) through
//! [`ClerkVerifier::with_jwks_source`].
//!
//! The active organization comes from v1 claims (`org_id`, `org_role`, with
//! `org:admin` the admin role, `org_slug`) or v2 claims (`v: 2`, `o.id`,
//! `o.rol`, with `admin` the admin role, `o.slg`); a token with neither has
//! no active organization. Every refusal is `DomainError::Unauthenticated`
//! with a reason a developer can act on; no input makes it panic.
mod config;
mod jwks;
#[cfg(feature = "testkit")]
pub mod testkit;
mod verifier;

pub use config::ClerkConfig;
pub use jsonwebtoken::jwk::{Jwk, JwkSet};
pub use jwks::{HttpJwksSource, JwksSource, JWKS_TIMEOUT};
pub use verifier::{ClerkVerifier, JWKS_REFRESH_INTERVAL, LEEWAY_SECS, MAX_TOKEN_BYTES};
