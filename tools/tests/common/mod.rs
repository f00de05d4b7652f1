//! Support shared by the `edgellm` binary's integration tests.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod serve;
