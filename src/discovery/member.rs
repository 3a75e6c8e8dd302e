//! What a server announces in its server sets, with no ZooKeeper in sight:
//! which sets a status belongs in, and the member node's data.

use std::net::SocketAddr;

use serde_json::json;

use crate::status::ServerStatus;

/// One of the two server sets under the path prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    /// Servers clients may read from.
    Read,
    /// Servers clients may write to.
    Write,
}

impl Set {
    pub const ALL: [Set; 2] = [Set::Read, Set::Write];

    /// The set's node name under the prefix.
    pub fn name(self) -> &'static str {
        match self {
            Set::Read => "read",
            Set::Write => "write",
        }
    }

    /// Whether a server in `status` belongs in this set: an `UP` server in
    /// both, a `READ_ONLY` one only in `read`, a `QUIESCENT` one in neither.
    pub fn admits(self, status: ServerStatus) -> bool {
        match self {
            Set::Read => status <= ServerStatus::ReadOnly,
            Set::Write => status == ServerStatus::Up,
        }
    }
}

/// The member node's name prefix; ZooKeeper appends a sequence number. The
/// name server-set readers (Finagle, Twitter commons) look for.
pub const MEMBER_PREFIX: &str = "member_";

/// The protocols a server listens on, as announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The host clients connect to.
    pub host: String,
    pub memcache: Option<u16>,
    pub thrift: Option<u16>,
    pub text: Option<u16>,
}

impl Endpoints {
    /// The endpoints of listeners bound at `addrs` (`(protocol, address)`),
    /// announced at `advertise`, or at the listen address unless that is a
    /// wildcard, in which case at the machine's host name.
    pub fn new(advertise: Option<&str>, addrs: &[(&str, Option<SocketAddr>)]) -> Endpoints {
        let port = |name: &str| {
            addrs
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, a)| a.map(|a| a.port()))
        };
        let listen = addrs.iter().find_map(|(_, a)| a.map(|a| a.ip()));
        let host = match (advertise, listen) {
            (Some(host), _) => host.to_string(),
            (None, Some(ip)) if !ip.is_unspecified() => ip.to_string(),
            (None, _) => host_name().unwrap_or_else(|| "localhost".into()),
        };
        Endpoints {
            host,
            memcache: port("memcache"),
            thrift: port("thrift"),
            text: port("text"),
        }
    }

    /// The member node's data, in the Finagle/Twitter server-set JSON format:
    /// every protocol as a named additional endpoint, and as the service
    /// endpoint the first of memcache, Thrift and text that is on (Kestrel
    /// 2.4's choice, so its tooling reads ours alike). `None` if no protocol
    /// listens: there is nothing to announce.
    pub fn member_data(&self) -> Option<Vec<u8>> {
        let named = [
            ("memcache", self.memcache),
            ("thrift", self.thrift),
            ("text", self.text),
        ];
        let endpoint = |port: u16| json!({ "host": self.host, "port": port });
        let main = named.iter().find_map(|(_, port)| *port)?;
        let additional: serde_json::Map<String, serde_json::Value> = named
            .iter()
            .filter_map(|(name, port)| port.map(|p| (name.to_string(), endpoint(p))))
            .collect();
        let member = json!({
            "serviceEndpoint": endpoint(main),
            "additionalEndpoints": additional,
            "status": "ALIVE",
        });
        Some(member.to_string().into_bytes())
    }
}

/// This machine's host name, for a server listening on every address.
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it on success (and we stop at the first NUL regardless).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..len]).ok()?.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_follows_the_status() {
        let sets = |status| {
            Set::ALL
                .into_iter()
                .filter(|set| set.admits(status))
                .map(Set::name)
                .collect::<Vec<_>>()
        };
        assert_eq!(sets(ServerStatus::Up), ["read", "write"]);
        assert_eq!(sets(ServerStatus::ReadOnly), ["read"]);
        assert!(sets(ServerStatus::Quiescent).is_empty());
    }

    fn addrs(ip: &str) -> Vec<(&'static str, Option<SocketAddr>)> {
        let at = |port| Some(SocketAddr::new(ip.parse().unwrap(), port));
        vec![
            ("thrift", at(2229)),
            ("memcache", None),
            ("text", at(2222)),
            ("admin", at(2223)),
        ]
    }

    #[test]
    fn member_data_is_a_finagle_server_set_member() {
        let endpoints = Endpoints::new(None, &addrs("10.1.2.3"));
        let data = endpoints.member_data().unwrap();
        let member: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(
            member,
            json!({
                "serviceEndpoint": {"host": "10.1.2.3", "port": 2229},
                "additionalEndpoints": {
                    "thrift": {"host": "10.1.2.3", "port": 2229},
                    "text": {"host": "10.1.2.3", "port": 2222},
                },
                "status": "ALIVE",
            })
        );
        let with_memcache = Endpoints {
            memcache: Some(22133),
            ..endpoints
        };
        let member: serde_json::Value =
            serde_json::from_slice(&with_memcache.member_data().unwrap()).unwrap();
        assert_eq!(
            member["serviceEndpoint"]["port"], 22133,
            "memcache first, as Kestrel"
        );
        let none = Endpoints {
            host: "h".into(),
            memcache: None,
            thrift: None,
            text: None,
        };
        assert_eq!(none.member_data(), None);
    }

    #[test]
    fn the_advertised_host_is_the_setting_or_the_listen_address_or_the_host_name() {
        assert_eq!(
            Endpoints::new(Some("queue1.example"), &addrs("10.1.2.3")).host,
            "queue1.example"
        );
        assert_eq!(Endpoints::new(None, &addrs("127.0.0.1")).host, "127.0.0.1");
        let wildcard = Endpoints::new(None, &addrs("0.0.0.0")).host;
        assert_ne!(wildcard, "0.0.0.0");
        assert!(!wildcard.is_empty());
    }
}
