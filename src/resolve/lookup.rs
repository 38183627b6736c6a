//! The resolver as the health checks of CNAME records see it (README "Health-checked records (fail-open)"): a
//! CNAME target's A and AAAA addresses, resolved as a client's query for
//! them would be — through the records (CNAME chains included), the cache
//! and upstream, sharing in-flight upstream queries — but without a client:
//! no ACL, no query metrics, no query log. A child module of `resolve`, so
//! that it reuses the chase and the single-flight fetch as they are.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::Resolver;
use crate::chase::{chase, resolve_target};
use crate::health::{TargetLookup, TargetResolver};
use crate::request::{Request, Transport};
use crate::wire::ClientQuery;

/// Who the records see asking: a client in no view, so that the records
/// without `clients` answer (README "Views (answers by client network)").
const NO_CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

impl TargetResolver for Resolver {
    fn addresses<'a>(&'a self, name: &'a Name) -> BoxFuture<'a, TargetLookup> {
        async move {
            let (a, aaaa) = futures_util::join!(
                self.lookup(name, RecordType::A),
                self.lookup(name, RecordType::AAAA)
            );
            match (a, aaaa) {
                (Some(mut a), Some(aaaa)) => {
                    a.extend(aaaa);
                    if a.is_empty() {
                        TargetLookup::NotFound
                    } else {
                        TargetLookup::Addresses(a)
                    }
                }
                // One family answered: its addresses are enough to probe.
                (Some(found), None) | (None, Some(found)) if !found.is_empty() => {
                    TargetLookup::Addresses(found)
                }
                _ => TargetLookup::Failed,
            }
        }
        .boxed()
    }
}

impl Resolver {
    /// The addresses of `name` for `query_type` (A or AAAA); empty for
    /// NXDOMAIN or NODATA, `None` if resolving failed.
    async fn lookup(&self, name: &Name, query_type: RecordType) -> Option<Vec<IpAddr>> {
        let snapshot = self.snapshot();
        let query = ClientQuery {
            id: 0,
            recursion_desired: true,
            checking_disabled: false,
            query: Query::query(name.clone(), query_type),
            edns: None,
        };
        let message = match snapshot.records.lookup(name, NO_CLIENT.ip()) {
            Some(record) => {
                let record = record.clone();
                let request = Request {
                    snapshot: snapshot.clone(),
                    query,
                    question: None,
                    client: NO_CLIENT,
                    transport: Transport::Tcp,
                    started: Instant::now(),
                };
                chase(&self.inflight, &request, &record).await
            }
            None => resolve_target(&self.inflight, &snapshot, name, query_type, false).await,
        }
        .ok()?;
        addresses(&message)
    }
}

fn addresses(message: &Message) -> Option<Vec<IpAddr>> {
    match message.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => Some(
            message
                .answers
                .iter()
                .filter_map(|record| match &record.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}
