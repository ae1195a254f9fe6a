//! The delivery client's DNS resolver: every address a webhook host resolves to passes the network
//! policy at connection time, so a name that later resolves somewhere private (DNS rebinding) is
//! refused too.

use std::net::SocketAddr;
use std::sync::Arc;

use moetune_domain::webhooks::network::NetworkPolicy;

/// A DNS resolver for the delivery client that drops addresses the policy refuses.
pub struct PolicyResolver(pub Arc<NetworkPolicy>);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = found.iter().copied().filter(|a| policy.permits(a.ip())).collect();
            if permitted.is_empty() {
                let message = format!("'{host}' resolves only to private or reserved addresses ({found:?})");
                return Err(message.into());
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

