//! podbay: the CRI server (`server`), the command line (`cli`, `app`), the daemon's
//! configuration (`config`), `podbay doctor` (`doctor`) and `podbay lab` (`lab`), whose namespace holder the test
//! harness builds its nodes on too.

mod app;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod lab;
pub mod play;
pub mod server;
pub mod stream;

pub use app::main;
