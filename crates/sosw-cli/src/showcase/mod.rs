//! What shows sosw off rather than runs it: `sosw demo` (the whole of sosw on a few thousand tasks, with real
//! workers) and `sosw bench` (the lifecycle and the Scheduler, measured).

pub mod bench;
pub mod demo;
