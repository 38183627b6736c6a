//! Not a stable API: the door through which the integration tests in
//! `tests/`, the benches in `benches/` and the fuzz targets in `fuzz/` reach
//! inside the engine. Nothing else should use it.
//!
//! Each sub-module mirrors the crate-private module of the same name and
//! re-exports exactly the items those callers name, so that
//! `crate::wire::parse_query` is `accel_dns::internals::wire::parse_query`
//! outside. An item added here is one more thing `unreachable_pub` lets stay
//! `pub`; add only what a test, bench or fuzz target needs.

pub mod cache {
    pub use crate::cache::{AnswerCache, CacheKey, Lookup, STALE_TTL};
}

pub mod health {
    pub use crate::health::HealthRegistry;
}

pub mod inflight {
    pub use crate::inflight::{MAX_WAITERS, MAX_WAITERS_PER_NAME};
}

pub mod logging {
    pub use crate::logging::LogHandle;
}

pub mod loop_guard {
    pub use crate::loop_guard::LoopGuard;
}

pub mod metrics {
    pub use crate::metrics::{
        BUILD_INFO, CACHE_ENTRIES, ENDPOINT_UP, LAST_RELOAD_SUCCESS, LAST_RELOAD_TIMESTAMP,
        Metrics, Protocol, QUERIES_TOTAL, READY, RECORD_HITS, RECORD_UP, RELOADS_TOTAL,
        UNMAPPED_QUERIES, UPSTREAM_DURATION, UPSTREAM_ERRORS, UPSTREAM_LOOPS,
    };
}

pub mod records {
    pub use crate::records::RecordTable;
}

pub mod registries {
    pub use crate::registries::{BundleName, bundles};
}

pub mod reload {
    pub use crate::reload::Trigger;
}

pub mod request {
    pub use crate::request::Handled;
}

pub mod resolve {
    pub use crate::resolve::Resolver;
}

pub mod snapshot {
    pub use crate::snapshot::{Shared, Snapshot};
}

pub mod status {
    pub use crate::status::Status;
}

pub mod unmapped {
    pub use crate::unmapped::{UnmappedReport, Watch};
}

pub mod upstream {
    pub use crate::upstream::{MAX_IN_FLIGHT, UpstreamPool, UpstreamServer};

    pub mod pending {
        pub use crate::upstream::pending::{Completed, FlightId, PendingTable, TcpRetried};
    }

    pub mod pool {
        pub use crate::upstream::pool::{POOL_SIZE, ROTATE_AFTER_QUERIES};
    }
}

pub mod wire {
    pub use crate::wire::{
        CLASSIC_UDP_LIMIT, Check, ClientQuery, Inbound, LowerName, QuestionBytes, TtlRule,
        WireAnswer, address_record_a, encode_upstream_query, is_answer_to, packet_question,
        parse_query, question_bytes, rdata_verdict,
    };

    pub mod parsers {
        pub use crate::wire::parsers::{Verdict, parse_full, parse_lean};
    }
}
