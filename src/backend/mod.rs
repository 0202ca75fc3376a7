//! Backends start and stop agent processes. [`local`] runs them as child processes of megatest,
//! each in its own process group. (The ECS backend of a later issue joins here.)

pub mod local;
