//! The wire protocol: frames ([`frame`]), messages ([`msg`]) and the handshake's
//! authentication ([`auth`]).

pub mod auth;
pub mod frame;
pub mod msg;

pub use frame::{Frame, FrameDecoder, FrameError};
pub use msg::{ClientStatus, DurabilityLevel, Msg, RejectCode};
