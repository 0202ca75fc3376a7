//! Integration tests: real `megatest` processes, real agent child processes, real signals,
//! real SQLite files. One test binary; one module per area.

mod support;

mod acceptance;
mod agent_clis;
mod api_contract;
mod architecture;
mod checkpoints;
mod config_errors;
mod control;
mod dashboard;
mod deploy;
mod ecs;
mod fork;
mod house_defects;
mod moto;
mod processes;
mod proxy;
mod quickstart;
mod recovery;
mod reports;
mod resume;
mod s3_sync;
mod sdk;
mod signals;
mod sim_fixture;
mod spawning;
mod swarm;
mod task_checks;
