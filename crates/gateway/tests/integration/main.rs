//! The gateway client's tests: the breaker against its conformance table and a reference model, the client against the real simulator.
//! One test binary for the crate: each module below was its own binary before,
//! each compiling and linking the shared helpers again.

mod breaker_conformance;
mod breaker_model;
mod client;
