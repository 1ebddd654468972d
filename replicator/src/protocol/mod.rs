//! The wire protocol: frames ([`frame`]), messages ([`msg`]), the replication handshake's
//! authentication ([`auth`]) and the client port's ([`client_auth`]).

pub mod auth;
pub mod client_auth;
pub mod frame;
pub mod msg;

pub use frame::{Frame, FrameDecoder, FrameError};
pub use msg::{ClientStatus, DurabilityLevel, Msg, RejectCode};
