//! The swarm's pure cores: how consensus votes are decided ([`consensus`]), what a review asks
//! and how its verdict is read ([`review`]), and how trust
//! scores follow an agent's measured record ([`trust`]). No I/O; the session feeds them what it
//! recorded.

pub mod consensus;
pub mod review;
pub mod trust;
