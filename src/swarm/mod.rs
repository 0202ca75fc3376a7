//! The swarm's pure cores: how consensus votes are decided ([`consensus`]) and how trust
//! scores follow an agent's measured record ([`trust`]). No I/O; the session feeds them what it
//! recorded.

pub mod consensus;
pub mod trust;
