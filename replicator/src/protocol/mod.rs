//! The wire protocol: frames ([`frame`]), messages ([`msg`]) and the handshake's
//! authentication ([`auth`]).

pub mod auth;
