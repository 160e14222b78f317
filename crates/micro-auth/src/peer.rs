//! Who is logging in, by address: the peer whose failed logins
//! [`MAX_FAILED_LOGINS_PER_PEER`](crate::throttle::MAX_FAILED_LOGINS_PER_PEER) limits.
//!
//! A direct gRPC caller is its connection's remote address. The HTTP gateway reaches the core
//! services over loopback, so there the connection says nothing; the gateway instead names its
//! client in [`CLIENT_IP_HEADER`], proven by [`CLIENT_KEY_HEADER`]: a random key made at boot and
//! held only in this process (the gateway and the auth service share one [`Auth`](crate::Auth)).
//! Without the key, any local process could name an address of its choosing and have that
//! address's logins refused; with a wrong or missing key the header is ignored. The gateway sends
//! the key only to this server's own gRPC listener, never to a registered service.

use std::net::{IpAddr, SocketAddr};

use tonic::metadata::{MetadataMap, MetadataValue};

use crate::secret::random_token;

/// Metadata key: the IP of the HTTP client a gateway call is made for.
pub const CLIENT_IP_HEADER: &str = "micro-client-ip";
/// Metadata key: the per-boot key proving [`CLIENT_IP_HEADER`] was set by this server's gateway.
pub const CLIENT_KEY_HEADER: &str = "micro-client-key";

/// The per-boot key that makes [`CLIENT_IP_HEADER`] believable.
pub(crate) struct PeerKey(String);

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKey(<redacted>)")
    }
}

impl PeerKey {
    pub(crate) fn generate() -> Self {
        Self(random_token(32))
    }

    /// Sets the two headers naming `client` on a call to this server's core services (or
    /// removes any that came from elsewhere when `client` is unknown).
    pub(crate) fn forward(&self, metadata: &mut MetadataMap, client: Option<IpAddr>) {
        metadata.remove(CLIENT_IP_HEADER);
        metadata.remove(CLIENT_KEY_HEADER);
        let Some(client) = client else { return };
        let ip = MetadataValue::try_from(client.to_string()).expect("an IP address is valid metadata");
        let key = MetadataValue::try_from(self.0.as_str()).expect("the key is URL-safe base64");
        metadata.insert(CLIENT_IP_HEADER, ip);
        metadata.insert(CLIENT_KEY_HEADER, key);
    }

    /// The peer of a call that came from `remote` with `metadata`: the forwarded client when the
    /// call came over loopback (or in process) with this boot's key, else the remote address.
    pub(crate) fn peer(&self, remote: Option<SocketAddr>, metadata: &MetadataMap) -> Option<IpAddr> {
        let local = remote.is_none_or(|remote| remote.ip().is_loopback());
        let forwarded = || {
            let key = metadata.get(CLIENT_KEY_HEADER)?.as_bytes();
            if !constant_time_eq(key, self.0.as_bytes()) {
                return None;
            }
            metadata.get(CLIENT_IP_HEADER)?.to_str().ok()?.parse::<IpAddr>().ok()
        };
        local.then(forwarded).flatten().or(remote.map(|remote| remote.ip()))
    }
}

/// Equality whose time depends on the lengths only, not on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_boots_key_over_loopback_names_the_client() {
        let key = PeerKey::generate();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "198.51.100.1:5000".parse().unwrap();

        let mut forwarded = MetadataMap::new();
        key.forward(&mut forwarded, Some(client));
        assert_eq!(key.peer(Some(loopback), &forwarded), Some(client));
        assert_eq!(key.peer(None, &forwarded), Some(client), "in process");
        // Not over loopback: the connection is the peer, whatever it claims.
        assert_eq!(key.peer(Some(remote), &forwarded), Some(remote.ip()));

        // Another boot's key, a missing key or a forged one: ignored.
        let mut forged = forwarded.clone();
        PeerKey::generate().forward(&mut forged, Some(client));
        assert_eq!(key.peer(Some(loopback), &forged), Some(loopback.ip()));
        forged.remove(CLIENT_KEY_HEADER);
        assert_eq!(key.peer(Some(loopback), &forged), Some(loopback.ip()));
        forged.insert(CLIENT_KEY_HEADER, MetadataValue::from_static("guess"));
        assert_eq!(key.peer(Some(loopback), &forged), Some(loopback.ip()));
        assert_eq!(key.peer(None, &MetadataMap::new()), None);

        // Forwarding for an unknown client removes what a caller put there.
        key.forward(&mut forwarded, None);
        assert!(forwarded.get(CLIENT_IP_HEADER).is_none() && forwarded.get(CLIENT_KEY_HEADER).is_none());
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(format!("{key:?}"), "PeerKey(<redacted>)");
    }
}
