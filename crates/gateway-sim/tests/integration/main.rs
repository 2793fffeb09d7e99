//! The simulator's tests: its API contract and its fault injection, over real HTTP.
//! One test binary for the crate: each module below was its own binary before,
//! each compiling and linking the shared helpers again.

mod common;
mod contract;
mod faults;
mod refunds;
