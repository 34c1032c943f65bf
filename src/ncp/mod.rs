//! The only code that knows NCP: URLs, JSON shapes, signing and the gateway's errors.
//!
//! - [`signer`]: signature v2, a pure function.
//! - [`client`]: builds, signs and sends requests through the rate limiter; classifies
//!   answers into [`ApiError`]s that say whether and when to retry.
//! - [`calls`]: calls per host and minute over the last hour, for the status page.
//! - [`media`] and [`vod`]: the endpoints and their wire types, decoded tolerantly.
//! - [`wire`]: lenient decoders for the documents' known inconsistencies.

pub mod calls;
pub mod client;
pub mod error;
pub mod media;
pub mod signer;
pub mod vod;
pub mod wire;

pub use calls::CallHistory;
pub use client::{Host, ListPage, NcpClient, SkippedRow, endpoints};
pub use error::{ApiError, Retry};
