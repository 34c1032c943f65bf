//! The integration tests: one binary. Helpers start the simulator in-process on
//! 127.0.0.1:0 and run the real `ncp-watchd` binary against it. Nothing leaves loopback.

mod helpers;

mod callbacks;
mod check_command;
mod cli;
mod client_against_sim;
mod cluster;
mod daemon;
mod decoding;
mod demo_command;
mod field;
mod once_command;
mod ops;
mod pg;
mod postgres;
mod properties;
mod receiver;
mod reliability;
mod simulator;
mod status_page;
mod webhook;
