//! Who is calling. IIB takes the user from `REMOTE_USER`, set by Apache's mod_auth_gssapi
//! (Kerberos); we take it from a header (`IIB_AUTH_USER_HEADER`, default `X-Remote-User`) that
//! an authenticating reverse proxy sets, and only when the connection comes from one of
//! `IIB_TRUSTED_PROXIES`: anyone else could set the header themselves. `deploy/` has a proxy
//! configuration. With `LOGIN_DISABLED=true` everyone is anonymous and may write.

use crate::api::error::ApiError;
use axum::http::HeaderMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether an untrusted peer's user header was logged already (once per process: a client
/// repeating it must not flood the log).
static UNTRUSTED_HEADER_LOGGED: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub login_disabled: bool,
    pub user_header: String,
    pub trusted_proxies: Vec<IpAddr>,
    pub worker_usernames: Vec<String>,
}

impl AuthConfig {
    /// The authenticated user of a call, if any.
    pub fn user(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<String> {
        let peer = peer?;
        let trusted = self
            .trusted_proxies
            .iter()
            .any(|ip| *ip == peer.ip() || Some(*ip) == canonical(peer.ip()));
        if !trusted {
            if headers.contains_key(&self.user_header)
                && !UNTRUSTED_HEADER_LOGGED.swap(true, Ordering::Relaxed)
            {
                tracing::warn!(
                    %peer,
                    header = %self.user_header,
                    "ignored a user header from a peer not in IIB_TRUSTED_PROXIES (logged once): the call is anonymous"
                );
            }
            return None;
        }
        let user = headers.get(&self.user_header)?.to_str().ok()?.trim();
        (!user.is_empty()).then(|| user.to_string())
    }

    /// Says at start-up who the service believes and who may write, so an operator can see
    /// the trust model without reading the settings.
    pub fn log_trust_model(&self) {
        let proxies: Vec<String> = self.trusted_proxies.iter().map(IpAddr::to_string).collect();
        if self.login_disabled {
            tracing::warn!(
                "LOGIN_DISABLED is true: anyone who reaches the API may submit requests and PATCH any request as a worker"
            );
        } else {
            tracing::info!(
                header = %self.user_header,
                trusted_proxies = ?proxies,
                "the user comes from this header, believed only from these peers (IIB_AUTH_USER_HEADER, IIB_TRUSTED_PROXIES)"
            );
            if self.worker_usernames.is_empty() {
                tracing::info!(
                    "PATCH /api/v1/builds/<id> is closed: IIB_WORKER_USERNAMES is empty"
                );
            } else {
                tracing::info!(workers = ?self.worker_usernames, "PATCH /api/v1/builds/<id> is open to these users (IIB_WORKER_USERNAMES)");
            }
        }
    }

    /// IIB's `login_required`: a user, or `LOGIN_DISABLED`.
    pub fn require_login(&self, user: &Option<String>) -> Result<(), ApiError> {
        if user.is_some() || self.login_disabled {
            Ok(())
        } else {
            Err(ApiError::unauthorized())
        }
    }

    /// IIB's check for the worker-only `PATCH`.
    pub fn require_worker(&self, user: &Option<String>) -> Result<(), ApiError> {
        self.require_login(user)?;
        match user {
            Some(user) if !self.worker_usernames.contains(user) => Err(ApiError::forbidden(
                "This API endpoint is restricted to IIB workers",
            )),
            _ => Ok(()),
        }
    }
}

/// `::ffff:127.0.0.1` is 127.0.0.1.
fn canonical(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> AuthConfig {
        AuthConfig {
            login_disabled: false,
            user_header: "X-Remote-User".into(),
            trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
            worker_usernames: vec!["worker@DOMAIN.LOCAL".into()],
        }
    }

    fn headers(user: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-remote-user", user.parse().unwrap());
        h
    }

    #[test]
    fn the_user_header_counts_only_from_a_trusted_proxy() {
        let a = auth();
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let stranger: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        assert_eq!(a.user(Some(local), &headers("bob")), Some("bob".into()));
        assert_eq!(a.user(Some(mapped), &headers("bob")), Some("bob".into()));
        assert_eq!(a.user(Some(stranger), &headers("bob")), None);
        assert_eq!(a.user(Some(local), &headers("  ")), None);
    }

    #[test]
    fn writes_need_a_user_and_patch_needs_a_worker() {
        let a = auth();
        assert_eq!(a.require_login(&None).unwrap_err().status, 401);
        assert!(a.require_login(&Some("bob".into())).is_ok());
        assert_eq!(
            a.require_worker(&Some("bob".into())).unwrap_err().message,
            "This API endpoint is restricted to IIB workers"
        );
        assert!(a
            .require_worker(&Some("worker@DOMAIN.LOCAL".into()))
            .is_ok());
        let open = AuthConfig {
            login_disabled: true,
            ..auth()
        };
        assert!(open.require_login(&None).is_ok());
        assert!(open.require_worker(&None).is_ok());
    }
}
