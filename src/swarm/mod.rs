//! The swarm's pure cores: how consensus votes are decided ([`consensus`]), which follow-up
//! work a phase gets and when its gate opens ([`followup`]), the working memory ([`memory`]),
//! what a review asks
//! and how its verdict is read ([`review`]), which agents dynamic spawning adds, replaces and
//! retires ([`spawning`]), and how trust
//! scores follow an agent's measured record ([`trust`]). No I/O; the session feeds them what it
//! recorded.

pub mod consensus;
pub mod followup;
pub mod memory;
pub mod review;
pub mod spawning;
pub mod trust;
