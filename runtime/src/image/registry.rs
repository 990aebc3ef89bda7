//! Where an image is pulled from and how: per-registry mirrors, plain HTTP or unverified
//! TLS for named registries, credentials, and the loopback rule (a registry on localhost,
//! 127.0.0.0/8 or ::1 that does not speak TLS is reached over plain HTTP, as Docker and
//! containerd allow). The registry protocol itself is `oci-client`'s.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;

/// How to log in to a registry.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// A registry (bearer) token used as is.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credentials::Bearer(_) => write!(f, "Bearer(<redacted>)"),
        }
    }
}

impl Credentials {
    fn to_auth(cred: Option<&Credentials>) -> RegistryAuth {
        match cred {
            None => RegistryAuth::Anonymous,
            Some(Credentials::Basic { username, password }) => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Some(Credentials::Bearer(t)) => RegistryAuth::Bearer(t.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Http,
}

/// A mirror: `http://127.0.0.1:5000` or `https://mirror.example` (no scheme: https).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub scheme: Scheme,
    pub host: String,
}

impl Mirror {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, rest) = match s.split_once("://") {
            Some(("http", rest)) => (Scheme::Http, rest),
            Some(("https", rest)) => (Scheme::Https, rest),
            Some((other, _)) => return Err(format!("scheme {other:?} is not http or https")),
            None => (Scheme::Https, s),
        };
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
            return Err(format!("{s:?} is not a registry host (host[:port], no path)"));
        }
        Ok(Self { scheme, host: host.to_owned() })
    }
}

/// Settings for one registry host (config.toml `[registries."<host>"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// Tried in order before the registry itself.
    pub mirrors: Vec<Mirror>,
    /// Speak plain HTTP to this host.
    pub plain_http: bool,
    /// Accept any TLS certificate from this host.
    pub skip_verify: bool,
    /// Used when a pull brings no credentials of its own.
    pub credentials: Option<Credentials>,
}

/// Every registry's settings, by host (`docker.io`, `registry.k8s.io`, `127.0.0.1:5000`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    pub hosts: BTreeMap<String, HostConfig>,
}

/// One place to try: a mirror or the registry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// host[:port]; for the registry itself its name (`docker.io`).
    pub host: String,
    pub mirror: bool,
    pub protocol: Protocol,
    pub skip_verify: bool,
    pub credentials: Option<Credentials>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Https,
    Http,
    /// HTTPS, and plain HTTP when the host does not speak TLS (loopback registries).
    HttpsThenHttp,
}

impl Endpoint {
    /// How the endpoint appears in messages: `http://127.0.0.1:5000 (mirror)`.
    pub fn describe(&self) -> String {
        let scheme = if self.protocol == Protocol::Http { "http://" } else { "" };
        let role = if self.mirror { " (mirror)" } else { "" };
        format!("{scheme}{}{role}", self.host)
    }
}

impl RegistryConfig {
    /// Where to pull `registry`'s images from, in order: its mirrors, then itself.
    pub fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let own = self.hosts.get(registry).cloned().unwrap_or_default();
        let mut out: Vec<Endpoint> = own
            .mirrors
            .iter()
            .map(|m| {
                let cfg = self.hosts.get(&m.host).cloned().unwrap_or_default();
                let protocol = match m.scheme {
                    Scheme::Http => Protocol::Http,
                    Scheme::Https if cfg.plain_http => Protocol::Http,
                    Scheme::Https if is_loopback(&m.host) => Protocol::HttpsThenHttp,
                    Scheme::Https => Protocol::Https,
                };
                Endpoint {
                    host: m.host.clone(),
                    mirror: true,
                    protocol,
                    skip_verify: cfg.skip_verify,
                    credentials: cfg.credentials,
                }
            })
            .collect();
        let protocol = if own.plain_http {
            Protocol::Http
        } else if is_loopback(registry) {
            Protocol::HttpsThenHttp
        } else {
            Protocol::Https
        };
        out.push(Endpoint {
            host: registry.to_owned(),
            mirror: false,
            protocol,
            skip_verify: own.skip_verify,
            credentials: own.credentials,
        });
        out
    }
}

/// `localhost`, 127.0.0.0/8 or ::1, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let name = if host.parse::<IpAddr>().is_ok() {
        host
    } else if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A client for one endpoint over one scheme; a fresh one per pull, since `oci-client`
/// keeps the first credentials it is given per registry.
pub fn client(endpoint: &Endpoint, http: bool) -> oci_client::Client {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        // Another part of the process may have installed one already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let protocol = if http {
        // oci-client names docker.io's API host itself.
        ClientProtocol::HttpsExcept(vec![endpoint.host.clone()])
    } else {
        ClientProtocol::Https
    };
    oci_client::Client::new(ClientConfig {
        protocol,
        accept_invalid_certificates: endpoint.skip_verify,
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(15)),
        read_timeout: Some(Duration::from_secs(120)),
        user_agent: concat!("podbay/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    })
}

pub fn auth(endpoint: &Endpoint, request: Option<&Credentials>) -> RegistryAuth {
    Credentials::to_auth(request.or(endpoint.credentials.as_ref()))
}

/// What went wrong talking to a registry, for the error kind and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Unreachable,
    Unauthorized,
    NotFound,
    Other,
}

impl Failure {
    pub fn of(e: &OciDistributionError) -> Self {
        use OciDistributionError as E;
        match e {
            E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => Failure::Unauthorized,
            E::ImageManifestNotFoundError(_) => Failure::NotFound,
            E::RegistryError { envelope, .. } => {
                let codes = envelope.errors.iter().map(|e| &e.code);
                let mut out = Failure::Other;
                for code in codes {
                    match code {
                        OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound => out = Failure::NotFound,
                        OciErrorCode::Unauthorized | OciErrorCode::Denied => {
                            out = Failure::Unauthorized
                        }
                        _ => {}
                    }
                }
                out
            }
            E::ServerError { code: 404, .. } => Failure::NotFound,
            E::ServerError { code: 401 | 403, .. } => Failure::Unauthorized,
            E::RequestError(r) if r.is_connect() || r.is_timeout() => Failure::Unreachable,
            _ => Failure::Other,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Failure::Unreachable => "unreachable",
            Failure::Unauthorized => "unauthorized (401): wrong or missing credentials",
            Failure::NotFound => "manifest unknown",
            Failure::Other => "failed",
        }
    }
}

/// The most telling failure among several endpoints' (a missing image on a mirror should
/// not hide a 401 from the registry itself).
pub fn worst(failures: &[Failure]) -> Failure {
    for f in [Failure::Unauthorized, Failure::NotFound, Failure::Other, Failure::Unreachable] {
        if failures.contains(&f) {
            return f;
        }
    }
    Failure::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "localhost:5000", "127.0.0.1:5000", "127.3.2.1", "[::1]:5000", "::1"]
        {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["docker.io", "10.0.0.1:5000", "registry.k8s.io", "[2001:db8::1]:5000"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn mirrors_come_first_then_the_registry() {
        let mut cfg = RegistryConfig::default();
        cfg.hosts.insert(
            "registry.k8s.io".into(),
            HostConfig {
                mirrors: vec![
                    Mirror::parse("http://127.0.0.1:5000").unwrap(),
                    Mirror::parse("mirror.example").unwrap(),
                ],
                ..Default::default()
            },
        );
        cfg.hosts.insert(
            "mirror.example".into(),
            HostConfig { skip_verify: true, ..Default::default() },
        );
        let eps = cfg.endpoints("registry.k8s.io");
        assert_eq!(eps.len(), 3);
        assert_eq!((eps[0].host.as_str(), eps[0].protocol), ("127.0.0.1:5000", Protocol::Http));
        assert_eq!((eps[1].host.as_str(), eps[1].protocol), ("mirror.example", Protocol::Https));
        assert!(eps[1].skip_verify);
        assert_eq!((eps[2].host.as_str(), eps[2].mirror), ("registry.k8s.io", false));
        // A loopback registry: TLS first, plain HTTP when it does not speak TLS.
        assert_eq!(cfg.endpoints("localhost:5000")[0].protocol, Protocol::HttpsThenHttp);
        assert_eq!(cfg.endpoints("docker.io")[0].protocol, Protocol::Https);
    }

    #[test]
    fn mirror_urls() {
        assert_eq!(
            Mirror::parse("http://127.0.0.1:5000/").unwrap(),
            Mirror { scheme: Scheme::Http, host: "127.0.0.1:5000".into() }
        );
        assert!(Mirror::parse("ftp://x").is_err());
        assert!(Mirror::parse("https://x/v2/foo").is_err());
    }
}
