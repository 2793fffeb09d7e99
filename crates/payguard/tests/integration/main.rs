//! The payguard binary's tests: real processes, signals and several instances.
//! One test binary for the crate: each module below was its own binary before,
//! each compiling and linking the shared helpers again.

mod common;
mod full_run;
mod multi_instance;
